"""From window embeddings to label maps in numpy/OpenCV (docs/inference-contract.md, "Sliding windows" from the
stitching on, "Adaptive semantic units" and "Scores to labels"); `preprocess.py` makes the windows.

stitch (valid parts averaged, L2-normalised) -> units (per window before stitching, or on the stitched map)
-> cosine scores -> bilinear to the padded size, crop, bilinear to the input size -> argmax (+ background).
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from .contract import CLIP_LOGIT_SCALE, InferenceSettings
from .preprocess import Prepared
from .units import pixel_scores, pool_units

CV_MAX_CHANNELS = 512  # cv2.resize handles at most this many channels at once
# Above this size the full-resolution K x H x W score stack is not materialised for plain labels
# (19 Cityscapes classes at 1024 x 2048 = 160 MB still take the faster stacked path).
FULL_RES_BUDGET_BYTES = 256 << 20

Assign = Callable[[np.ndarray, np.ndarray], np.ndarray]


def l2_normalize(x: np.ndarray, axis: int) -> np.ndarray:
    """x / max(||x||, 1e-12), as torch.nn.functional.normalize."""
    norm = np.sqrt((x * x).sum(axis=axis, keepdims=True))
    return x / np.maximum(norm, np.float32(1e-12))


def stitch(embeddings: np.ndarray, prepared: Prepared, output_stride: int) -> np.ndarray:
    """Window embeddings (n x C x g x g) -> image map C x H''/os x W''/os: valid parts averaged, then L2-normalised."""
    height, width = (s // output_stride for s in prepared.padded_hw)
    channels = embeddings.shape[1]
    if len(prepared.boxes) == 1:
        y1, y2, x1, x2 = (v // output_stride for v in prepared.boxes[0])
        total = np.array(embeddings[0, :, :y2 - y1, :x2 - x1], dtype=np.float32)  # count is 1 everywhere
    else:
        total = np.zeros((channels, height, width), dtype=np.float32)
        count = np.zeros((height, width), dtype=np.float32)
        for emb, box in zip(embeddings, prepared.boxes, strict=True):
            y1, y2, x1, x2 = (v // output_stride for v in box)
            total[:, y1:y2, x1:x2] += emb[:, :y2 - y1, :x2 - x1]
            count[y1:y2, x1:x2] += 1.0
        total /= count
    return l2_normalize(total, axis=0)


def window_units(windows: np.ndarray, prepared: Prepared, units: int, output_stride: int, assign: Assign) -> np.ndarray:
    """Scope "window": each window's valid embeddings replaced by their unit embeddings, before stitching."""
    out = np.array(windows, dtype=np.float32, copy=True)
    for emb, (y1, y2, x1, x2) in zip(out, prepared.boxes, strict=True):
        h, w = (y2 - y1) // output_stride, (x2 - x1) // output_stride
        x = np.ascontiguousarray(emb[:, :h, :w].reshape(emb.shape[0], -1).T)
        pooled = pool_units(x, h, w, units, assign)
        if pooled is not None:
            unit_emb, assignment = pooled
            emb[:, :h, :w] = unit_emb[assignment].T.reshape(-1, h, w)
    return out


def image_scores(windows: np.ndarray, prepared: Prepared, text: np.ndarray, settings: InferenceSettings,
                 output_stride: int, assign: Assign) -> np.ndarray:
    """One image's window embeddings -> h x w x K cosine scores on the stitched grid, units as `settings` say."""
    if settings.unit_scope == "window":
        stitched = stitch(window_units(windows, prepared, settings.units, output_stride, assign), prepared,
                          output_stride)
        units = 0  # units already applied per window
    else:
        stitched = stitch(windows, prepared, output_stride)
        units = settings.units
    channels, height, width = stitched.shape
    x = np.ascontiguousarray(stitched.reshape(channels, -1).T)
    return pixel_scores(x, height, width, units, text, assign)


def resize_channels(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (align_corners=False, like torch's F.interpolate) resize of an h x w x K float32 stack."""
    if maps.shape[:2] == (height, width):
        return maps
    parts = []
    for start in range(0, maps.shape[2], CV_MAX_CHANNELS):
        part = cv2.resize(np.ascontiguousarray(maps[:, :, start:start + CV_MAX_CHANNELS]), (width, height),
                          interpolation=cv2.INTER_LINEAR)
        parts.append(part[:, :, None] if part.ndim == 2 else part)
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)


def _running_argmax(up: np.ndarray, height: int, width: int) -> np.ndarray:
    """argmax over K of resize_channels(up, height, width) without holding the H x W x K stack: resize one
    channel at a time and keep the running best value and index. Strict `>` keeps the first maximum, as
    argmax does (ties go to the lowest class index). ~1.6x slower than the stacked path, O(H x W) memory."""
    best = np.full((height, width), -np.inf, dtype=np.float32)
    labels = np.zeros((height, width), dtype=np.int32)
    mask = np.empty((height, width), dtype=bool)
    for k in range(up.shape[2]):
        channel = cv2.resize(np.ascontiguousarray(up[:, :, k]), (width, height), interpolation=cv2.INTER_LINEAR)
        np.greater(channel, best, out=mask)
        np.copyto(best, channel, where=mask)
        np.copyto(labels, np.int32(k), where=mask)
    return labels


def scores_to_labels(scores: np.ndarray, prepared: Prepared, background_threshold: float | None = None,
                     keep_scores: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """h x w x K scores -> (H x W int32 labels, K x H x W scores or None), per the contract's last section."""
    padded_h, padded_w = prepared.padded_hw
    resized_h, resized_w = prepared.resized_hw
    height, width = prepared.original_hw
    up = resize_channels(scores, padded_h, padded_w)[:resized_h, :resized_w]
    budget_exceeded = height * width * up.shape[2] * 4 > FULL_RES_BUDGET_BYTES
    if background_threshold is None and not keep_scores and budget_exceeded:
        return _running_argmax(up, height, width), None  # e.g. 150 classes at 1024 x 2048: 1.2 GB -> 10 MB
    full = resize_channels(up, height, width)
    labels = full.argmax(axis=2).astype(np.int32)
    if background_threshold is not None:
        best = np.take_along_axis(full, labels[:, :, None].astype(np.intp), axis=2)
        # max softmax probability of CLIP-scaled scores = 1 / sum_k exp(100 (s_k - s_max))
        denom = np.exp((full - best) * np.float32(CLIP_LOGIT_SCALE)).sum(axis=2)
        labels += 1
        labels[(1.0 / denom) < background_threshold] = 0
    return labels, (np.ascontiguousarray(full.transpose(2, 0, 1)) if keep_scores else None)


def window_labels(embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """N x C x h x w window embeddings, K x C classes -> N x h x w argmax labels on the window grid
    (how export parity and int8 calibration compare two graphs' outputs)."""
    scores = np.einsum("nchw,kc->nkhw", embeddings, class_embeddings, optimize=True)
    return scores.argmax(axis=1)


def pixel_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel cosine of two N x C x h x w embedding sets (N x h x w), computed in their own dtype."""
    return (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


__all__ = ["l2_normalize", "stitch", "window_units", "image_scores", "resize_channels", "scores_to_labels",
           "window_labels", "pixel_cosines", "CV_MAX_CHANNELS", "FULL_RES_BUDGET_BYTES"]
