"""Segmentation quality on the synthetic benchmark: frozen CLIP features against trained decoders.

It is the one place on a machine without real CLIP weights where segmentation quality can be
measured end to end (captions in, masks out). The cells are the paper's comparisons in miniature:
Table 3's MaskCLIP row against MGCA with pixel units, Tables 1-2's 36 adaptive semantic units, and
its two groups of benchmarks: objects only (`synthetic`, backdrop ignored, like VOC20) and objects
plus stuff (`synthetic-stuff`, every pixel scored, like Context59).

Every image is embedded once per model; all protocols (vocabularies) and unit counts are then
scored from that one embedding. Per-image class areas are kept, so a difference between two
models gets a paired bootstrap interval over images.
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from runtime.metrics import iou_from_areas

from .config import DecoderConfig
from .decoder import build_decoder
from .evalsets import open_dataset
from .inference import InferenceConfig, SegmentationPredictor
from .model import MGCA

FROZEN = "frozen CLIP features (MaskCLIP)"
DECODER = "MGCA decoder"
PROTOCOLS = {"synthetic": "objects", "synthetic-stuff": "objects + stuff"}  # dataset spec -> protocol name


def frozen_baseline(model: MGCA) -> MGCA:
    """The same frozen CLIP without the decoder: MaskCLIP features, the paper's Table 3 row 1."""
    return MGCA(model.backbone, build_decoder(DecoderConfig(kind="none"), model.embed_dim)).eval()


@dataclass
class ClassAreas:
    """Per-image pixel areas of each class in one cell (model, protocol, units): all that mIoU needs.

    Rows are images; IoU_k = Σ intersection / Σ (label + prediction - intersection) over the chosen
    images, NaN where a class is in neither (the mIoU of `runtime.metrics.ConfusionMatrix`).
    """

    num_classes: int
    intersection: list[np.ndarray] = field(default_factory=list)
    label: list[np.ndarray] = field(default_factory=list)
    prediction: list[np.ndarray] = field(default_factory=list)
    _stack: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False,
                                                                     compare=False)

    def add(self, prediction: np.ndarray, label: np.ndarray, ignore_index: int = 255) -> None:
        valid = label != ignore_index
        gt, pred = label[valid], prediction[valid]
        k = self.num_classes
        self.intersection.append(np.bincount(gt[gt == pred], minlength=k))
        self.label.append(np.bincount(gt, minlength=k))
        self.prediction.append(np.bincount(pred, minlength=k))
        self._stack = None

    def stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(intersection, label, prediction) as (images, classes) arrays, stacked once and kept until the next
        `add`: a bootstrap asks for `iou` of a thousand resamples of the same images."""
        if self._stack is None or len(self._stack[0]) != len(self.intersection):
            self._stack = (np.asarray(self.intersection), np.asarray(self.label), np.asarray(self.prediction))
        return self._stack

    def iou(self, images: np.ndarray | None = None) -> np.ndarray:
        pick = slice(None) if images is None else images
        intersection, label, prediction = self.stacked()
        return iou_from_areas(intersection[pick].sum(0), label[pick].sum(0), prediction[pick].sum(0))

    def miou(self, images: np.ndarray | None = None) -> float:
        iou = self.iou(images)
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan


def paired_bootstrap(base: ClassAreas | Sequence[ClassAreas], other: ClassAreas | Sequence[ClassAreas],
                     samples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of miou(other) - miou(base) over images resampled with replacement (same draw for both).

    Either side may be several cells over the same images (decoder seeds): its mIoU is then their mean.
    """
    base, other = ([base] if isinstance(base, ClassAreas) else list(base)), (
        [other] if isinstance(other, ClassAreas) else list(other))
    count = len(base[0].intersection)
    rng = np.random.default_rng(seed)

    def mean_miou(cells: list[ClassAreas], pick: np.ndarray) -> float:
        return float(np.mean([cell.miou(pick) for cell in cells]))

    draws = [mean_miou(other, pick) - mean_miou(base, pick) for pick in rng.integers(0, count, (samples, count))]
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return float(low), float(high)


CellKey = tuple[str, str, int]  # (model name, dataset spec, units)


def score_models(models: Mapping[str, MGCA], root: str | Path, settings: InferenceConfig,
                 units: Sequence[int] = (0, 36), protocols: Sequence[str] = tuple(PROTOCOLS),
                 device: torch.device | str = "cpu", limit: int | None = None,
                 progress: bool = True) -> dict[CellKey, ClassAreas]:
    """Class areas of every (model, protocol, units) cell on the synthetic benchmark under `root`.

    Each image is embedded once per model (image-scope units) and its units assigned once per unit count;
    every protocol's vocabulary is scored from that embedding and those units.
    """
    datasets = {name: open_dataset(name, root) for name in protocols}
    count = min(len(d) for d in datasets.values()) if limit is None else limit
    config = InferenceConfig(**{**settings.to_dict(), "unit_scope": "image"})
    predictors = {}
    for name, model in models.items():
        predictors[name] = SegmentationPredictor(model, config, device)
        for dataset in datasets.values():
            predictors[name].set_classes(dataset.spec.prompt_classes)  # embed each vocabulary once, now
    cells = {(name, protocol, u): ClassAreas(datasets[protocol].spec.num_classes)
             for name in models for protocol in protocols for u in units}
    for index in tqdm(range(count), desc="score synthetic benchmark", unit="img", disable=not progress,
                      file=sys.stderr):
        samples = {protocol: dataset[index] for protocol, dataset in datasets.items()}
        image = next(iter(samples.values())).image
        for name, predictor in predictors.items():
            pre, embeddings = predictor.embed(image)
            assigned = {u: predictor.image_units(embeddings, u) for u in units}  # the same for every vocabulary
            for protocol, sample in samples.items():
                spec = datasets[protocol].spec
                predictor.set_classes(spec.prompt_classes)
                for u in units:
                    labels = predictor.labels_from_embedding(pre, embeddings, u, assigned[u])
                    cells[(name, protocol, u)].add(labels, sample.label, spec.ignore_index)
    return cells


def unit_name(units: int) -> str:
    return "pixel units" if units == 0 else f"{units} units"


@dataclass
class QualityTable:
    """mIoU (0-1) of frozen features and the trained decoder per protocol and unit count, with the gain's interval."""

    images: int
    settings: dict[str, Any]
    units: tuple[int, ...]
    protocols: tuple[str, ...]
    miou: dict[str, dict[str, dict[int, float]]]  # row -> protocol -> units -> mIoU
    gain_interval: dict[str, dict[int, tuple[float, float]]]  # protocol -> units -> 95% bootstrap interval
    per_class: dict[str, dict[str, dict[int, dict[str, float]]]]

    @classmethod
    def from_cells(cls, cells: Mapping[CellKey, ClassAreas], settings: InferenceConfig,
                   class_names: Mapping[str, Sequence[str]]) -> QualityTable:
        protocols = tuple(dict.fromkeys(p for _, p, _ in cells))
        units = tuple(dict.fromkeys(u for _, _, u in cells))
        images = len(next(iter(cells.values())).intersection)
        miou = {row: {p: {u: cells[(row, p, u)].miou() for u in units} for p in protocols} for row in (FROZEN, DECODER)}
        interval = {p: {u: paired_bootstrap(cells[(FROZEN, p, u)], cells[(DECODER, p, u)]) for u in units}
                    for p in protocols}
        per_class = {row: {p: {u: {n: float(v) for n, v in zip(class_names[p], cells[(row, p, u)].iou(), strict=True)}
                               for u in units} for p in protocols} for row in (FROZEN, DECODER)}
        recorded = {k: v for k, v in settings.to_dict().items() if k not in ("units", "unit_scope")}
        return cls(images, recorded, units, protocols, miou, interval, per_class)

    def gain(self, protocol: str, units: int) -> float:
        """Trained decoder minus frozen features, in mIoU (0-1 scale)."""
        return self.miou[DECODER][protocol][units] - self.miou[FROZEN][protocol][units]

    def format(self) -> str:
        width = max(len(FROZEN), len("decoder gain (95% interval)"))
        lines = [f"synthetic benchmark: {self.images} held-out images, short side {self.settings['short_side']}, "
                 f"window {self.settings['window']}/{self.settings['stride']}, mIoU %"]
        for protocol in self.protocols:
            head = f"{PROTOCOLS.get(protocol, protocol):<{width}}  " + "  ".join(f"{unit_name(u):>19}"
                                                                                  for u in self.units)
            lines += ["", head, "-" * len(head)]
            for row in (FROZEN, DECODER):
                lines.append(f"{row:<{width}}  " + "  ".join(f"{100 * self.miou[row][protocol][u]:>19.2f}"
                                                              for u in self.units))
            cells = []
            for u in self.units:
                low, high = self.gain_interval[protocol][u]
                cells.append(f"{100 * self.gain(protocol, u):+.2f} [{100 * low:+.1f}, {100 * high:+.1f}]".rjust(19))
            lines.append(f"{'decoder gain (95% interval)':<{width}}  " + "  ".join(cells))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "settings": self.settings, "units": list(self.units),
                "protocols": {p: PROTOCOLS.get(p, p) for p in self.protocols},
                "miou": {r: {p: {str(u): v for u, v in c.items()} for p, c in ps.items()}
                         for r, ps in self.miou.items()},
                "gain": {p: {str(u): self.gain(p, u) for u in self.units} for p in self.protocols},
                "gain_95_interval": {p: {str(u): list(v) for u, v in c.items()} for p, c in self.gain_interval.items()},
                "per_class_iou": {r: {p: {str(u): v for u, v in c.items()} for p, c in ps.items()}
                                  for r, ps in self.per_class.items()}}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def quality_table(model: MGCA, root: str | Path, settings: InferenceConfig, units: Sequence[int] = (0, 36),
                  device: torch.device | str = "cpu", progress: bool = True) -> QualityTable:
    """Frozen features against `model`'s decoder on both protocols of the synthetic benchmark under `root`."""
    cells = score_models({FROZEN: frozen_baseline(model), DECODER: model}, root, settings, units, tuple(PROTOCOLS),
                         device, progress=progress)
    names = {p: open_dataset(p, root).spec.classes for p in PROTOCOLS}
    return QualityTable.from_cells(cells, settings, names)
