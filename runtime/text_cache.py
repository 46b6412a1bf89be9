"""`text_cache.npz`, a vocabulary's class embeddings (docs/inference-contract.md, "Text embeddings"): written
and read here, with numpy only, so the runtime needs no text encoder.

* `embeddings`  float32 K x C, each row L2-normalised (templates averaged as `meta.template_average`, then
  re-normalised);
* `class_names` unicode K;
* `templates`   unicode T (the filled-in prompt templates, e.g. TCL's 9);
* `meta`        0-d unicode, a JSON object: `format` ("mgca-text-cache/1"), `arch`, `embed_dim`,
  `text_sha256` (hash of the CLIP text tower that made the embeddings; a reader compares it with
  the bundle's `backbone.text_sha256` and refuses a mismatch), plus `visual_sha256`, `source`,
  `dense_mode`, `template_set`, `template_average` ("raw": TCL's mean of raw embeddings for the tcl set,
  "normalized": CLIP's mean of normalised ones otherwise), `num_classes`.

`export.text_cache` computes the embeddings with the CLIP text tower and calls `write_text_cache`.
"""
from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .contract import TEXT_CACHE_FORMAT
from .errors import TextCacheError, VocabularyError, one_line
from .files import atomic_path

MAKE_CACHE_HINT = ("make one with `mgca-export text --checkpoint CKPT --vocab FILE --out CACHE.npz` and pass it as "
                   "Segmenter(bundle, text_cache=CACHE.npz)")


@dataclass(frozen=True)
class TextCache:
    """Class embeddings (K x C, L2-normalised float32) and their names; immutable once loaded."""

    embeddings: np.ndarray
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    meta: dict[str, Any]
    path: Path | None = None

    def __post_init__(self) -> None:
        self.embeddings.setflags(write=False)
        object.__setattr__(self, "_index", {name: i for i, name in enumerate(self.class_names)})

    def __len__(self) -> int:
        return len(self.class_names)

    def select(self, classes: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
        """(K' x C embeddings, names) for `classes` in the given order; None means the whole cache."""
        if classes is None:
            return self.embeddings, self.class_names
        if isinstance(classes, str):
            classes = [classes]
        names = tuple(str(c) for c in classes)
        if not names:
            raise VocabularyError("classes is empty; pass at least one class name or None for the whole vocabulary")
        check_class_names(names, "classes")
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        missing = [n for n in names if n not in index]
        if missing:
            where = f"text cache {self.path}" if self.path else "the text cache"
            shown = ", ".join(repr(n) for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise VocabularyError(f"class name(s) {shown} not in {where} ({len(self)} classes)", MAKE_CACHE_HINT)
        rows = np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))
        return self.embeddings[rows], names


def load_text_cache(path: str | Path, expected_text_sha256: str | None = None, expected_embed_dim: int | None = None,
                    bundle_label: str = "the bundle", expected_arch: str | None = None,
                    expected_context_length: int | None = None) -> TextCache:
    """Read a cache with numpy only (allow_pickle=False); refuse one made for another text tower."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TextCacheError(f"text cache {path} does not exist; {MAKE_CACHE_HINT}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("embeddings", "class_names", "meta") if k not in data.files]
            if missing:
                raise TextCacheError(f"text cache {path} lacks {missing}; it was not written by mgca-export; "
                                     f"{MAKE_CACHE_HINT}")
            embeddings = np.ascontiguousarray(data["embeddings"], dtype=np.float32)
            names = tuple(str(n) for n in data["class_names"].tolist())
            templates = tuple(str(t) for t in data["templates"].tolist()) if "templates" in data.files else ()
            meta_raw = data["meta"]
    except TextCacheError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise TextCacheError(f"text cache {path} is unreadable ({one_line(err)}); {MAKE_CACHE_HINT}") from None
    try:
        meta = json.loads(str(meta_raw.item() if isinstance(meta_raw, np.ndarray) else meta_raw))
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except (ValueError, TypeError) as err:
        raise TextCacheError(f"text cache {path}: 'meta' is not a JSON object ({one_line(err)}); "
                             f"{MAKE_CACHE_HINT}") from None
    if meta.get("format") != TEXT_CACHE_FORMAT:
        raise TextCacheError(f"text cache {path} has format {meta.get('format')!r}, expected {TEXT_CACHE_FORMAT!r}; "
                             f"{MAKE_CACHE_HINT}")
    return check_vocabulary(TextCache(embeddings, names, templates, meta, path), expected_text_sha256,
                            expected_embed_dim, bundle_label, expected_arch, expected_context_length)


def check_class_names(names: Sequence[str], what: str) -> None:
    """A one-line VocabularyError when `names` is a plain string (it would split into one-letter classes), a name
    is empty, or a name repeats: label i is names[i], so a repeated name would have one label that never appears."""
    if isinstance(names, (str, bytes)):
        raise VocabularyError(f"{what} must be a list of names, got the string {names!r}; pass [{names!r}] for one "
                              "class")
    empty = [index for index, name in enumerate(names) if not str(name).strip()]
    if empty:
        raise VocabularyError(f"{what}: name {empty[0]} is empty; give every class a name")
    seen: set[str] = set()
    repeated = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    if repeated:
        shown = ", ".join(repr(n) for n in dict.fromkeys(repeated))
        raise VocabularyError(f"{what} repeat {shown}; give each class once (label i is the i-th class)")


def check_distinct_embeddings(embeddings: np.ndarray, names: Sequence[str], where: str = "the vocabulary") -> None:
    """A one-line VocabularyError when two classes have the same embedding: they could never be told apart. CLIP
    reads the first 77 tokens of a prompt, so two long names that differ only after that come out identical."""
    first: dict[bytes, str] = {}
    for name, row in zip(names, np.ascontiguousarray(embeddings, dtype=np.float32), strict=True):
        other = first.setdefault(row.tobytes(), name)
        if other != name:
            raise VocabularyError(f"{where}: classes {_shown(other)} and {_shown(name)} have identical text embeddings "
                                  "(CLIP reads only the first 77 tokens of a prompt); make the names differ early, "
                                  "or shorten them")


def _shown(name: str, most: int = 40) -> str:
    return repr(name if len(name) <= most else name[:most] + "...")


def check_vocabulary(cache: TextCache, expected_text_sha256: str | None = None, expected_embed_dim: int | None = None,
                     bundle_label: str = "the bundle", expected_arch: str | None = None,
                     expected_context_length: int | None = None) -> TextCache:
    """The one check of a vocabulary, read from a file or given in memory (a TextCache or names + embeddings):
    K x C finite, non-zero embeddings, K distinct names, and the CLIP text tower it was made with (its
    text_sha256) equal to the bundle's. Only a vocabulary built in memory from bare arrays (`make_text_cache`,
    no file and no text_sha256) is taken on the caller's word for the backbone. Returns it L2-normalised."""
    where = f"text cache {cache.path}" if cache.path else "the vocabulary"
    embeddings, names = cache.embeddings, cache.class_names
    if embeddings.ndim != 2 or embeddings.shape[0] != len(names) or embeddings.shape[0] == 0:
        raise TextCacheError(f"{where}: embeddings {embeddings.shape} do not match {len(names)} class names; "
                             f"{MAKE_CACHE_HINT}")
    try:
        check_class_names(names, f"{where}: class names")
    except VocabularyError as err:
        raise TextCacheError(f"{err}; rebuild it from a vocabulary of distinct, non-empty names") from None
    if not np.isfinite(embeddings).all():
        raise TextCacheError(f"{where} holds non-finite embeddings; rebuild it")
    norms = np.linalg.norm(embeddings.astype(np.float64), axis=1, keepdims=True)
    if (norms == 0).any():
        raise TextCacheError(f"{where}: the embedding of {names[int(np.argmin(norms[:, 0]))]!r} is zero; rebuild it")
    check_distinct_embeddings(embeddings, names, where)
    rebuild = "rebuild it with `mgca-export text --checkpoint CKPT --vocab FILE`"
    made_with = cache.meta.get("text_sha256")
    vouched = cache.path is None and made_with is None  # bare arrays from the caller: nothing to compare
    if expected_text_sha256 is not None and not vouched and made_with != expected_text_sha256:
        made_for = cache.meta.get("context_length")
        if made_for is not None and expected_context_length is not None and made_for != expected_context_length:
            raise TextCacheError(
                f"{where} was made by a text tower that reads {made_for} tokens but {bundle_label}'s reads "
                f"{expected_context_length} (another CLIP: text_sha256 {str(made_with)[:12]} vs "
                f"{expected_text_sha256[:12]}); {rebuild}")
        raise TextCacheError(
            f"{where} was made for backbone {cache.meta.get('arch')} (text_sha256 {str(made_with)[:12]}) "
            f"but {bundle_label} uses {expected_arch or 'another backbone'} (text_sha256 "
            f"{expected_text_sha256[:12]}); {rebuild}")
    if expected_embed_dim is not None and embeddings.shape[1] != expected_embed_dim:
        raise TextCacheError(f"{where} has {embeddings.shape[1]}-dim embeddings but {bundle_label} produces "
                             f"{expected_embed_dim}-dim ones; {rebuild}")
    if np.abs(norms - 1.0).max() <= 1e-3:  # the contract says normalised; fix one that is not, leave bits alone
        return cache
    normalised = np.ascontiguousarray(embeddings / norms, dtype=np.float32)
    return TextCache(normalised, names, cache.templates, cache.meta, cache.path)


def make_text_cache(embeddings: np.ndarray, class_names: Sequence[str]) -> TextCache:
    """An in-memory cache from given embeddings, checked by `check_vocabulary` (no backbone hash to compare:
    the caller vouches for which CLIP made them)."""
    emb = np.array(embeddings, dtype=np.float32)  # a copy: TextCache freezes its array
    if isinstance(class_names, (str, bytes)):
        check_class_names(class_names, "class names")  # a plain string is refused, not split into letters
    names = tuple(str(c) for c in class_names)
    return check_vocabulary(TextCache(emb, names, (), {"format": TEXT_CACHE_FORMAT}))


def cache_meta(identity: dict[str, Any], embed_dim: int, num_classes: int, template_set: str | None,
               template_average: str | None = None) -> dict[str, Any]:
    return {
        "format": TEXT_CACHE_FORMAT,
        "arch": identity.get("arch"),
        "embed_dim": int(embed_dim),
        "text_sha256": identity.get("text_sha256"),
        "visual_sha256": identity.get("visual_sha256"),
        "source": identity.get("source"),
        "dense_mode": identity.get("dense_mode"),
        "context_length": identity.get("context_length"),
        "template_set": template_set,
        "template_average": template_average,
        "num_classes": int(num_classes),
    }


def write_text_cache(path: str | Path, embeddings: np.ndarray, class_names: Sequence[str], templates: Sequence[str],
                     identity: dict[str, Any], template_set: str | None = None,
                     template_average: str | None = None) -> Path:
    """Write the cache atomically (temporary file + rename); `identity` is the backbone's (its text_sha256 is
    what a reader checks). Returns the path."""
    emb = np.asarray(embeddings, dtype=np.float32)
    names = [str(n) for n in class_names]
    if emb.ndim != 2 or emb.shape[0] != len(names) or not names:
        raise ValueError(f"embeddings {emb.shape} do not match {len(names)} class names")
    if not np.isfinite(emb).all():
        raise ValueError("class embeddings hold non-finite values")
    if not identity.get("text_sha256"):
        raise ValueError("the backbone identity has no text_sha256; "
                         "a cache without it cannot be checked by the runtime")
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    check_distinct_embeddings(emb, names)  # refused when written, not when a reader meets it later
    meta = cache_meta(identity, emb.shape[1], len(names), template_set, template_average)
    path = Path(path).expanduser()
    if path.suffix != ".npz":
        raise ValueError(f"text cache path {path} must end in .npz")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a file object: numpy appends no ".npz"
        np.savez(handle, embeddings=np.ascontiguousarray(emb),
                 class_names=np.array(names, dtype=np.str_),
                 templates=np.array([str(t) for t in templates], dtype=np.str_),
                 meta=np.array(json.dumps(meta, sort_keys=True), dtype=np.str_))
    return path


__all__ = ["TextCache", "load_text_cache", "make_text_cache", "check_vocabulary", "check_class_names",
           "check_distinct_embeddings",
           "write_text_cache", "cache_meta", "MAKE_CACHE_HINT"]
