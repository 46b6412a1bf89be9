"""Image files -> RGB pixels, the one way every tool finds and reads them (training pairs, evaluation sets,
mgca-segment, calibration and parity images, the demo).

Decoded in full here (Pillow decodes lazily, so a truncated file would otherwise fail later, far from its
name), turned upright by its EXIF orientation tag (a phone photo stored sideways is labelled as it is shown,
as OpenCV's `imread` and every viewer do), and converted to RGB. A file that cannot be read or decoded is a
one-line ImageFileError naming it.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageFileError, one_line

# The files a folder of images is made of (training pairs, mgca-segment's inputs, mgca-eval --dataset folder,
# calibration), lower case. `.gif` is one of them: Pillow decodes it (an animation's first frame, its palette made
# RGB by `open_rgb`), and leaving it out would skip a folder's GIFs without a word, while scraped caption data holds
# many; a user who wants another frame converts the file.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError, UnidentifiedImageError)


def is_image_name(name: str | Path) -> bool:
    """An image file by its suffix, hidden files (".name", e.g. macOS' "._photo.jpg") excluded."""
    path = Path(name)
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """The image files in `folder` (below it with `recursive`), sorted by path so every run sees one order."""
    root = Path(folder).expanduser()
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(path for path in found if is_image_name(path) and path.is_file())


def open_rgb(source: str | Path | bytes, name: str | None = None) -> Image.Image:
    """The image in `source` (a path, or a file's bytes called `name`), decoded, upright, RGB."""
    label = name or (str(source) if not isinstance(source, bytes) else "image bytes")
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise ImageFileError(f"image file {label} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's "possibly corrupt EXIF" chatter
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)
                return upright.convert("RGB")
    except UnidentifiedImageError:
        raise ImageFileError(f"{label} is not an image file Pillow can read; convert it to JPEG or PNG, or remove "
                             "it") from None
    except DECODE_ERRORS as err:
        raise ImageFileError(f"{label} cannot be decoded ({type(err).__name__}: {one_line(err)}); the file is "
                             "damaged or truncated: replace or remove it") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8 RGB pixels of an image file, upright (see `open_rgb`)."""
    return np.asarray(open_rgb(path))


__all__ = ["open_rgb", "read_rgb", "is_image_name", "list_images", "DECODE_ERRORS", "IMAGE_SUFFIXES"]
