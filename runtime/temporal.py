"""Temporal stability for frame streams, in numpy: the memory one stream keeps from frame to frame.

Per-frame labels flicker where a frame's scores sit near a tie, and MGCA's units make it worse: the meta-points and
the pixels' assignment to them are recomputed from every frame. The `temporal` setting (runtime.contract;
docs/inference-contract.md, "Temporal stability") picks what a stream carries over:

- `ema`: the class scores on the output-stride grid (after units and PAMR, before the background rule) are an
  exponential moving average over frames, except in cells whose pixels changed (the frame difference gate): there a
  moving or appearing object takes its new scores at once instead of leaving a ghost;
- `units`: a frame's meta-points are the previous frame's unit embeddings (an emptied unit falls back to its grid
  pixel), so the units keep their identity from frame to frame;
- `both`.

One `TemporalState` per stream (`Segmenter.temporal_state()`), passed to every `Segmenter.decode(..., state=)` in
frame order. It resets itself when the image size, the classes or the unit count change. `mgca.inference.temporal`
is the PyTorch twin (tests/test_temporal.py holds them to the same labels).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .contract import TEMPORAL_ALPHA, TEMPORAL_GATE, TEMPORAL_GROW, TEMPORAL_MODES, meta_point_indices
from .errors import SettingsError


@dataclass
class TemporalState:
    """One stream's memory: the previous frame's normalised image, smoothed grid scores and unit embeddings.

    Not shared between streams; a state used from several threads at once serialises on its lock (frames must come
    in order anyway)."""

    mode: str = "off"
    alpha: float = TEMPORAL_ALPHA
    gate: float = TEMPORAL_GATE
    grow: int = TEMPORAL_GROW  # changed cells are grown by this many cells before they take the new scores
    key: tuple[Any, ...] | None = None  # what the memory holds: image and grid sizes, classes, units
    image: np.ndarray | None = None  # 3 x H' x W' normalised resized image of the previous frame
    scores: np.ndarray | None = None  # h x w x K smoothed grid scores
    units: np.ndarray | None = None  # M x C unit embeddings of the previous frame
    frames: int = 0  # frames seen since the last reset
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_mode(self.mode)

    @property
    def smooths(self) -> bool:
        return self.mode in ("ema", "both")

    @property
    def carries_units(self) -> bool:
        return self.mode in ("units", "both")

    def reset(self) -> None:
        """Forget the past (a cut, a seek, another camera): the next frame is labelled as if alone."""
        self.key, self.image, self.scores, self.units, self.frames = None, None, None, None, 0

    def begin(self, key: tuple[Any, ...]) -> None:
        """Start a frame whose sizes, classes and units are `key`: the memory is dropped when they changed."""
        if key != self.key:
            self.reset()
            self.key = key


def check_mode(mode: str) -> str:
    if mode not in TEMPORAL_MODES:
        raise SettingsError(f"temporal must be one of {TEMPORAL_MODES}, got {mode!r}")
    return mode


def carried_points(x: np.ndarray, height: int, width: int, units: int, previous: np.ndarray | None) -> np.ndarray:
    """M x C meta-points of an h x w map flattened to x (L x C): the previous frame's unit embeddings where it has
    them (non-zero), else the pixels on the contract's meta-point grid."""
    points = x[np.asarray(meta_point_indices(height, width, units), dtype=np.int64)]
    if previous is None or previous.shape != points.shape:
        return np.ascontiguousarray(points)
    kept = np.linalg.norm(previous, axis=1) > 0.5  # unit embeddings are unit length, or zero when a unit emptied
    return np.ascontiguousarray(np.where(kept[:, None], previous, points), dtype=np.float32)


def cell_change(image: np.ndarray, previous: np.ndarray, grid_hw: tuple[int, int], output_stride: int,
                std: np.ndarray) -> np.ndarray:
    """gh x gw mean absolute change of each grid cell's pixels between two normalised 3 x H' x W' images, in [0, 1]
    pixel units (the normalisation's std undone), over the channels and the cell's pixels inside the image."""
    grid_h, grid_w = grid_hw
    height, width = image.shape[1:]
    diff = (np.abs(image - previous) * np.asarray(std, dtype=np.float32)[:, None, None]).mean(axis=0)
    extent = np.zeros((grid_h * output_stride, grid_w * output_stride), dtype=np.float32)
    count = np.zeros_like(extent)
    rows, cols = min(height, extent.shape[0]), min(width, extent.shape[1])
    extent[:rows, :cols] = diff[:rows, :cols]
    count[:rows, :cols] = 1.0
    cells = (grid_h, output_stride, grid_w, output_stride)
    return extent.reshape(cells).sum(axis=(1, 3)) / np.maximum(count.reshape(cells).sum(axis=(1, 3)), 1.0)


def grow(mask: np.ndarray, cells: int = 1) -> np.ndarray:
    """A boolean grid mask grown by `cells` cells in all 8 directions (a square neighbourhood; 0: as it is)."""
    if cells <= 0:
        return mask
    padded = np.pad(mask, cells)
    height, width = mask.shape
    out = np.zeros_like(mask)
    for dy in range(2 * cells + 1):
        for dx in range(2 * cells + 1):
            out |= padded[dy:dy + height, dx:dx + width]
    return out


def smooth_scores(scores: np.ndarray, image: np.ndarray, state: TemporalState, output_stride: int,
                  std: np.ndarray) -> np.ndarray:
    """h x w x K grid scores of this frame -> the ones to label with: alpha x these + (1 - alpha) x the smoothed
    ones of the previous frame in cells that did not change, these as they are where the pixels changed (and on the
    first frame). Updates `state` (its image and scores)."""
    out = scores
    if state.scores is not None and state.image is not None:
        moving = grow(cell_change(image, state.image, scores.shape[:2], output_stride, std) > state.gate, state.grow)
        blended = np.float32(state.alpha) * scores + np.float32(1.0 - state.alpha) * state.scores
        out = np.where(moving[:, :, None], scores, blended).astype(np.float32)
    state.image, state.scores = image, out
    return out


__all__ = ["TemporalState", "check_mode", "carried_points", "cell_change", "grow", "smooth_scores"]
