"""From window embeddings to label maps in numpy/OpenCV (docs/inference-contract.md, "Sliding windows" from the
stitching on, "Adaptive semantic units", "PAMR" and "Scores to labels"); `preprocess.py` makes the windows.

stitch (valid parts averaged, L2-normalised) -> units (per window before stitching, or on the stitched map)
-> cosine scores on the grid -> PAMR (optional) -> background channels (groupvit, tcl) -> bilinear to the grid's
pixel size, cropped or edge-extended to the resized size, bilinear to the input size -> argmax (the softmax
rule thresholds here).
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from .background import background_channels
from .contract import CLIP_LOGIT_SCALE, InferenceSettings, box_cells
from .pamr import pamr, resize_align_corners
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
    """Window embeddings (n x C x g x g) -> image map C x gh x gw: valid parts averaged, then L2-normalised."""
    height, width = prepared.grid_hw
    channels = embeddings.shape[1]
    if len(prepared.boxes) == 1:
        y1, y2, x1, x2 = box_cells(prepared.boxes[0], output_stride)
        total = np.array(embeddings[0, :, :y2 - y1, :x2 - x1], dtype=np.float32)  # count is 1 everywhere
    else:
        total = np.zeros((channels, height, width), dtype=np.float32)
        count = np.zeros((height, width), dtype=np.float32)
        for emb, box in zip(embeddings, prepared.boxes, strict=True):
            y1, y2, x1, x2 = box_cells(box, output_stride)
            total[:, y1:y2, x1:x2] += emb[:, :y2 - y1, :x2 - x1]
            count[y1:y2, x1:x2] += 1.0
        total /= count
    return l2_normalize(total, axis=0)


def window_units(windows: np.ndarray, prepared: Prepared, units: int, output_stride: int, assign: Assign) -> np.ndarray:
    """Scope "window": each window's valid embeddings replaced by their unit embeddings, before stitching."""
    out = np.array(windows, dtype=np.float32, copy=True)
    for emb, box in zip(out, prepared.boxes, strict=True):
        y1, y2, x1, x2 = box_cells(box, output_stride)
        h, w = y2 - y1, x2 - x1
        x = np.ascontiguousarray(emb[:, :h, :w].reshape(emb.shape[0], -1).T)
        pooled = pool_units(x, h, w, units, assign)
        if pooled is not None:
            unit_emb, assignment = pooled
            emb[:, :h, :w] = unit_emb[assignment].T.reshape(-1, h, w)
    return out


def image_scores(windows: np.ndarray, prepared: Prepared, text: np.ndarray, settings: InferenceSettings,
                 output_stride: int, assign: Assign) -> tuple[np.ndarray, np.ndarray]:
    """One image's window embeddings -> (h x w x K cosine scores on the stitched grid, units as `settings` say;
    K cosines of the image-average embedding, the mean of the stitched map L2-normalised, for the groupvit rule)."""
    if settings.unit_scope == "window":
        stitched = stitch(window_units(windows, prepared, settings.units, output_stride, assign), prepared,
                          output_stride)
        units = 0  # units already applied per window
    else:
        stitched = stitch(windows, prepared, output_stride)
        units = settings.units
    channels, height, width = stitched.shape
    x = np.ascontiguousarray(stitched.reshape(channels, -1).T)
    image_cos = text @ l2_normalize(x.mean(axis=0, dtype=np.float32), axis=0)
    return pixel_scores(x, height, width, units, text, assign), image_cos


def grid_image(prepared: Prepared, output_stride: int) -> np.ndarray:
    """gh x gw x 3: the normalised image under the stitched grid (cropped, or zero-extended past the image, to
    gh os x gw os pixels), resized bilinearly with aligned corners to one pixel per cell, as TCL's `apply_pamr`
    resizes each window to its mask."""
    grid_h, grid_w = prepared.grid_hw
    extent = np.zeros((grid_h * output_stride, grid_w * output_stride, 3), dtype=np.float32)
    height, width = min(extent.shape[0], prepared.resized_hw[0]), min(extent.shape[1], prepared.resized_hw[1])
    extent[:height, :width] = prepared.image[:, :height, :width].transpose(1, 2, 0)
    return resize_align_corners(extent, grid_h, grid_w).astype(np.float32)


def refine(scores: np.ndarray, prepared: Prepared, settings: InferenceSettings, output_stride: int) -> np.ndarray:
    """PAMR (settings.pamr iterations, settings.pamr_dilations) on the h x w x K grid scores; as they are when off."""
    if not settings.pamr:
        return scores
    return pamr(grid_image(prepared, output_stride), scores, settings.pamr, settings.pamr_dilations)


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


def to_resized(scores: np.ndarray, prepared: Prepared, output_stride: int) -> np.ndarray:
    """h x w x K grid maps -> H' x W' x K: bilinear to the grid's pixel size (gh os x gw os), then cropped to the
    resized image, or extended by its edge rows/columns where the grid stops short of it (< os pixels)."""
    grid_h, grid_w = prepared.grid_hw
    resized_h, resized_w = prepared.resized_hw
    up = resize_channels(scores, grid_h * output_stride, grid_w * output_stride)[:resized_h, :resized_w]
    pad_h, pad_w = resized_h - up.shape[0], resized_w - up.shape[1]
    if pad_h or pad_w:
        up = np.pad(up, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return up


def scores_to_labels(scores: np.ndarray, prepared: Prepared, background_threshold: float | None = None,
                     keep_scores: bool = False, *, output_stride: int, bg_rule: str = "softmax",
                     image_cos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """h x w x K grid scores -> (H x W int32 labels, K x H x W class maps or None), per the contract's last section.

    With a background value the labels are 0 = background, 1..K the classes, by `bg_rule`: "softmax" thresholds
    the full-resolution softmax(100 scores); "groupvit" and "tcl" add a background channel on the grid
    (`background.background_channels`, which needs `image_cos` for groupvit) and the returned class maps are that
    rule's (GroupViT scores, TCL masks) rather than cosines."""
    height, width = prepared.original_hw
    if background_threshold is not None and bg_rule != "softmax":
        scores = background_channels(scores, image_cos, bg_rule, background_threshold)
    up = to_resized(scores, prepared, output_stride)
    budget_exceeded = height * width * up.shape[2] * 4 > FULL_RES_BUDGET_BYTES
    thresholded = background_threshold is not None and bg_rule == "softmax"
    if not thresholded and not keep_scores and budget_exceeded:
        return _running_argmax(up, height, width), None  # e.g. 150 classes at 1024 x 2048: 1.2 GB -> 10 MB
    full = resize_channels(up, height, width)
    labels = full.argmax(axis=2).astype(np.int32)
    if background_threshold is not None and bg_rule != "softmax":
        return labels, (np.ascontiguousarray(full[:, :, 1:].transpose(2, 0, 1)) if keep_scores else None)
    if thresholded:
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


__all__ = ["l2_normalize", "stitch", "window_units", "image_scores", "grid_image", "refine", "resize_channels",
           "to_resized", "scores_to_labels", "window_labels", "pixel_cosines", "CV_MAX_CHANNELS",
           "FULL_RES_BUDGET_BYTES"]
