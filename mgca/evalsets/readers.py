"""Readers for the benchmark folders: find the layout under --root, list (image, label) pairs, load them.

Labels come back as int64 (H, W) maps in the dataset's class indices with `ignore_index` (255)
for void, after MMSegmentation's `reduce_zero_label` where the dataset uses it.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from runtime.errors import MgcaError, one_line
from runtime.image_files import DECODE_ERRORS, read_rgb

from .coco import coco_object_label
from .specs import _ALIASES, DATASETS, DatasetSpec, Layout, Part, voc_palette


class DatasetError(MgcaError, ValueError):
    """A dataset name, root or file is wrong; the message names the missing thing and the expected layout."""


@dataclass(frozen=True)
class Item:
    """One evaluation image: where its pixels and its labels are."""

    name: str
    image_path: Path
    label_path: Path | None = None  # None for COCO-json items, rasterised from `annotations`
    annotations: tuple[dict[str, Any], ...] = ()


@dataclass
class Sample:
    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    label: np.ndarray  # (H, W) int64, ignore_index for void


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for a dataset name or alias."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[key]


def _required_paths(base: Path, layout: Layout) -> list[Path]:
    paths = []
    for part in layout.parts:
        paths += [base / part.image_dir, base / part.label_dir]
        if part.split_file:
            paths.append(base / part.split_file)
    return paths


def resolve_layout(spec: DatasetSpec, root: Path, layout: str = "auto") -> tuple[Layout, Path]:
    """(layout, base folder) of the first layout whose folders all exist under root (or a nested root)."""
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a folder; pass --root pointing at the {spec.name} data")
    layouts = [l for l in spec.layouts if layout in ("auto", l.name)]
    if not layouts:
        raise DatasetError(f"dataset {spec.name} has no layout {layout!r}; choose auto or one of "
                           f"{[l.name for l in spec.layouts]}")
    first_missing = None
    for candidate in layouts:
        for base in [root] + [root / nested for nested in candidate.nested_roots]:
            missing = next((p for p in _required_paths(base, candidate) if not p.exists()), None)
            if missing is None:
                return candidate, base
            first_missing = first_missing or missing
    expected = " | ".join(l.describe() + (f" (or below {', '.join(l.nested_roots)})" if l.nested_roots else "")
                          for l in layouts)
    raise DatasetError(f"dataset {spec.name}: {first_missing} does not exist under --root {root}; expected {expected}")


def _file_items(base: Path, part: Part) -> list[Item]:
    image_dir, label_dir = base / part.image_dir, base / part.label_dir
    if part.split_file:
        ids = [line.strip() for line in (base / part.split_file).read_text().splitlines() if line.strip()]
    else:
        files = image_dir.rglob("*") if part.recursive else image_dir.iterdir()
        ids = sorted(p.relative_to(image_dir).as_posix()[:-len(part.image_suffix)] for p in files
                     if p.name.endswith(part.image_suffix) and p.is_file())
    items = [Item(i, image_dir / f"{i}{part.image_suffix}", label_dir / f"{i}{part.label_suffix}") for i in ids]
    for item in items:
        for path in (item.image_path, item.label_path):
            if not path.is_file():
                raise DatasetError(f"{path} does not exist (listed by {part.split_file or part.image_dir}); the "
                                   "dataset is incomplete")
    return items


def _coco_items(base: Path, part: Part) -> list[Item]:
    path = base / part.label_dir
    try:
        data = json.loads(path.read_text())
        categories = sorted(int(c["id"]) for c in data["categories"])
        images, annotations = data["images"], data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{path} is not a COCO instances json ({type(err).__name__}: {err})") from None
    label_of = {cat: index + 1 for index, cat in enumerate(categories)}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in annotations:  # category ids become COCO-Object labels 1..80 here, once
        ann = dict(ann, category_id=label_of[int(ann["category_id"])])
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    items = []
    for image in sorted(images, key=lambda im: im["file_name"]):
        item = Item(Path(image["file_name"]).stem, base / part.image_dir / image["file_name"], None,
                    tuple(by_image.get(int(image["id"]), [])))
        if not item.image_path.is_file():
            raise DatasetError(f"{item.image_path} does not exist (listed in {path}); the dataset is incomplete")
        items.append(item)
    return items


def _palette_table(palette: str | tuple[tuple[int, int, int, int], ...], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(colours N x 3, labels N) of a spec's palette: VOC's 21 classes + void, or a user's palette file."""
    if palette == "voc":
        labels = np.asarray(list(range(21)) + [255], dtype=np.int64)
        return np.asarray(voc_palette(), dtype=np.int64)[labels], labels
    if isinstance(palette, tuple):
        table = np.asarray(palette, dtype=np.int64).reshape(-1, 4)
        return table[:, :3], table[:, 3]
    raise DatasetError(f"{path} is an RGB image but this dataset's labels must be class-index PNGs"
                       + ("; pass --palette FILE (one 'name r g b' a line) for colour masks"
                          if palette is None else ""))


def _decode_rgb_label(rgb: np.ndarray, palette, path: Path, ignore_index: int = 255) -> np.ndarray:
    """Map palette colours back to labels. VOC: colours outside its palette become void; a user's palette: they are
    an error naming the file and the colours."""
    colours, labels = _palette_table(palette, path)
    keys = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    order = np.argsort(keys)
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(keys[order], packed), 0, len(keys) - 1)
    found = keys[order][pos] == packed
    if palette != "voc" and not found.all():
        unknown = np.unique(packed[~found])[:3]
        shown = ", ".join(f"({v >> 16} {(v >> 8) & 255} {v & 255})" for v in unknown.tolist())
        raise DatasetError(f"mask {path} has {int((~found).sum())} pixels of colours not in the palette file, e.g. "
                           f"{shown}; add them to the palette (name r g b, or 'ignore r g b')")
    return np.where(found, labels[order][pos], ignore_index)


def read_label(path: Path, spec: DatasetSpec) -> np.ndarray:
    """(H, W) int64 label map of a PNG: class indices (palette/gray), or RGB colours decoded by the spec's palette."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            array = np.asarray(image.convert("RGB") if mode in ("RGB", "RGBA") else image)
    except DECODE_ERRORS as err:
        raise DatasetError(f"label file {path} cannot be read ({type(err).__name__}: {one_line(err)}); the file is "
                           "damaged or truncated: replace it") from None
    if mode in ("RGB", "RGBA"):
        label = _decode_rgb_label(array, spec.rgb_palette, path, spec.ignore_index)
    else:
        label = _class_ids(array, mode, path)
    leading = 1 if spec.reduce_zero_label else spec.ignored_leading_labels
    label = reduce_leading_labels(label, leading, spec.ignore_index) if leading else label
    _check_label_ids(label, spec, path)
    return label


def _class_ids(array: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """A grey or palette mask's values as int64 class ids; other channel counts and non-integer values are a
    one-line DatasetError (a float mask's 1.5 is no class, and truncating it would be a silent guess)."""
    if array.ndim != 2:
        raise DatasetError(f"mask {path} has {array.shape[2]} channels (mode {mode}, e.g. grey + alpha); a mask is one "
                           "channel of class ids (grey or palette PNG): save it without the alpha channel")
    if array.dtype.kind == "f":
        fractional = ~np.isfinite(array) | (array != np.round(array))
        if fractional.any():
            raise DatasetError(f"mask {path} holds {int(fractional.sum())} non-integer values (e.g. "
                               f"{array[fractional][0]:g}); labels are class ids: save it as an 8- or 16-bit "
                               "integer image")
    return array.astype(np.int64)


def _check_label_ids(label: np.ndarray, spec: DatasetSpec, path: Path) -> None:
    """Every label is a class index or the ignore index: else one line naming the file and the ids."""
    bad = (label != spec.ignore_index) & ((label < 0) | (label >= spec.num_classes))
    if bad.any():
        leading = 1 if spec.reduce_zero_label else spec.ignored_leading_labels
        ids = np.unique(label[bad] + leading)[:5].tolist()
        shifted = f" after dropping ids 0..{leading - 1}" if leading else ""
        raise DatasetError(f"mask {path} holds label id(s) {ids} outside the {spec.num_classes} classes (ids "
                           f"0..{spec.num_classes - 1}{shifted}) that are not the ignore index {spec.ignore_index}; "
                           "fix the mask, list every class in the class file, or set --ignore-index")


def reduce_leading_labels(label: np.ndarray, count: int = 1, ignore_index: int = 255) -> np.ndarray:
    """Labels 0..count-1 -> ignore, every class k -> k - count. count=1 is MMSegmentation's reduce_zero_label
    (0 = other/background); the synthetic objects protocol drops its backdrops the same way."""
    out = label - count
    out[(label < count) | (label == ignore_index)] = ignore_index
    return out


def read_image(path: Path) -> np.ndarray:
    """RGB pixels, upright by the file's EXIF orientation (runtime.image_files); a bad file is named."""
    return read_rgb(path)


class SegmentationDataset:
    """A benchmark's evaluation images; indexing loads one `Sample`."""

    def __init__(self, spec: DatasetSpec, root: Path, layout: Layout, items: list[Item]):
        self.spec, self.root, self.layout, self.items = spec, root, layout, items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> Sample:
        item = self.items[index]
        image = read_image(item.image_path)
        if item.label_path is None:
            label = coco_object_label(image.shape[0], image.shape[1], item.annotations).astype(np.int64)
        else:
            label = read_label(item.label_path, self.spec)
        if label.shape != image.shape[:2]:
            raise DatasetError(f"label {item.label_path or item.name} is {label.shape[1]}x{label.shape[0]} but image "
                               f"{item.image_path} is {image.shape[1]}x{image.shape[0]} (upright, by its EXIF "
                               "orientation)")
        return Sample(item.name, image, label)


def open_dataset(name: str, root: str | Path, layout: str = "auto") -> SegmentationDataset:
    """The dataset `name` under `root` ("auto" tries the mmseg layout, then the sample layouts)."""
    spec = get_spec(name)
    chosen, base = resolve_layout(spec, Path(root).expanduser(), layout)
    items = []
    for part in chosen.parts:
        items += _coco_items(base, part) if part.kind == "coco_json" else _file_items(base, part)
    if not items:
        raise DatasetError(f"dataset {spec.name}: no images found under {base} ({chosen.describe()})")
    return SegmentationDataset(spec, base, chosen, items)
