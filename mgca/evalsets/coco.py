"""COCO instance annotations -> COCO-Object label maps, without pycocotools (the `coco-instances` fallback).

TCL and GroupViT score COCO-Object on maps converted from COCO-Stuff 164k's pixel maps (things 1..80; stuff
and unlabelled pixels 0). Those things come from the instance annotations through cocostuffapi's
`cocoSegmentationToSegmentationMap`, whose defaults this follows as far as it can be checked here: crowd
annotations left out (`includeCrowd=False`: their pixels end up stuff or unlabelled, i.e. background), larger
objects painted first so smaller ones stay on top (equal areas keep the json order). Polygons are rasterised by
pixel centre (pycocotools' own rasteriser differs on boundary pixels); RLE (uncompressed lists and COCO's
compressed strings) is decoded here. The COCO-Stuff maps themselves were not available to compare with:
`benchmarks/coco_object_labels.py` measures how much each choice moves the labels (docs/inference-contract.md,
"Evaluation protocol").
0 is background, 1..80 the categories in sorted id order.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def rle_counts_from_string(encoded: str) -> list[int]:
    """Decode COCO's compressed RLE string (LEB128-like, 6 bits a character, deltas from run i-2)."""
    counts: list[int] = []
    pos = 0
    while pos < len(encoded):
        value, shift, more = 0, 0, True
        while more:
            char = ord(encoded[pos]) - 48
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            pos += 1
            shift += 1
            if not more and char & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """(h, w) bool mask of an RLE dict {'size': [h, w], 'counts': list or str}; runs are column-major."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs = np.asarray(rle_counts_from_string(counts) if isinstance(counts, str) else counts, dtype=np.int64)
    if runs.sum() != height * width or (runs < 0).any():
        raise ValueError(f"RLE runs sum to {int(runs.sum())}, expected {height}x{width}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape(width, height).T


def polygon_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """(h, w) bool mask of COCO polygons: the pixels whose centres lie inside (pycocotools' area rule;
    cv2.fillPoly would also take every pixel the outline touches, one pixel too many per side)."""
    from matplotlib.path import Path as PolygonPath

    mask = np.zeros((height, width), dtype=bool)
    for poly in polygons:
        points = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(points) < 3:
            continue
        x0, y0 = (max(int(np.floor(v)), 0) for v in points.min(axis=0))
        x1, y1 = min(int(np.ceil(points[:, 0].max())), width), min(int(np.ceil(points[:, 1].max())), height)
        if x1 <= x0 or y1 <= y0:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1]
        centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
        mask[y0:y1, x0:x1] |= PolygonPath(points).contains_points(centres).reshape(ys.shape)
    return mask


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The mask of one annotation's `segmentation` field, whichever of the three encodings it uses."""
    if isinstance(segmentation, list):
        return polygon_mask(segmentation, height, width)
    mask = decode_rle(segmentation)
    if mask.shape != (height, width):
        raise ValueError(f"RLE size {mask.shape} differs from the image size {(height, width)}")
    return mask


def coco_object_label(height: int, width: int, annotations: Sequence[dict[str, Any]],
                      label_of: dict[int, int] | None = None, include_crowd: bool = False) -> np.ndarray:
    """(h, w) uint8 COCO-Object map: objects painted largest first, 0 where none lies; crowd annotations
    (iscrowd=1) only with `include_crowd` (mgca before issue 20 painted them).

    `label_of` maps category ids to labels; None means `category_id` already is the label.
    """
    label = np.zeros((height, width), dtype=np.uint8)
    chosen = [a for a in annotations if include_crowd or not a.get("iscrowd", 0)]
    for ann in sorted(chosen, key=lambda a: -float(a.get("area", 0.0))):
        category = int(ann["category_id"])
        label[annotation_mask(ann["segmentation"], height,
                              width)] = category if label_of is None else label_of[category]
    return label
