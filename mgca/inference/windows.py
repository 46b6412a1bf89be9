"""Preprocessing and mmseg-style sliding windows, exactly as docs/inference-contract.md defines them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]  # y1, y2, x1, x2 in padded-image pixels


@dataclass(frozen=True)
class Preprocessed:
    """A normalised, zero-padded image and the three sizes the score resize walks back through."""

    tensor: torch.Tensor  # (3, H'', W'') float32
    original_size: tuple[int, int]  # H, W
    resized_size: tuple[int, int]  # H', W'

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensor.shape[1]), int(self.tensor.shape[2])


def check_image(image: np.ndarray) -> np.ndarray:
    """The contract's input is an RGB uint8 H x W x 3 array; anything else is a caller bug."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an RGB uint8 array of shape (H, W, 3), got {got}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: {image.shape}")
    return image


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H', W'): the shorter side becomes `short_side`, each side `round(side * short_side / min(H, W))`."""
    shorter = min(height, width)
    return round(height * short_side / shorter), round(width * short_side / shorter)


def resize_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
    """cv2 INTER_LINEAR on the uint8 image: the one step both implementations share bit for bit."""
    new_h, new_w = resized_shape(image.shape[0], image.shape[1], short_side)
    if (new_h, new_w) == image.shape[:2]:
        return image
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def normalize_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 HWC -> float32 CHW in CLIP's normalised space: (x / 255 - mean) / std."""
    mean_arr = np.asarray(mean, dtype=np.float32)
    std_arr = np.asarray(std, dtype=np.float32)
    array = (image.astype(np.float32) / np.float32(255.0) - mean_arr) / std_arr
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def pad_to_multiple(tensor: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad a (..., H, W) tensor bottom/right to the next multiples of `multiple`."""
    height, width = tensor.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    return F.pad(tensor, (0, pad_w, 0, pad_h)) if pad_h or pad_w else tensor


def preprocess(image: np.ndarray, short_side: int, mean: Sequence[float], std: Sequence[float], output_stride: int) -> Preprocessed:
    """Contract steps 1-4: resize, normalise, pad to the output stride."""
    image = check_image(image)
    resized = resize_short_side(image, short_side)
    tensor = pad_to_multiple(normalize_image(resized, mean, std), output_stride)
    return Preprocessed(tensor, (image.shape[0], image.shape[1]), (resized.shape[0], resized.shape[1]))


def window_spans(size: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) of each window along one axis, mmseg `slide_inference` positions."""
    count = max(size - window + stride - 1, 0) // stride + 1
    spans = []
    for index in range(count):
        end = min(index * stride + window, size)
        spans.append((max(end - window, 0), end))
    return spans


def window_boxes(height: int, width: int, window: int, stride: int) -> list[Box]:
    """All windows of a padded image, row-major."""
    return [(y1, y2, x1, x2) for y1, y2 in window_spans(height, window, stride) for x1, x2 in window_spans(width, window, stride)]


def crop_windows(tensor: torch.Tensor, boxes: Sequence[Box], window: int) -> torch.Tensor:
    """(N, 3, window, window): each crop zero-padded bottom/right so one fixed window serves every image."""
    crops = [F.pad(tensor[:, y1:y2, x1:x2], (0, window - (x2 - x1), 0, window - (y2 - y1))) for y1, y2, x1, x2 in boxes]
    return torch.stack(crops)


def stitch(
    window_embeddings: torch.Tensor,
    boxes: Sequence[Box],
    padded_size: tuple[int, int],
    output_stride: int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Average the windows' valid embedding grids into one (C, H''/os, W''/os) map, then L2-normalise.

    `transform` maps each window's valid (C, h, w) grid before it is added (per-window units).
    """
    channels = window_embeddings.shape[1]
    out_h, out_w = padded_size[0] // output_stride, padded_size[1] // output_stride
    total = window_embeddings.new_zeros(channels, out_h, out_w)
    count = window_embeddings.new_zeros(1, out_h, out_w)
    for grid, (y1, y2, x1, x2) in zip(window_embeddings, boxes):
        gy1, gy2, gx1, gx2 = y1 // output_stride, y2 // output_stride, x1 // output_stride, x2 // output_stride
        valid = grid[:, :gy2 - gy1, :gx2 - gx1]
        total[:, gy1:gy2, gx1:gx2] += transform(valid) if transform is not None else valid
        count[:, gy1:gy2, gx1:gx2] += 1
    return F.normalize(total / count, dim=0)
