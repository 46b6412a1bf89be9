"""Image checks, resizing, normalisation, padding and sliding-window crops in numpy/OpenCV.

Implements docs/inference-contract.md "Preprocessing" and "Sliding windows"; the sizes and window
positions come from `runtime.contract` (mmseg's resize and `slide_inference` placement, each crop padded
alone). `mgca.inference` checks, resizes and normalises images with this module too.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .contract import Box, InferenceSettings, resized_shape, settings_layout
from .errors import RuntimeInputError

# Bad-image policy: lossless conversions are done, ambiguous or lossy ones are refused.
#   grayscale HxW / HxWx1 -> replicated to 3 channels; RGBA HxWx4 -> alpha dropped;
#   integer dtypes other than uint8 -> converted only when every value is in 0..255;
#   float/bool/complex/object -> refused (is 1.0 white, or 255.0?); empty -> refused.
# Zero-copy policy: a uint8 H x W x 3 array (C-contiguous or a strided view, read-only or not) is passed on
# as it is, and the BGR -> RGB swap is a free reversed view taken after the resize. The first new array is
# made by cv2.resize (which reads strided views itself) or, when the size already fits, by the float
# conversion of the normalisation: work that has to produce a new array anyway.

COLOR_ORDERS = ("rgb", "bgr")
# The largest resized image: 64 megapixels (a 448-high panorama 140,000 wide) take ~1 GiB as normalised floats.
# A long thin image with no long-side cap (1 x 100,000 at short side 448) would otherwise ask for 10s of GiB.
MAX_RESIZED_PIXELS = 64_000_000


def check_color_order(color_order: str) -> str:
    """"rgb" or "bgr" (case-insensitive), or a one-line RuntimeInputError."""
    order = str(color_order).lower()
    if order not in COLOR_ORDERS:
        raise RuntimeInputError("color_order must be 'rgb' or 'bgr' (OpenCV's cv2.imread/VideoCapture frames), "
                                f"got {color_order!r}")
    return order


def check_image(image: object, where: str = "image") -> np.ndarray:
    """A uint8 H x W x 3 array from `image` (the caller's own buffer, not a copy, when it already is one;
    channel order untouched), or a one-line RuntimeInputError."""
    given = type(image).__name__
    if image is None:
        raise RuntimeInputError(f"{where} is None, not an image (cv2.imread returns None for a missing or unreadable "
                                "file); pass a numpy array H x W x 3 uint8 (RGB)")
    if not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image)
        except Exception:  # anything that is not array-like
            raise RuntimeInputError(f"{where} must be a numpy array H x W x 3 uint8 (RGB), "
                                    f"got {given}") from None
    arr: np.ndarray = image
    if arr.dtype == object or arr.ndim == 0:
        raise RuntimeInputError(f"{where} must be a numpy array H x W x 3 uint8 (RGB), got {given}"
                                + (f" of dtype {arr.dtype}" if given == "ndarray" else ""))
    if arr.ndim not in (2, 3):
        raise RuntimeInputError(f"{where} has shape {arr.shape}; expected H x W x 3 (RGB), H x W x 4 (RGBA) or "
                                "H x W (grayscale)")
    if arr.size == 0 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise RuntimeInputError(f"{where} is empty (shape {arr.shape}); pass an image of at least 1 x 1 pixels")
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if channels not in (1, 3, 4):
        raise RuntimeInputError(f"{where} has {channels} channels (shape {arr.shape}); expected 3 (RGB), 4 (RGBA) "
                                "or 1 (grayscale)")
    if arr.dtype != np.uint8:
        kind = arr.dtype.kind
        if kind in "iu":
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > 255:
                raise RuntimeInputError(f"{where} has dtype {arr.dtype} with values {lo}..{hi}, outside 0..255; scale "
                                        "it to uint8 yourself")
            arr = arr.astype(np.uint8)
        elif kind == "f":
            raise RuntimeInputError(f"{where} has dtype {arr.dtype}; pass uint8 RGB (for floats in [0, 1] use (img * "
                                    "255).round().clip(0, 255).astype(np.uint8))")
        else:
            raise RuntimeInputError(f"{where} has dtype {arr.dtype}; pass a uint8 RGB image")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif channels == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif channels == 4:
        arr = arr[:, :, :3]  # a view: cv2.resize / the float conversion read it without a copy of ours
    return arr


def resize_image(image: np.ndarray, short_side: int, long_side: int = 0) -> np.ndarray:
    """mmcv's `imrescale` (cv2 INTER_LINEAR on the uint8 image) to `resized_shape`: the one step both
    implementations share bit for bit."""
    new_h, new_w = resized_shape(image.shape[0], image.shape[1], short_side, long_side)
    if new_h * new_w > MAX_RESIZED_PIXELS:
        raise RuntimeInputError(f"image {image.shape[1]}x{image.shape[0]} would be resized to {new_w}x{new_h} "
                                f"({new_h * new_w / 1e6:.0f} megapixels, over the {MAX_RESIZED_PIXELS / 1e6:.0f} "
                                "allowed); cap the longer side (long_side, --long-side 2048) or crop the image")
    if (new_h, new_w) == image.shape[:2]:
        return image
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def normalize(image: np.ndarray, mean: np.ndarray, std: np.ndarray, color_order: str = "rgb") -> np.ndarray:
    """uint8 H' x W' x 3 -> float32 3 x H' x W' RGB, normalised with mean/std (in [0, 1] units).
    A BGR image is read through a reversed channel view, so the swap costs no copy of its own."""
    rgb = image[:, :, ::-1] if color_order == "bgr" else image
    x = rgb.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))


@dataclass(frozen=True)
class Prepared:
    """One image after preprocessing, with the window crops that go through the model."""

    original_hw: tuple[int, int]  # H x W of the input
    resized_hw: tuple[int, int]  # H' x W' after the resize
    grid_hw: tuple[int, int]  # cells of the stitched embedding map (runtime.contract.WindowLayout)
    boxes: tuple[Box, ...]  # (y1, y2, x1, x2) per window: the resized-image pixels it holds
    crops: np.ndarray  # n_windows x 3 x win x win float32
    image: np.ndarray  # 3 x H' x W' float32, the normalised resized image (PAMR reads it)


def prepare(image: np.ndarray, settings: InferenceSettings, output_stride: int, mean: np.ndarray, std: np.ndarray,
            color_order: str = "rgb") -> Prepared:
    """A checked uint8 image (RGB or BGR as color_order says) -> resized, normalised RGB window crops, each
    zero-padded bottom/right to the window. Resizing first is exact for BGR too: bilinear resizing treats every
    channel alike."""
    resized = resize_image(image, settings.short_side, settings.long_side)
    normalized = normalize(resized, mean, std, color_order)
    height, width = resized.shape[:2]
    layout = settings_layout(height, width, settings, output_stride)
    window = settings.window
    crops = np.zeros((len(layout.boxes), 3, window, window), dtype=np.float32)
    for i, (y1, y2, x1, x2) in enumerate(layout.boxes):
        crops[i, :, :y2 - y1, :x2 - x1] = normalized[:, y1:y2, x1:x2]
    return Prepared(image.shape[:2], (height, width), layout.grid_hw, layout.boxes, crops, normalized)


__all__ = ["COLOR_ORDERS", "MAX_RESIZED_PIXELS", "check_color_order", "check_image", "resize_image", "normalize",
           "Prepared", "prepare"]
