"""Text-embedding cache writer: a vocabulary's class embeddings, so the runtime needs no text encoder.

File format (docs/inference-contract.md, `text_cache.npz`; read by `runtime.text_cache` with
`numpy.load(allow_pickle=False)`):

* `embeddings`  float32 K x C, each row L2-normalised (templates averaged, then re-normalised);
* `class_names` unicode K;
* `templates`   unicode T (the filled-in prompt templates, e.g. TCL's 9);
* `meta`        0-d unicode, a JSON object: `format` ("mgca-text-cache/1"), `arch`, `embed_dim`,
  `text_sha256` (hash of the CLIP text tower that made the embeddings; a reader compares it with
  the bundle's `backbone.text_sha256` and refuses a mismatch), plus `visual_sha256`, `source`,
  `dense_mode`, `template_set`, `num_classes`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._files import atomic_path

TEXT_CACHE_FORMAT = "mgca-text-cache/1"


class VocabularyFileError(ValueError):
    """The vocabulary file cannot be used; the message says what to fix."""


def read_vocab(path: str | Path) -> list[str]:
    """Class names from a text file: one per line; blank lines and lines starting with '#' are skipped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VocabularyFileError(f"vocabulary file {path} does not exist; give a text file with one class name per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise VocabularyFileError(f"vocabulary file {path} is not readable UTF-8 text ({type(err).__name__})") from None
    names = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not names:
        raise VocabularyFileError(f"vocabulary file {path} holds no class names; write one class name per line")
    seen: set[str] = set()
    duplicates = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    if duplicates:
        raise VocabularyFileError(f"vocabulary file {path} repeats class name(s) {sorted(set(duplicates))[:5]}; each class must appear once")
    return names


def text_embeddings(backbone, class_names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """K x C float32 class embeddings from the CLIP text tower (contract, "Text embeddings")."""
    return backbone.class_embeddings(list(class_names), list(templates)).float().cpu().numpy().astype(np.float32)


def cache_meta(identity: dict[str, Any], embed_dim: int, num_classes: int, template_set: str | None) -> dict[str, Any]:
    return {
        "format": TEXT_CACHE_FORMAT,
        "arch": identity.get("arch"),
        "embed_dim": int(embed_dim),
        "text_sha256": identity.get("text_sha256"),
        "visual_sha256": identity.get("visual_sha256"),
        "source": identity.get("source"),
        "dense_mode": identity.get("dense_mode"),
        "template_set": template_set,
        "num_classes": int(num_classes),
    }


def write_text_cache(path: str | Path, embeddings: np.ndarray, class_names: Sequence[str], templates: Sequence[str],
                     identity: dict[str, Any], template_set: str | None = None) -> Path:
    """Write the cache atomically (temporary file + rename); returns the path."""
    emb = np.asarray(embeddings, dtype=np.float32)
    names = [str(n) for n in class_names]
    if emb.ndim != 2 or emb.shape[0] != len(names) or not names:
        raise ValueError(f"embeddings {emb.shape} do not match {len(names)} class names")
    if not np.isfinite(emb).all():
        raise ValueError("class embeddings hold non-finite values")
    if not identity.get("text_sha256"):
        raise ValueError("the backbone identity has no text_sha256; a cache without it cannot be checked by the runtime")
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    meta = cache_meta(identity, emb.shape[1], len(names), template_set)
    path = Path(path).expanduser()
    if path.suffix != ".npz":
        raise ValueError(f"text cache path {path} must end in .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a file object: numpy appends no ".npz"
        np.savez(handle, embeddings=np.ascontiguousarray(emb),
                 class_names=np.array(names, dtype=np.str_),
                 templates=np.array([str(t) for t in templates], dtype=np.str_),
                 meta=np.array(json.dumps(meta, sort_keys=True), dtype=np.str_))
    return path


def resolve_templates(value: str) -> tuple[str, tuple[str, ...]]:
    """A named template set (mgca.prompts: tcl, single, none) or a text file of templates, one per
    line, each with one '{}' for the class name -> (label, templates)."""
    from mgca.prompts import TEMPLATE_SETS

    if value in TEMPLATE_SETS:
        return value, tuple(TEMPLATE_SETS[value])
    path = Path(value).expanduser()
    if not path.is_file():
        raise VocabularyFileError(f"--templates {value!r} is neither a template set ({', '.join(sorted(TEMPLATE_SETS))}) nor a file")
    templates = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise VocabularyFileError(f"template file {path} must hold one template per line, each with exactly one '{{}}' (bad: {bad[:2]})")
    return str(path), templates


def build_text_cache(model, class_names: Sequence[str], templates: str | Sequence[str], path: str | Path) -> Path:
    """Embed `class_names` with `model`'s CLIP text tower and write the cache to `path`.

    `templates` is a template-set name / template file (see `resolve_templates`) or a list of templates."""
    if isinstance(templates, str):
        label, template_list = resolve_templates(templates)
    else:
        label, template_list = None, tuple(templates)
    backbone = model.backbone
    embeddings = text_embeddings(backbone, class_names, template_list)
    return write_text_cache(path, embeddings, class_names, template_list, backbone.identity.to_dict(), label)


__all__ = ["TEXT_CACHE_FORMAT", "VocabularyFileError", "read_vocab", "text_embeddings", "write_text_cache",
           "build_text_cache", "cache_meta", "resolve_templates"]
