"""Prompt templates: TCL's 9 for evaluation, CLIP's 80 ImageNet ones for training noun prompts."""
from __future__ import annotations

TCL_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of a {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
    "a photo of many {}.",
    "a photo of {}s.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "tcl": TCL_TEMPLATES,
    "single": ("a photo of a {}.",),
    "plain": ("a {}",),  # the synthetic captions' own wording ("a red circle"): the tiny CLIP knows no other
    "none": ("{}",),
}


DEFAULT_TEMPLATE_SET = "tcl"  # the evaluation prompts of the paper's comparisons (TCL's 9)

# How a class's template embeddings become one vector. "raw": mean of the unnormalised text embeddings, then
# L2-normalised (TCL's `build_text_embedding`); "normalized": each L2-normalised first, then the mean, then
# L2-normalised again (CLIP's zero-shot recipe, `zeroshot_classifier` in its ImageNet notebook).
TEMPLATE_AVERAGES = ("raw", "normalized")
TEMPLATE_AVERAGE = {"tcl": "raw"}  # TCL's set is averaged as TCL does; every other set (and file) as CLIP does


def template_average(name: str | None) -> str:
    """The averaging of a template set by name ("raw" for TCL's, else "normalized"; files and lists too)."""
    return TEMPLATE_AVERAGE.get(name or "", "normalized")


def get_templates(name: str) -> tuple[str, ...]:
    """A named template set; an unknown name says which exist."""
    if name not in TEMPLATE_SETS:
        raise ValueError(f"unknown prompt template set {name!r}; choose one of {sorted(TEMPLATE_SETS)}")
    return TEMPLATE_SETS[name]
