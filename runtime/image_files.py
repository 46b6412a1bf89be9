"""Image files -> RGB pixels, the one way every tool finds and reads them (training pairs, evaluation sets,
mgca-segment, calibration and parity images, the demo).

Decoded in full here (Pillow decodes lazily, so a truncated file would otherwise fail later, far from its
name), turned upright by its EXIF orientation tag (a phone photo stored sideways is labelled as it is shown,
as OpenCV's `imread` and every viewer do), and converted to RGB. Deep grey images are scaled to 8 bits, not clipped
as Pillow's own conversion does: 16-bit (and 32-bit integer) values v become round(v / 257), so 0..65535 spans
0..255; float values in [0, 1] are multiplied by 255, and floats outside [0, 1] are refused (no scale is right for
all of them). A file that cannot be read or decoded is a one-line ImageFileError naming it.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageFileError, one_line
from .files import files_below

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
    found = files_below(root) if recursive else root.iterdir()  # linked sub-folders followed
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
                return to_8bit(upright, label).convert("RGB")
    except UnidentifiedImageError:
        raise ImageFileError(f"{label} is not an image file Pillow can read; convert it to JPEG or PNG, or remove "
                             "it") from None
    except DECODE_ERRORS as err:
        raise ImageFileError(f"{label} cannot be decoded ({type(err).__name__}: {one_line(err)}); the file is "
                             "damaged or truncated: replace or remove it") from None


def to_8bit(image: Image.Image, label: str = "image") -> Image.Image:
    """`image` with 8-bit channels: 16-/32-bit integer grey ("I;16*", "I") scaled by 1/257, float grey ("F") in
    [0, 1] by 255; 8-bit modes as they are. Other ranges are a one-line ImageFileError naming `label`."""
    if not (image.mode.startswith("I") or image.mode == "F"):
        return image
    values = np.asarray(image).astype(np.float64)
    finite = bool(np.isfinite(values).all())
    lo, hi = (float(values.min()), float(values.max())) if finite else (float("nan"), float("nan"))
    if image.mode == "F":
        if not (finite and 0.0 <= lo and hi <= 1.0):
            raise ImageFileError(f"{label} is a float image with values {lo:g}..{hi:g}; only floats in [0, 1] have a "
                                 "known scale: save it as 8- or 16-bit")
        scaled = values * 255.0
    else:
        if lo < 0 or hi > 65535:
            raise ImageFileError(f"{label} is a 32-bit integer image with values {lo:g}..{hi:g}, outside 16 bits "
                                 "(0..65535); save it as 8- or 16-bit")
        scaled = values / 257.0
    return Image.fromarray(np.rint(scaled).astype(np.uint8))  # 2-D uint8: mode L


def read_rgb(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8 RGB pixels of an image file, upright (see `open_rgb`)."""
    return np.asarray(open_rgb(path))


__all__ = ["open_rgb", "read_rgb", "to_8bit", "is_image_name", "list_images", "DECODE_ERRORS", "IMAGE_SUFFIXES"]
