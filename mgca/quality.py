"""The synthetic segmentation benchmark table: frozen CLIP features vs the trained decoder, pixel vs semantic units.

It is the one place on a machine without real CLIP weights where segmentation quality can be
measured end to end (captions in, masks out), so the embedded default ends with it. The four
cells are the paper's comparison in miniature: Table 3's MaskCLIP row against MGCA with pixel
units, and Tables 1-2's 36 adaptive semantic units.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import DecoderConfig
from .decoder import build_decoder
from .evalsets import open_dataset
from .inference import InferenceConfig, SegmentationPredictor
from .model import MGCA

ROWS = ("frozen CLIP features (MaskCLIP)", "MGCA decoder")


@dataclass
class BenchmarkTable:
    """mIoU (0-1) per (row, units) cell, with what produced it."""

    dataset: str
    images: int
    settings: dict[str, Any]
    units: tuple[int, ...]
    miou: dict[str, dict[int, float]] = field(default_factory=dict)
    per_class: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)

    def gain(self, units: int) -> float:
        """Trained decoder minus frozen features, in mIoU points (0-1 scale)."""
        return self.miou[ROWS[1]][units] - self.miou[ROWS[0]][units]

    def format(self) -> str:
        names = {u: "pixel units" if u == 0 else f"{u} units" for u in self.units}
        width = max(len(r) for r in ROWS)
        head = f"{'mIoU %':<{width}}  " + "  ".join(f"{names[u]:>11}" for u in self.units)
        lines = [f"{self.dataset}: {self.images} held-out images, short side {self.settings['short_side']}, "
                 f"window {self.settings['window']}/{self.settings['stride']}", head, "-" * len(head)]
        for row in ROWS:
            lines.append(f"{row:<{width}}  " + "  ".join(f"{100 * self.miou[row][u]:>11.2f}" for u in self.units))
        lines.append(f"{'decoder gain':<{width}}  " + "  ".join(f"{100 * self.gain(u):>+11.2f}" for u in self.units))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "images": self.images, "settings": self.settings, "units": list(self.units),
                "miou": {r: {str(u): v for u, v in cells.items()} for r, cells in self.miou.items()},
                "per_class_iou": {r: {str(u): v for u, v in cells.items()} for r, cells in self.per_class.items()}}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def frozen_baseline(model: MGCA) -> MGCA:
    """The same frozen CLIP without the decoder: MaskCLIP features, the paper's Table 3 row 1."""
    return MGCA(model.backbone, build_decoder(DecoderConfig(kind="none"), model.embed_dim)).eval()


def row_predictors(model: MGCA, settings: InferenceConfig, units: int, class_names,
                   device) -> dict[str, SegmentationPredictor]:
    """One predictor per table row (frozen features, trained decoder) at `units`, with the vocabulary set."""
    config = InferenceConfig(**{**settings.to_dict(), "units": units})
    predictors = {}
    for row, candidate in zip(ROWS, (frozen_baseline(model), model), strict=True):
        predictors[row] = SegmentationPredictor(candidate, config, device)
        predictors[row].set_classes(class_names)
    return predictors


def benchmark_table(model: MGCA, root: str | Path, settings: InferenceConfig, device: torch.device | str = "cpu",
                    units: tuple[int, ...] = (0, 36), dataset: str = "synthetic",
                    progress: bool = True) -> BenchmarkTable:
    """Evaluate frozen features and the trained decoder on `dataset` under `root` for each unit count."""
    from .evaluation import evaluate

    data = open_dataset(dataset, root)
    spec = data.spec
    table = BenchmarkTable(spec.name, len(data), {k: v for k, v in settings.to_dict().items() if k != "units"},
                           tuple(units))
    for row in ROWS:
        table.miou[row], table.per_class[row] = {}, {}
    for count in units:
        for row, predictor in row_predictors(model, settings, count, spec.prompt_classes, device).items():
            metrics, _ = evaluate(data, predictor.predict, progress=progress)
            table.miou[row][count] = float(metrics.miou)
            table.per_class[row][count] = {name: float(iou)
                                           for name, iou in zip(metrics.class_names, metrics.iou, strict=True)}
    return table
