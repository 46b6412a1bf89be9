"""Listing (image, caption) pairs from a folder or a CSV/TSV table, and decoding images.

Listing checks what is cheap to check up front (the image file exists, the caption is not
blank) so those never reach training; only undecodable images are found at load time.
Listings are cached per process, because the trainer builds a loader every epoch.
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from runtime.errors import ImageFileError
from runtime.image_files import DECODE_ERRORS, IMAGE_SUFFIXES, open_rgb

from .errors import SKIP_KINDS, CorruptImage, DataError, SkipCounter

IMAGE_COLUMNS = ("image", "image_path", "filepath", "file_path", "image_file", "filename", "file", "path", "img",
                 "image_id")
CAPTION_COLUMNS = ("caption", "title", "text", "captions", "sentence", "description", "raw_caption", "alt")
SOURCE_HELP = ("give a folder of images + same-name .txt captions, a .csv/.tsv of image,caption, "
               "webdataset .tar shards (a folder of them, one .tar or a 'shards/{00000..00009}.tar' "
               "pattern), or 'synthetic'")


def load_image(data: bytes | str | Path) -> Image.Image:
    """An RGB image, upright by its EXIF orientation, decoded in full now (runtime.image_files) so a truncated
    file fails here as CorruptImage."""
    try:
        return open_rgb(data, name="the image")
    except ImageFileError as err:
        raise CorruptImage(str(err)) from None


def image_decodes(data: bytes) -> bool:
    """Whether `data` decodes, checked cheaply (JPEGs at 1/8 scale): used to replay a stream on resume."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            image.draft("RGB", (1, 1))
            image.load()
        return True
    except DECODE_ERRORS:
        return False


def clean_caption(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class CaptionList:
    """Usable (image path, caption) pairs of a source and how many entries were left out."""

    pairs: tuple[tuple[str, str], ...]
    skipped: dict[str, int]

    def report_to(self, skips: SkipCounter) -> None:
        for kind in SKIP_KINDS:
            if self.skipped.get(kind):
                skips.add(kind, count=self.skipped[kind])


_listings: dict[tuple, CaptionList] = {}


def _cached(key: tuple, read, skips: SkipCounter | None) -> CaptionList:
    """Read once per process; a repeated read re-reports its skip counts without re-printing warnings."""
    if key in _listings:
        listing = _listings[key]
        if skips is not None:
            listing.report_to(skips)
        return listing
    local = SkipCounter(name=skips.name if skips is not None else "mgca.pairs")
    listing = read(local)
    _listings[key] = listing
    if skips is not None:
        listing.report_to(skips)
    return listing


def _stamp(path: Path) -> tuple:
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def read_caption_folder(folder: str | Path, skips: SkipCounter | None = None) -> CaptionList:
    """Images (searched recursively) with a same-stem `.txt` caption beside them.

    An image without a caption file or with a blank one counts as an empty caption; a caption
    file without an image counts as a missing image.
    """
    folder = Path(folder)

    def read(local: SkipCounter) -> CaptionList:
        images: dict[Path, Path] = {}
        texts: set[Path] = set()
        for path in sorted(folder.rglob("*")):
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES and path.is_file():
                images.setdefault(path.with_suffix(""), path)
            elif suffix == ".txt" and path.is_file():
                texts.add(path.with_suffix(""))
        pairs = []
        for stem, image in images.items():
            text = stem.with_suffix(".txt").read_text(encoding="utf-8", errors="replace") if stem in texts else ""
            caption = clean_caption(text) if stem in texts else ""
            if not caption:
                local.add("empty_captions", f"{image} has no caption text")
                continue
            pairs.append((str(image), caption))
        for stem in sorted(texts - set(images)):
            local.add("missing_images", f"{stem.with_suffix('.txt')} has no image beside it")
        if not pairs:
            raise DataError(f"data.source folder {folder} holds no image with a non-empty same-name .txt "
                            f"caption; {SOURCE_HELP}")
        return CaptionList(tuple(pairs), local.as_dict())

    return _cached(("folder", *_stamp(folder)), read, skips)


def _delimiter(path: Path, first_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if suffix == ".csv":
        return "\t" if "\t" in first_line and "," not in first_line else ","
    return "\t" if "\t" in first_line else ","


def _columns(header: list[str], path: Path) -> tuple[int, int, bool]:
    """(image column, caption column, whether row 0 is a header)."""
    names = [name.strip().lower() for name in header]
    image = next((names.index(c) for c in IMAGE_COLUMNS if c in names), None)
    caption = next((names.index(c) for c in CAPTION_COLUMNS if c in names), None)
    if image is not None and caption is not None:
        return image, caption, True
    if len(header) >= 2 and header[0].strip().lower().endswith(IMAGE_SUFFIXES):
        return 0, 1, False  # no header: image, caption
    if "url" in names:
        raise DataError(f"{path} lists image URLs; download them first (e.g. img2dataset --output_format webdataset) "
                        "and point data.source at the shards")
    raise DataError(f"{path}: cannot tell the image and caption columns from its first row {header[:6]}; "
                    f"use a header like image,caption (image: {'/'.join(IMAGE_COLUMNS[:4])}; caption: "
                    f"{'/'.join(CAPTION_COLUMNS[:3])})")


def _image_root(table: Path, relative: list[str]) -> Path:
    """The folder relative image paths resolve against: the table's folder, or its images/ subfolder if that is
    where they are."""
    candidates = [table.parent, table.parent / "images", table.parent / "Images"]
    sample = relative[:50]
    found = [sum((root / name).is_file() for name in sample) for root in candidates]
    return candidates[max(range(len(candidates)), key=lambda k: (found[k], -k))]


def read_caption_table(path: str | Path, skips: SkipCounter | None = None) -> CaptionList:
    """(image, caption) rows of a CSV/TSV (header detected; several captions per image allowed).

    Relative image paths resolve against the table's folder (or its `images/` subfolder when the
    files are there, as in Flickr8k's captions.txt). Rows whose image file is missing or whose
    caption is blank are left out and counted.
    """
    path = Path(path)

    def read(local: SkipCounter) -> CaptionList:
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
            first_line = handle.readline()
            handle.seek(0)
            delimiter = _delimiter(path, first_line)
            rows = [row for row in csv.reader(handle, delimiter=delimiter) if any(cell.strip() for cell in row)]
        if not rows:
            raise DataError(f"data.source table {path} is empty; {SOURCE_HELP}")
        image_col, caption_col, has_header = _columns(rows[0], path)
        width = len(rows[0])
        body = rows[1:] if has_header else rows
        entries = []
        for row in body:
            image = row[image_col].strip() if image_col < len(row) else ""
            if caption_col == width - 1 and len(row) > width:  # an unquoted delimiter inside the caption
                caption = delimiter.join(row[caption_col:])
            else:
                caption = row[caption_col] if caption_col < len(row) else ""
            entries.append((image, clean_caption(caption)))
        root = _image_root(path, [image for image, _ in entries if image and not os.path.isabs(image)])
        exists: dict[str, bool] = {}
        pairs = []
        for line, (image, caption) in enumerate(entries, start=2 if has_header else 1):
            if not image:
                local.add("missing_images", f"{path} row {line} names no image")
                continue
            full = image if os.path.isabs(image) else str(root / image)
            if full not in exists:
                exists[full] = os.path.isfile(full)
            if not exists[full]:
                local.add("missing_images", f"{full} (row {line} of {path}) does not exist")
                continue
            if not caption:
                local.add("empty_captions", f"row {line} of {path} ({image}) has a blank caption")
                continue
            pairs.append((full, caption))
        if not pairs:
            raise DataError(f"data.source table {path} has no row with an existing image and a caption "
                            f"({local.missing_images} missing images, {local.empty_captions} empty captions; images "
                            f"resolved under {root})")
        return CaptionList(tuple(pairs), local.as_dict())

    return _cached(("table", *_stamp(path)), read, skips)
