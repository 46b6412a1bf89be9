"""Zero-shot evaluation as a library: a `predict(image) -> labels` callable over a labelled dataset.

    from mgca.evaluation import evaluate
    metrics, seconds = evaluate(open_dataset("voc21", root), predictor.predict)

`evaluate` accumulates the confusion matrix (`runtime.metrics`); `compare` runs two callables (e.g. an
exported engine and its PyTorch checkpoint) on the same images; `report` and `comparison_report` are the
text `mgca-eval` prints and the record it writes as JSON. Torch-free (numpy + tqdm), so evaluating an
exported engine works in the lean install; `mgca.cli.eval` only parses arguments and picks the callables.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from runtime.contract import CLIP_LOGIT_SCALE, GROUPVIT_TOP_K, TCL_MASK_BIAS, TCL_MASK_SCALE
from runtime.metrics import ConfusionMatrix, SegMetrics

PredictFn = Callable[[np.ndarray], np.ndarray]


def _count(dataset, limit: int | None) -> int:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        from .config import ConfigError

        raise ConfigError(f"limit must be a positive number of images (or None for all), got {limit!r}")
    return len(dataset) if limit is None else min(limit, len(dataset))


def evaluate(dataset, predict: PredictFn, limit: int | None = None, progress: bool = True) -> tuple[SegMetrics, float]:
    """Run `predict` over the dataset and accumulate the confusion matrix: (SegMetrics, seconds)."""
    spec = dataset.spec
    matrix = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    start = time.perf_counter()
    for index in tqdm(range(_count(dataset, limit)), desc=f"eval {spec.name}", unit="img", disable=not progress,
                      file=sys.stderr):
        sample = dataset[index]
        matrix.update(predict(sample.image), sample.label)
    return matrix.compute(spec.classes), time.perf_counter() - start


@dataclass
class Comparison:
    """Two predict callables on the same images: both metrics, the share of identical labels, both timings."""

    metrics: SegMetrics
    reference: SegMetrics
    agreement: float  # fraction of pixels with the same label
    seconds: float
    reference_seconds: float


def compare(dataset, predict: PredictFn, reference: PredictFn, limit: int | None = None,
            progress: bool = True) -> Comparison:
    """Both callables on every image, timed separately, with their label agreement."""
    spec = dataset.spec
    matrices = [ConfusionMatrix(spec.num_classes, spec.ignore_index) for _ in range(2)]
    seconds, same, total = [0.0, 0.0], 0, 0
    for index in tqdm(range(_count(dataset, limit)), desc=f"eval {spec.name} (engine + torch)", unit="img",
                      disable=not progress, file=sys.stderr):
        sample = dataset[index]
        outputs = []
        for slot, fn in enumerate((predict, reference)):
            start = time.perf_counter()
            outputs.append(np.asarray(fn(sample.image)))
            seconds[slot] += time.perf_counter() - start
            matrices[slot].update(outputs[slot], sample.label)
        same += int((outputs[0] == outputs[1]).sum())
        total += outputs[0].size
    return Comparison(matrices[0].compute(spec.classes), matrices[1].compute(spec.classes), same / max(total, 1),
                      seconds[0], seconds[1])


def side_by_side(metrics: SegMetrics, reference: SegMetrics, agreement: float, names: tuple[str, str]) -> str:
    """Per-class IoU of both runs (reference first), their difference, then both mIoUs and the pixel agreement."""
    def pct(value: float) -> str:
        return "-" if np.isnan(value) else f"{100 * value:.2f}"

    width = max([len("class")] + [len(n) for n in metrics.class_names])
    head = f"{'class':<{width}}  {names[1]:>9}  {names[0]:>9}  {'diff':>6}"
    lines = [head, "-" * len(head)]
    for name, a, b in zip(metrics.class_names, metrics.iou, reference.iou, strict=True):
        diff = "-" if np.isnan(a) or np.isnan(b) else f"{100 * (a - b):+.2f}"
        lines.append(f"{name:<{width}}  {pct(b):>9}  {pct(a):>9}  {diff:>6}")
    lines.append("-" * len(head))
    lines.append(f"{'mIoU':<{width}}  {pct(reference.miou):>9}  {pct(metrics.miou):>9}  "
                 f"{100 * (metrics.miou - reference.miou):+.2f}")
    lines.append(f"labels identical on {100 * agreement:.3f}% of pixels")
    return "\n".join(lines)


BACKGROUND_SOURCES = {
    "groupvit": "GroupViT group_vit_seg.py: per unit (or pixel) p_top5 * p_all of softmax(100 cos); background where "
                "the best < min(threshold, the image's best); top-5 by the image-average embedding",
    "tcl": f"TCL tcl_seg.py: constant background channel beside sigmoid({TCL_MASK_SCALE:g} cos "
           f"{TCL_MASK_BIAS:+g}) masks, argmax",
    "softmax": f"mgca's earlier rule: background where max softmax({CLIP_LOGIT_SCALE:g} cos) < threshold, at full "
               "resolution",
}


def protocol_record(spec, inference: dict[str, Any], background: float | None, templates: dict[str, Any],
                    dense_mode: str | None) -> dict[str, Any]:
    """Every protocol choice of a run, with where it comes from (docs/inference-contract.md, "Evaluation
    protocol"), for its JSON."""
    rule = inference["bg_rule"]
    return {
        "resize": {"short_side": inference["short_side"], "long_side": inference["long_side"],
                   "rounding": "int(side * scale + 0.5)", "interpolation": "cv2 bilinear on uint8",
                   "source": "mmseg 0.27 Resize(keep_ratio=True), img_scale=(long_side, short_side), as TCL/GroupViT"},
        "windows": {"window": inference["window"], "stride": inference["stride"], "padding": inference["padding"],
                    "placement": "mmseg slide_inference, starts moved back onto the output-stride grid"
                    if inference["padding"] == "crop" else "mmseg slide_inference on the image padded to the "
                    "output stride", "stitching": "window embeddings averaged, L2-normalised (MGCA)"},
        "units": {"units": inference["units"], "scope": inference["unit_scope"], "source": "paper 3.3"},
        "background": None if background is None else {
            "rule": rule, "value": background, "source": BACKGROUND_SOURCES[rule],
            **({"top_k": GROUPVIT_TOP_K, "logit_scale": CLIP_LOGIT_SCALE} if rule == "groupvit" else {})},
        "templates": templates,
        "pamr": {"iterations": inference["pamr"], "dilations": list(inference["pamr_dilations"]),
                 "where": "stitched score grid (1/os of the resized image), before the background rule"}
        if inference["pamr"] else None,
        "dense_mode": dense_mode,
        "classes": f"{spec.class_source} of {spec.name} ({spec.num_classes})",
        "labels": {"reduce_zero_label": spec.reduce_zero_label, "ignore_index": spec.ignore_index},
        "metric": "mmseg intersect_and_union (mIoU over classes present in labels or predictions)",
    }


def settings_line(inference: dict[str, Any]) -> str:
    """The inference settings of a run in one line of its report."""
    background = (f", background {inference['bg_rule']} {inference['background_threshold']}"
                  if inference.get("background_threshold") is not None else "")
    pamr = f", PAMR {inference['pamr']}" if inference.get("pamr") else ""
    temporal = f", temporal {inference['temporal']}" if inference.get("temporal", "off") != "off" else ""
    return (f"units {inference['units'] or 'pixel'} ({inference['unit_scope']}), short side {inference['short_side']}"
            f" (long side <= {inference.get('long_side') or 'any'}), window {inference['window']}/"
            f"{inference['stride']} ({inference.get('padding')} padding), templates {inference.get('templates')}"
            f"{background}{pamr}{temporal}")


def _source_lines(info: dict[str, Any]) -> list[str]:
    """Where an engine's settings come from and which ones the user overrode (none for the PyTorch path)."""
    source = info.get("settings")
    if not source:
        return []
    given = ", ".join(f"{name} {','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
                      for name, value in source["overridden"].items())
    return [f"settings: {source['from']}, " + (f"overridden: {given}" if given else "none overridden")]


def _dataset_line(dataset, num_images: int) -> str:
    return (f"{dataset.spec.title}: {num_images} of {len(dataset)} images from {dataset.root} "
            f"({dataset.layout.name} layout)")


LAYOUT_NOTES = {
    "coco-instances": "COCO-Object labels rasterised from instances JSON (mgca.evalsets.coco): approximate, not "
                      "the COCO-Stuff-derived maps TCL/GroupViT score (docs/inference-contract.md, Evaluation "
                      "protocol)",
}


def _record(dataset, seconds: float, info: dict[str, Any], metrics: SegMetrics) -> dict[str, Any]:
    record = {"dataset": dataset.spec.name, "root": str(dataset.root), "layout": dataset.layout.name,
              "seconds": round(seconds, 3), **info, **metrics.to_dict()}
    if dataset.layout.name in LAYOUT_NOTES and isinstance(record.get("protocol"), dict):
        record["protocol"] = {**record["protocol"], "labels": {**record["protocol"]["labels"],
                                                               "source": LAYOUT_NOTES[dataset.layout.name]}}
    return record


def report(dataset, info: dict[str, Any], metrics: SegMetrics, seconds: float) -> tuple[str, dict[str, Any]]:
    """(the printed report, the JSON record) of one evaluation; `info` describes the model and its settings."""
    lines = [_dataset_line(dataset, metrics.num_images),
             f"model: {info['backbone']['arch']} ({info['backbone']['source']}), decoder {info['decoder']}, "
             + settings_line(info["inference"]),
             *_source_lines(info),
             metrics.table(),
             f"time: {seconds:.1f} s, {seconds / max(1, metrics.num_images):.2f} s/image on {info['device']}"]
    return "\n".join(lines), _record(dataset, seconds, info, metrics)


def comparison_report(dataset, info: dict[str, Any], reference_info: dict[str, Any], reference_label: str,
                      comparison: Comparison) -> tuple[str, dict[str, Any]]:
    """(the printed report, the JSON record) of an engine (`info`) compared with its PyTorch checkpoint."""
    metrics, images = comparison.metrics, max(1, comparison.metrics.num_images)
    ratio = comparison.seconds / max(comparison.reference_seconds, 1e-9)
    lines = [_dataset_line(dataset, metrics.num_images),
             f"engine: {info['engine']} on {info['device']} | torch: {reference_label} on {reference_info['device']}",
             settings_line(info["inference"]),
             *_source_lines(info),
             side_by_side(metrics, comparison.reference, comparison.agreement, ("engine", "torch")),
             f"time: engine {comparison.seconds / images:.3f} s/image, torch "
             f"{comparison.reference_seconds / images:.3f} "
             f"s/image (engine/torch {ratio:.2f}x)"]
    record = {**_record(dataset, comparison.seconds, info, metrics),
              "torch": {"seconds": round(comparison.reference_seconds, 3), "checkpoint": reference_label,
                        **comparison.reference.to_dict()},
              "label_agreement": comparison.agreement}
    return "\n".join(lines), record


__all__ = ["PredictFn", "evaluate", "Comparison", "compare", "side_by_side", "report", "comparison_report",
           "protocol_record"]
