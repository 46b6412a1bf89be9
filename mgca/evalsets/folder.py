"""Any labelled folder as an evaluation set (`mgca-eval --dataset folder`): images and masks matched by file stem.

    DIR/images/**/NAME.jpg  <->  DIR/masks/**/NAME.png     (nested split folders mirror each other)

Masks are integer label PNGs (ids in class-file order, `ignore_index` for void) or RGB colour masks decoded with a
palette file (`name r g b` a line; `ignore r g b` for void). The class file is `mgca.prompts.read_class_file`'s
(`name` or `name: prompt`). Background, when the masks have one, is the class file's first line and is either
predicted by the score threshold (`threshold`, as VOC21) or left out of the score (`ignore`, as VOC20). Torch-free,
so an exported engine is evaluated on it in the lean install too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runtime.files import read_text_file
from runtime.image_files import IMAGE_SUFFIXES, list_images

from ..prompts import read_class_file
from .readers import DatasetError, Item, SegmentationDataset
from .specs import DatasetSpec, Layout, Part

BACKGROUND_MODES = ("none", "threshold", "ignore")
IGNORE_NAMES = ("ignore", "void")
FOLDER_BACKGROUND_THRESHOLD = 0.95  # GroupViT's VOC value; --background-threshold sets another


@dataclass(frozen=True)
class FolderSource:
    """Where a labelled folder is and how to read its masks (the `mgca-eval --dataset folder` flags)."""

    classes: str | Path
    root: str | Path | None = None  # holds images/ and masks/
    images: str | Path | None = None  # or the two folders given explicitly
    masks: str | Path | None = None
    palette: str | Path | None = None
    ignore_index: int = 255
    background: Literal["none", "threshold", "ignore"] = "none"


def _image_files(folder: Path, what: str) -> dict[str, Path]:
    """{relative path without suffix: file} of the images below `folder`; two files with one stem are an error."""
    found: dict[str, Path] = {}
    for path in list_images(folder, recursive=True):
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in found:
            raise DatasetError(f"{what} {found[key]} and {path} have the same name; keep one of them")
        found[key] = path
    return found


def _folders(source: FolderSource) -> tuple[Path, Path, Path]:
    """(root, images folder, masks folder), each checked to exist."""
    if (source.images is None) != (source.masks is None):
        raise DatasetError("--images and --masks go together; give both, or --root DIR holding images/ and masks/")
    if source.images is not None:
        images, masks = Path(source.images).expanduser(), Path(source.masks).expanduser()
        root = Path(source.root).expanduser() if source.root else images.parent
    elif source.root is not None:
        root = Path(source.root).expanduser()
        images, masks = root / "images", root / "masks"
    else:
        raise DatasetError("--dataset folder needs --root DIR (holding images/ and masks/) or --images and --masks")
    for folder in (images, masks):
        if not folder.is_dir():
            raise DatasetError(f"{folder} is not a folder; --dataset folder expects DIR/images and DIR/masks (files "
                               "matched by name), or --images DIR --masks DIR")
    return root, images, masks


def read_palette(path: str | Path, names: tuple[str, ...], ignore_index: int) -> tuple[tuple[int, int, int, int], ...]:
    """(r, g, b, label) rows of a palette file: `name r g b` a line, name a class of the class file or ignore/void."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"palette file {path} does not exist; write one 'name r g b' line per class")
    rows, colours = [], {}
    for number, line in enumerate(read_text_file(path, "palette file", DatasetError).splitlines(), 1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        words = line.split()
        name = " ".join(words[:-3])
        try:
            rgb = tuple(int(v) for v in words[-3:])
            if not name or not all(0 <= v <= 255 for v in rgb):
                raise ValueError
        except ValueError:
            raise DatasetError(f"palette file {path} line {number} ({line.strip()!r}) must be 'name r g b' with "
                               "r, g, b in 0..255") from None
        if name in IGNORE_NAMES:
            label = ignore_index
        elif name in names:
            label = names.index(name)
        else:
            raise DatasetError(f"palette file {path} line {number}: {name!r} is not a class of the class file "
                               f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}) nor 'ignore'")
        if rgb in colours and colours[rgb] != label:
            raise DatasetError(f"palette file {path} line {number}: colour {rgb} is given to two classes")
        colours[rgb] = label
        rows.append((*rgb, label))
    if not rows:
        raise DatasetError(f"palette file {path} holds no colours; write one 'name r g b' line per class")
    return tuple(rows)


def folder_spec(source: FolderSource, title: str) -> DatasetSpec:
    """The DatasetSpec of a folder: its classes, label mapping and background rule."""
    if source.background not in BACKGROUND_MODES:
        raise DatasetError(f"--background {source.background!r}: choose one of {', '.join(BACKGROUND_MODES)}")
    classes = read_class_file(source.classes)
    names, prompts = classes.names, classes.prompts
    if source.background != "none" and len(names) < 2:
        raise DatasetError(f"--background {source.background} takes the first class of {source.classes} as "
                           "background; list it and at least one other class")
    _check_ignore_index(source, names)
    palette = read_palette(source.palette, names, source.ignore_index) if source.palette else None
    ignore = source.background == "ignore"
    return DatasetSpec(
        "folder", title, names[1:] if ignore else names, layouts=(), ignore_index=source.ignore_index,
        background_threshold=FOLDER_BACKGROUND_THRESHOLD if source.background == "threshold" else None,
        reduce_zero_label=ignore, rgb_palette=palette, class_prompts=prompts[1:] if ignore else prompts,
        class_source=f"class file {source.classes}")


def _check_ignore_index(source: FolderSource, names: tuple[str, ...]) -> None:
    """--ignore-index names void pixels in the masks' own ids, so it must be an id no class has: else a class would
    silently never be scored (with --background ignore, 0 would even stand for the next class after the shift)."""
    index = source.ignore_index
    if index >= len(names):
        return
    if source.background == "ignore" and index == 0:
        raise DatasetError("--background ignore already leaves id 0 (the first class, background) out of the score; "
                           "drop --ignore-index 0, or give the id your masks use for unlabelled pixels (default 255)")
    raise DatasetError(f"--ignore-index {index} is the id of class {names[index]!r} in {source.classes}, which would "
                       "never be scored; give the id your masks use for unlabelled pixels, one no class has (default "
                       "255)")


def open_folder(source: FolderSource) -> SegmentationDataset:
    """The labelled folder as a SegmentationDataset; unmatched files and an empty folder are one-line errors."""
    root, image_dir, mask_dir = _folders(source)
    images, masks = _image_files(image_dir, "image"), _image_files(mask_dir, "mask")
    if not images:
        raise DatasetError(f"{image_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}); put the images to evaluate "
                           "there")
    for have, lack, what, where in ((images, masks, "image", mask_dir), (masks, images, "mask", image_dir)):
        unmatched = sorted(set(have) - set(lack))
        if unmatched:
            raise DatasetError(f"{what} {have[unmatched[0]]} has no file of the same name in {where} ("
                               f"{len(unmatched)} unmatched {what}s); add it or remove the {what}")
    spec = folder_spec(source, f"Folder {image_dir} + {mask_dir}")
    layout = Layout("folder", (Part(str(image_dir), str(mask_dir), "", ""),))
    items = [Item(key, images[key], masks[key]) for key in sorted(images)]
    return SegmentationDataset(spec, root, layout, items)


__all__ = ["BACKGROUND_MODES", "FolderSource", "folder_spec", "open_folder", "read_palette"]
