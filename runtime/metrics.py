"""Semantic segmentation metrics over a streaming confusion matrix (MMSegmentation's definitions).

IoU_k = TP / (TP + FP + FN) over all images; a class with an empty union (never in the labels nor
predicted) is NaN and left out of mIoU. Pixels labelled `ignore_index` are never counted.
aAcc = correct pixels / labelled pixels.

The one mIoU of the project, in numpy: `mgca-eval` (PyTorch or an exported engine), the int8 report of
`calibration` and the runtime's users all count with `ConfusionMatrix`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class SegMetrics:
    """Per-class IoU/accuracy (fractions, NaN where undefined) and the summary numbers."""

    class_names: tuple[str, ...]
    iou: np.ndarray
    acc: np.ndarray
    aacc: float
    num_images: int
    num_pixels: int

    @property
    def miou(self) -> float:
        return _defined_mean(self.iou)

    @property
    def macc(self) -> float:
        return _defined_mean(self.acc)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, in percent like the paper's tables; undefined values are null."""
        return {
            "mIoU": _pct(self.miou), "mAcc": _pct(self.macc), "aAcc": _pct(self.aacc),
            "num_images": self.num_images, "num_pixels": self.num_pixels, "unit": "percent",
            "per_class": {name: {"IoU": _pct(i), "Acc": _pct(a)} for name, i,
                          a in zip(self.class_names, self.iou, self.acc, strict=True)},
        }

    def save_json(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**(extra or {}), **self.to_dict()}, indent=2) + "\n")
        return path

    def table(self) -> str:
        """Per-class IoU/Acc then mIoU, mAcc, aAcc and the image count, as fixed-width text."""
        width = max([len("class")] + [len(n) for n in self.class_names])
        lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]
        lines += [f"{name:<{width}}  {_fmt(i):>6}  {_fmt(a):>6}" for name, i,
                  a in zip(self.class_names, self.iou, self.acc, strict=True)]
        lines += ["-" * (width + 16),
                  f"mIoU {_fmt(self.miou)}  mAcc {_fmt(self.macc)}  aAcc {_fmt(self.aacc)}  "
                  f"({self.num_images} images, {self.num_pixels} labelled pixels)"]
        return "\n".join(lines)


class ConfusionMatrix:
    """Accumulates (label, prediction) pixel counts image by image; rows are labels, columns predictions."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.num_images = 0

    def update(self, prediction: np.ndarray, label: np.ndarray) -> None:
        """Add one image; values outside 0..K-1 (other than ignore in the label) are a caller bug."""
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {prediction.shape} and label {label.shape} differ in shape")
        valid = label != self.ignore_index
        gt, pred = label[valid].astype(np.int64), prediction[valid].astype(np.int64)
        for what, values in (("label", gt), ("prediction", pred)):
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                raise ValueError(f"{what} holds values outside 0..{self.num_classes - 1} (min {values.min()}, "
                                 f"max {values.max()})")
        counts = np.bincount(gt * self.num_classes + pred, minlength=self.num_classes ** 2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)
        self.num_images += 1

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix (e.g. from another process) into this one."""
        self.matrix += other.matrix
        self.num_images += other.num_images

    def compute(self, class_names: Sequence[str] | None = None) -> SegMetrics:
        names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(self.num_classes))
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        tp = np.diag(self.matrix).astype(np.float64)
        label_area = self.matrix.sum(axis=1).astype(np.float64)
        iou = iou_from_areas(tp, label_area, self.matrix.sum(axis=0))
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = np.where(label_area > 0, tp / label_area, np.nan)
        total = int(label_area.sum())
        return SegMetrics(names, iou, acc, float(tp.sum() / total) if total else math.nan, self.num_images, total)


def iou_from_areas(intersection: np.ndarray, label_area: np.ndarray, prediction_area: np.ndarray) -> np.ndarray:
    """Per-class IoU from pixel areas: intersection / (label + prediction - intersection), float64, NaN where the
    union is empty. The one IoU formula: the confusion matrix here and `mgca.quality.ClassAreas` both call it."""
    inter = np.asarray(intersection, dtype=np.float64)
    union = label_area + prediction_area - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def _defined_mean(values: np.ndarray) -> float:
    """Mean over the defined (non-NaN) entries; NaN when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def _pct(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(100.0 * float(value), 4)


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{100.0 * value:.2f}"
