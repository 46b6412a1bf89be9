"""Temporal stability for frame streams in PyTorch: the twin of `runtime.temporal` (the same steps on tensors).

`SegmentationPredictor.labels_from_embedding(..., state=)` and `predict(image, state=)` use it; the modes and their
constants are the contract's (`runtime.contract.TEMPORAL_MODES`), and tests/test_temporal.py holds the two sides to
the same labels on the same frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from runtime.contract import meta_point_indices, uses_pixel_units
from runtime.temporal import TemporalState

from .units import Units, assign_pixels, pool_units


@dataclass
class TorchTemporalState(TemporalState):
    """One stream's memory, as runtime.temporal.TemporalState keeps it (its mode, constants and reset when the sizes,
    classes or units change), holding tensors: previous normalised image, smoothed grid scores (K, gh, gw), unit
    embeddings (M, C)."""

    image: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    units: torch.Tensor | None = None


def carried_units(embeddings: torch.Tensor, units: int, state: TorchTemporalState) -> Units | None:
    """The (C, h, w) map's units with the previous frame's unit embeddings as meta-points (an emptied unit: its grid
    pixel), None for pixel units; keeps this frame's unit embeddings in `state`."""
    channels, height, width = embeddings.shape
    if uses_pixel_units(units, height, width):
        return None
    flat = embeddings.reshape(channels, -1)
    index = torch.tensor(meta_point_indices(height, width, units), dtype=torch.long, device=flat.device)
    previous = state.units
    if previous is not None and previous.shape == (units, channels):
        kept = previous.norm(dim=1) > 0.5  # unit length, or zero where a unit emptied
        points = torch.where(kept[:, None], previous, flat[:, index].T).contiguous()
        assignment = (points @ flat).max(dim=0).indices  # first maximum, as assign_pixels
    else:  # the first frame: the grid's pixels, with assign_pixels' rule for repeated ones
        assignment = assign_pixels(flat, index)
    unit_emb = pool_units(flat, assignment, units)
    state.units = unit_emb
    return assignment, unit_emb


def cell_change(image: torch.Tensor, previous: torch.Tensor, grid_hw: tuple[int, int], output_stride: int,
                std: tuple[float, ...]) -> torch.Tensor:
    """(gh, gw) mean absolute change per grid cell in [0, 1] pixel units (runtime.temporal.cell_change)."""
    grid_h, grid_w = grid_hw
    height, width = image.shape[1:]
    scale = torch.tensor(std, dtype=image.dtype, device=image.device)[:, None, None]
    diff = ((image - previous).abs() * scale).mean(dim=0)
    extent = diff.new_zeros(grid_h * output_stride, grid_w * output_stride)
    count = torch.zeros_like(extent)
    rows, cols = min(height, extent.shape[0]), min(width, extent.shape[1])
    extent[:rows, :cols] = diff[:rows, :cols]
    count[:rows, :cols] = 1.0
    cells = (grid_h, output_stride, grid_w, output_stride)
    return extent.reshape(cells).sum(dim=(1, 3)) / count.reshape(cells).sum(dim=(1, 3)).clamp_min(1.0)


def smooth_scores(scores: torch.Tensor, image: torch.Tensor, state: TorchTemporalState, output_stride: int,
                  std: tuple[float, ...]) -> torch.Tensor:
    """(K, gh, gw) scores -> alpha x these + (1 - alpha) x the previous smoothed ones where no cell (grown by one)
    changed more than the gate; these where it did. Updates `state`."""
    out = scores
    if state.scores is not None and state.image is not None:
        change = cell_change(image, state.image, tuple(scores.shape[1:]), output_stride, std)
        moving = change > state.gate
        if state.grow > 0:
            size = 2 * state.grow + 1
            moving = F.max_pool2d(moving.float()[None, None], size, stride=1, padding=state.grow)[0, 0] > 0
        blended = state.alpha * scores + (1.0 - state.alpha) * state.scores
        out = torch.where(moving[None], scores, blended)
    state.image, state.scores = image, out
    return out


__all__ = ["TorchTemporalState", "carried_units", "cell_change", "smooth_scores"]
