"""What goes into a text cache: a vocabulary file, prompt templates and the CLIP text tower's class embeddings.

The file itself (`text_cache.npz`) is written and read by `runtime.text_cache`, one module for both sides.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mgca.prompts import VocabularyFileError, read_class_file
from runtime.text_cache import write_text_cache


def read_vocab(path: str | Path) -> list[str]:
    """Class names of a class file (`mgca.prompts.read_class_file`; `name: prompt` lines give the name)."""
    return list(read_class_file(path, "vocabulary file").names)


def text_embeddings(backbone, class_names: Sequence[str], templates: Sequence[str],
                    average: str = "normalized", prompts: Sequence[str | None] | None = None) -> np.ndarray:
    """K x C float32 class embeddings from the CLIP text tower (contract, "Text embeddings"); `average` as
    `mgca.prompts.template_average` gives it for the template set ("raw" for TCL's, else "normalized");
    `prompts[k]`, when given, is class k's own text, embedded instead of the templates."""
    embeddings = backbone.class_embeddings(list(class_names), list(templates), average=average, prompts=prompts)
    return embeddings.float().cpu().numpy().astype(np.float32)


def resolve_templates(value: str) -> tuple[str, tuple[str, ...]]:
    """A named template set (mgca.prompts: tcl, single, none) or a text file of templates, one per
    line, each with one '{}' for the class name -> (label, templates)."""
    from mgca.prompts import TEMPLATE_SETS

    if value in TEMPLATE_SETS:
        return value, tuple(TEMPLATE_SETS[value])
    path = Path(value).expanduser()
    if not path.is_file():
        raise VocabularyFileError(f"--templates {value!r} is neither a template set "
                                  f"({', '.join(sorted(TEMPLATE_SETS))}) nor a file")
    from runtime.files import read_text_file

    lines = read_text_file(path, "template file", VocabularyFileError).splitlines()
    templates = tuple(line.strip() for line in lines if line.strip())
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise VocabularyFileError(f"template file {path} must hold one template per line, each with exactly one '{{}}' "
                                  f"(bad: {bad[:2]})")
    return str(path), templates


def build_text_cache(model, class_names: Sequence[str], templates: str | Sequence[str], path: str | Path,
                     prompts: Sequence[str | None] | None = None) -> Path:
    """Embed `class_names` with `model`'s CLIP text tower and write the cache to `path`.

    `templates` is a template-set name / template file (see `resolve_templates`) or a list of templates;
    `prompts[k]`, when given, is class k's own text (a class file's `name: prompt`)."""
    from mgca.prompts import template_average

    if isinstance(templates, str):
        label, template_list = resolve_templates(templates)
    else:
        label, template_list = None, tuple(templates)
    backbone = model.backbone
    average = template_average(label)
    embeddings = text_embeddings(backbone, class_names, template_list, average, prompts)
    return write_text_cache(path, embeddings, class_names, template_list, backbone.identity.to_dict(), label, average)


__all__ = ["VocabularyFileError", "read_vocab", "text_embeddings", "build_text_cache", "resolve_templates"]
