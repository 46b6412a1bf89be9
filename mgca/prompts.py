"""Prompt templates (TCL's 9 for evaluation, CLIP's 80 ImageNet ones for training noun prompts) and class files.

A class file (`mgca-eval --dataset folder --classes`, `mgca-segment --classes`, `mgca-export --vocab`) holds one
class a line; `name: prompt` gives a class its own prompt, embedded verbatim instead of the templates. Torch-free.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import MgcaError
from runtime.files import is_existing_file, read_text_file

from .config import ConfigError

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
    """A named template set; an unknown name is a one-line ConfigError that lists the sets (CLIs: exit 2)."""
    if name not in TEMPLATE_SETS:
        raise ConfigError(f"unknown prompt template set {name!r}; choose one of {', '.join(sorted(TEMPLATE_SETS))}")
    return TEMPLATE_SETS[name]


class VocabularyFileError(MgcaError, ValueError):
    """A class (vocabulary) file cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class ClassList:
    """Class names in label order and, per class, its own prompt (None: the template set's prompts)."""

    names: tuple[str, ...]
    prompts: tuple[str | None, ...]

    @property
    def has_prompts(self) -> bool:
        return any(p is not None for p in self.prompts)


_UNESCAPED_COLON = re.compile(r"(?<!\\)(:)")  # the first colon not written as `\:` ends the name


def parse_class_entry(entry: str, where: str, error: type[Exception]) -> tuple[str, str | None]:
    r"""(name, prompt or None) of one class entry, a class file's line or an inline `--classes` item alike:
    `name` or `name: prompt`, a colon of the name itself written `\:` (e.g. `ratio 16\:9`)."""
    parts = _UNESCAPED_COLON.split(entry.strip(), maxsplit=1)  # [entry] or [name, ":", prompt]
    name = parts[0].strip().replace("\\:", ":")
    colon, prompt = len(parts) > 1, parts[-1].strip() if len(parts) > 1 else ""
    if not name or (colon and not prompt):
        raise error(f"{where} ({entry.strip()!r}) must be 'name' or 'name: prompt' (write a colon of the name as \\:)")
    return name, prompt or None


def read_class_file(path: str | Path, what: str = "class file") -> ClassList:
    r"""One class a line, `name` or `name: prompt` (a colon in the name written `\:`); blank lines and '#' comments
    skipped; names must be distinct.
    `what` names the file in errors ("vocabulary file" for mgca-export --vocab)."""
    if not is_existing_file(str(path)):
        raise VocabularyFileError(f"{what} {path} does not exist; give a text file with one class name per line")
    path = Path(path).expanduser()
    lines = read_text_file(path, what, VocabularyFileError).splitlines()  # a byte-order mark is no part of a name
    names, prompts = [], []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, prompt = parse_class_entry(line, f"{what} {path} line {number}", VocabularyFileError)
        names.append(name)
        prompts.append(prompt)
    if not names:
        raise VocabularyFileError(f"{what} {path} holds no class names; write one class name per line")
    seen: set[str] = set()
    duplicates = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if duplicates:
        raise VocabularyFileError(f"{what} {path} repeats class name(s) {duplicates[:5]}; each class must appear "
                                  "once")
    return ClassList(tuple(names), tuple(prompts))


def class_prompts(names, templates, prompts=None) -> list[list[str]]:
    """Per class, the texts to embed: its own prompt (verbatim, once) or every template filled with its name."""
    prompts = prompts or [None] * len(names)
    return [[prompt] if prompt else [template.format(name) for template in templates]
            for name, prompt in zip(names, prompts, strict=True)]
