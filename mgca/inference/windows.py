"""Preprocessing and mmseg-style sliding windows as docs/inference-contract.md defines them, for PyTorch.

The image checks, the resize and the normalisation are the runtime's own numpy code (`runtime.preprocess`),
and the window positions and stitched grid come from `runtime.contract`; only the crops and the stitching
are torch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from runtime.contract import Box, InferenceSettings, box_cells, settings_layout
from runtime.preprocess import check_image, normalize, resize_image


@dataclass(frozen=True)
class Preprocessed:
    """A normalised resized image, its windows and the sizes the score resize walks back through."""

    tensor: torch.Tensor  # (3, H', W') float32, not padded (each crop is padded alone)
    original_size: tuple[int, int]  # H, W
    resized_size: tuple[int, int]  # H', W'
    boxes: tuple[Box, ...]  # (y1, y2, x1, x2) per window: the resized-image pixels it holds
    grid_size: tuple[int, int]  # (gh, gw) cells of the stitched embedding map
    output_stride: int


def preprocess(image: np.ndarray, settings: InferenceSettings, mean: Sequence[float], std: Sequence[float],
               output_stride: int) -> Preprocessed:
    """Contract steps 1-3 and the window layout: check, resize (mmseg), normalise (a uint8 RGB image; grayscale,
    RGBA and other integer images in 0..255 are converted as the runtime converts them)."""
    image = check_image(image)
    resized = resize_image(image, settings.short_side, settings.long_side)
    array = normalize(resized, np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32))
    layout = settings_layout(resized.shape[0], resized.shape[1], settings, output_stride)
    return Preprocessed(torch.from_numpy(array), (image.shape[0], image.shape[1]), (resized.shape[0], resized.shape[1]),
                        layout.boxes, layout.grid_hw, output_stride)


def crop_windows(tensor: torch.Tensor, boxes: Sequence[Box], window: int) -> torch.Tensor:
    """(N, 3, window, window): each crop zero-padded bottom/right so one fixed window serves every image."""
    crops = [F.pad(tensor[:, y1:y2, x1:x2], (0, window - (x2 - x1), 0, window - (y2 - y1))) for y1, y2, x1, x2 in boxes]
    return torch.stack(crops)


def stitch(
    window_embeddings: torch.Tensor,
    boxes: Sequence[Box],
    grid_size: tuple[int, int],
    output_stride: int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Average the windows' valid embedding grids into one (C, gh, gw) map, then L2-normalise.

    `transform` maps each window's valid (C, h, w) grid before it is added (per-window units).
    """
    channels = window_embeddings.shape[1]
    total = window_embeddings.new_zeros(channels, *grid_size)
    count = window_embeddings.new_zeros(1, *grid_size)
    for grid, box in zip(window_embeddings, boxes, strict=True):
        gy1, gy2, gx1, gx2 = box_cells(box, output_stride)
        valid = grid[:, :gy2 - gy1, :gx2 - gx1]
        total[:, gy1:gy2, gx1:gx2] += transform(valid) if transform is not None else valid
        count[:, gy1:gy2, gx1:gx2] += 1
    return F.normalize(total / count, dim=0)


def grid_image(pre: Preprocessed) -> torch.Tensor:
    """(3, gh, gw): the normalised image under the stitched grid (cropped, or zero-extended past the image, to
    gh os x gw os pixels) resized bilinearly with aligned corners, as TCL's `apply_pamr` (twin of
    `runtime.postprocess.grid_image`)."""
    (grid_h, grid_w), os_ = pre.grid_size, pre.output_stride
    extent = pre.tensor.new_zeros(3, grid_h * os_, grid_w * os_)
    height, width = min(extent.shape[1], pre.resized_size[0]), min(extent.shape[2], pre.resized_size[1])
    extent[:, :height, :width] = pre.tensor[:, :height, :width]
    return F.interpolate(extent[None], size=(grid_h, grid_w), mode="bilinear", align_corners=True)[0]
