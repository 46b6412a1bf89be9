"""Video segmentation metrics: per-frame mIoU, VSPW's video consistency (VC8, VC16), flicker and flow-warped
temporal consistency (TC), accumulated frame by frame with memory bounded by n frames.

- mIoU: `runtime.metrics.ConfusionMatrix` over every frame, as for images.
- VC_n (VSPW, Miao et al. 2021, `VC_perclip.py`): for each run of n consecutive frames of a clip, among the pixels
  whose ground truth stays the same over the n frames, the share whose prediction stays the same too; averaged over
  the runs of a clip, then over clips. Prediction correctness does not enter. Pixels ignored (`ignore_index`) in any
  of the n frames are left out (VSPW's code counts them as any other label).
- flicker: over consecutive frame pairs, among the pixels whose ground truth does not change (and is not ignored),
  the share whose predicted label changes. Without labels (real footage) every pixel counts: the share of pixels
  whose predicted label changes from one frame to the next.
- TC (Liu et al. 2020, "Efficient semantic video segmentation with per-frame inference"): for each consecutive pair,
  the mIoU between the prediction at t and the prediction at t+1 warped back to t by the optical flow from frame t
  to frame t+1 (OpenCV's DIS flow, nearest-label sampling; pixels whose flow leaves the frame are left out), over
  the classes in either map; averaged over pairs. Needs no labels.

All values are fractions in [0, 1]. Torch-free: the lean runtime evaluates exported engines with it.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import ConfusionMatrix, iou_from_areas

VC_LENGTHS = (8, 16)


def optical_flow(frame: np.ndarray, following: np.ndarray) -> np.ndarray:
    """H x W x 2 float32 flow (dx, dy) from `frame` to `following` (RGB uint8), by OpenCV's DIS optical flow (medium
    preset): pixel (x, y) of `frame` is at (x + dx, y + dy) in `following`."""
    import cv2

    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in (frame, following)]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(gray[0], gray[1], None)


def warp_back(labels: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels of frame t+1 brought back to frame t's pixels, the mask of pixels whose flow stays in the frame): pixel
    (x, y) takes the label at the nearest pixel to (x + dx, y + dy)."""
    height, width = labels.shape
    ys, xs = np.mgrid[0:height, 0:width]
    tx = np.rint(xs + flow[..., 0]).astype(np.int64)
    ty = np.rint(ys + flow[..., 1]).astype(np.int64)
    inside = (tx >= 0) & (tx < width) & (ty >= 0) & (ty < height)
    warped = labels[np.clip(ty, 0, height - 1), np.clip(tx, 0, width - 1)]
    return warped, inside


def pair_miou(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> float:
    """mIoU between two label maps (either may stand for the truth: IoU is symmetric), over the classes present in
    either, pixels outside `valid` left out; NaN when no pixel is valid."""
    if valid is not None:
        a, b = a[valid], b[valid]
    a, b = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    if a.size == 0:
        return math.nan
    count = int(max(a.max(), b.max())) + 1
    inter = np.bincount(a[a == b], minlength=count)
    iou = iou_from_areas(inter, np.bincount(a, minlength=count), np.bincount(b, minlength=count))
    return float(np.nanmean(iou))


def temporal_consistency(prediction: np.ndarray, following: np.ndarray, flow: np.ndarray) -> float:
    """TC of one pair: mIoU between `prediction` (frame t) and `following` (frame t+1) warped back by `flow`."""
    warped, inside = warp_back(following, flow)
    return pair_miou(prediction, warped, inside)


def consistent_share(predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                     ignore_index: int = 255) -> tuple[int, int]:
    """(pixels whose label and prediction both stay the same over the frames, pixels whose label does, ignored
    pixels left out): one run of VC_n."""
    first_label, first_pred = labels[0], predictions[0]
    label_same = first_label != ignore_index
    pred_same = np.ones_like(label_same)
    for label, pred in zip(labels[1:], predictions[1:], strict=True):
        label_same &= label == first_label
        pred_same &= pred == first_pred
    return int((label_same & pred_same).sum()), int(label_same.sum())


@dataclass(frozen=True)
class VideoMetrics:
    """The figures of a set of clips (fractions in [0, 1]; NaN where undefined) and what they were counted over."""

    miou: float
    vc8: float
    vc16: float
    flicker: float
    tc: float
    sequences: int
    frames: int
    labelled: bool

    def to_dict(self) -> dict[str, Any]:
        def value(v: float) -> float | None:
            return None if math.isnan(v) else round(float(v), 6)
        return {"miou": value(self.miou), "vc8": value(self.vc8), "vc16": value(self.vc16),
                "flicker": value(self.flicker), "tc": value(self.tc), "sequences": self.sequences,
                "frames": self.frames, "unit": "fraction"}


class VideoScore:
    """Accumulates the video metrics clip by clip, frame by frame: `start()` a clip, `update()` each frame in order.

    Keeps the last max(VC_LENGTHS) frames' labels and predictions: memory bounded by the clip's resolution, not its
    length. Labels None throughout (real footage) gives TC and label-free flicker only."""

    def __init__(self, num_classes: int | None = None, ignore_index: int = 255,
                 vc_lengths: tuple[int, ...] = VC_LENGTHS):
        self.confusion = ConfusionMatrix(num_classes, ignore_index) if num_classes else None
        self.ignore_index, self.vc_lengths = ignore_index, vc_lengths
        self.vc_clips: dict[int, list[float]] = {n: [] for n in vc_lengths}  # per clip: mean share over its runs
        self.flicker_counts = [0, 0]  # changed, counted
        self.tc_pairs: list[float] = []
        self.sequences = self.frames = 0
        self.labelled = False
        self._window: deque[tuple[np.ndarray, np.ndarray | None]] = deque(maxlen=max(vc_lengths))
        self._runs: dict[int, list[float]] = {n: [] for n in vc_lengths}
        self._open = False

    def start(self) -> None:
        """Begin a clip (ends the one before)."""
        self._finish()
        self._open = True
        self.sequences += 1

    def _finish(self) -> None:
        if self._open:
            for n, runs in self._runs.items():
                if runs:
                    self.vc_clips[n].append(float(np.mean(runs)))
        self._window.clear()
        self._runs = {n: [] for n in self.vc_lengths}
        self._open = False

    def update(self, prediction: np.ndarray, label: np.ndarray | None = None, flow: np.ndarray | None = None) -> None:
        """Add the clip's next frame: its predicted labels, its ground truth (or None) and the optical flow from the
        previous frame to this one (`optical_flow(previous, frame)`, computed once for any number of predictions of
        the same frames; None: no TC for this pair)."""
        if not self._open:
            self.start()
        if label is not None and label.shape != prediction.shape:
            raise ValueError(f"prediction {prediction.shape} and label {label.shape} differ in shape")
        self.frames += 1
        if label is not None:
            self.labelled = True
            if self.confusion is not None:
                self.confusion.update(prediction, label)
        if self._window:
            before, before_label = self._window[-1]
            changed = prediction != before
            if label is not None and before_label is not None:
                counted = (label == before_label) & (label != self.ignore_index)
            else:
                counted = np.ones_like(changed)
            self.flicker_counts[0] += int((changed & counted).sum())
            self.flicker_counts[1] += int(counted.sum())
            if flow is not None:
                self.tc_pairs.append(temporal_consistency(before, prediction, flow))
        self._window.append((prediction, label))
        if label is not None:
            for n in self.vc_lengths:
                if len(self._window) >= n:
                    recent = list(self._window)[-n:]
                    if all(lab is not None for _, lab in recent):
                        same, counted = consistent_share([p for p, _ in recent], [lab for _, lab in recent],
                                                         self.ignore_index)
                        if counted:
                            self._runs[n].append(same / counted)

    def compute(self, class_names: Sequence[str] | None = None) -> VideoMetrics:
        self._finish()
        miou = self.confusion.compute(class_names).miou if self.confusion is not None and self.labelled else math.nan
        vc = {n: float(np.mean(clips)) if clips else math.nan for n, clips in self.vc_clips.items()}
        changed, counted = self.flicker_counts
        return VideoMetrics(miou, vc.get(8, math.nan), vc.get(16, math.nan),
                            changed / counted if counted else math.nan,
                            float(np.nanmean(self.tc_pairs)) if self.tc_pairs else math.nan,
                            self.sequences, self.frames, self.labelled)


__all__ = ["VC_LENGTHS", "optical_flow", "warp_back", "pair_miou", "temporal_consistency", "consistent_share",
           "VideoMetrics", "VideoScore"]
