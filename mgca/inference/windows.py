"""Preprocessing and mmseg-style sliding windows as docs/inference-contract.md defines them, for PyTorch.

The image checks, the resize and the normalisation are the runtime's own numpy code (`runtime.preprocess`),
and the window positions come from `runtime.contract`; only the crops and the stitching are torch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from runtime.contract import Box
from runtime.preprocess import check_image, normalize_pad, resize_short_side


@dataclass(frozen=True)
class Preprocessed:
    """A normalised, zero-padded image and the three sizes the score resize walks back through."""

    tensor: torch.Tensor  # (3, H'', W'') float32
    original_size: tuple[int, int]  # H, W
    resized_size: tuple[int, int]  # H', W'

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensor.shape[1]), int(self.tensor.shape[2])


def preprocess(image: np.ndarray, short_side: int, mean: Sequence[float], std: Sequence[float],
               output_stride: int) -> Preprocessed:
    """Contract steps 1-4: check, resize, normalise, pad to the output stride (a uint8 RGB image; grayscale,
    RGBA and other integer images in 0..255 are converted as the runtime converts them)."""
    image = check_image(image)
    resized = resize_short_side(image, short_side)
    array = normalize_pad(resized, np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32), output_stride)
    return Preprocessed(torch.from_numpy(array), (image.shape[0], image.shape[1]), (resized.shape[0], resized.shape[1]))


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
    for grid, (y1, y2, x1, x2) in zip(window_embeddings, boxes, strict=True):
        gy1, gy2, gx1, gx2 = y1 // output_stride, y2 // output_stride, x1 // output_stride, x2 // output_stride
        valid = grid[:, :gy2 - gy1, :gx2 - gx1]
        total[:, gy1:gy2, gx1:gx2] += transform(valid) if transform is not None else valid
        count[:, gy1:gy2, gx1:gx2] += 1
    return F.normalize(total / count, dim=0)
