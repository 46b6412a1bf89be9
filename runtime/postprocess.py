"""From window embeddings to label maps in numpy (docs/inference-contract.md, "Sliding windows" from the
stitching on, "Adaptive semantic units", "PAMR" and "Scores to labels"); `preprocess.py` makes the windows.

stitch (valid parts averaged, L2-normalised) -> units (per window before stitching, or on the stitched map)
-> cosine scores on the grid -> PAMR (optional) -> background channels (groupvit, tcl) -> bilinear to the grid's
pixel size, cropped or edge-extended to the resized size, bilinear to the input size -> argmax (the softmax
rule thresholds here).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .background import background_channels
from .contract import CLIP_LOGIT_SCALE, InferenceSettings, box_cells, uses_pixel_units
from .pamr import pamr, resize_align_corners
from .preprocess import Prepared
from .temporal import TemporalState, carried_points
from .units import matmul_columns, pixel_scores, pool_units

# Full-resolution scores are made this many bytes of rows at a time (cache-sized: 150 classes x 683 columns
# is 10 rows), labelled, and dropped.
BLOCK_BYTES = 4 << 20

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
                 output_stride: int, assign: Assign,
                 state: TemporalState | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image's window embeddings -> (h x w x K cosine scores on the stitched grid, units as `settings` say;
    K cosines of the image-average embedding, the mean of the stitched map L2-normalised, for the groupvit rule).
    A stream's `state` that carries units gives the meta-points (the previous frame's units) and keeps this frame's."""
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
    pooled = None
    if state is not None and state.carries_units and not uses_pixel_units(units, height, width):
        pooled = pool_units(x, height, width, units, assign, carried_points(x, height, width, units, state.units))
        state.units = pooled[0]
    return pixel_scores(x, height, width, units, text, assign, pooled), image_cos


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


def bilinear_weights(out_size: int, in_size: int) -> np.ndarray:
    """out_size x in_size float64 matrix of a bilinear resize along one axis (align_corners=False, as torch's
    F.interpolate and cv2.INTER_LINEAR): row i holds the two taps of output i."""
    src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.intp), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = src - low
    weights = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def upsample_weights(grid: int, output_stride: int, resized: int, original: int) -> np.ndarray:
    """One axis of the contract's score upsampling as one original x grid matrix: bilinear from the stitched
    grid to its pixel size (grid x os), cropped to the resized size or extended by its edge row where the grid
    stops short of it (< os pixels), bilinear to the input size. Linear maps compose, so this equals the steps
    (up to float rounding) and each output reads only 2-4 grid cells."""
    up = bilinear_weights(grid * output_stride, grid)[:resized]
    if up.shape[0] < resized:
        up = np.concatenate([up, np.repeat(up[-1:], resized - up.shape[0], axis=0)])
    weights = up if resized == original else bilinear_weights(original, resized) @ up
    return weights.astype(np.float32)


def _bands(weights: np.ndarray, rows: int) -> Iterator[tuple[int, int, int, int]]:
    """(start, stop, low, high) per block of `rows` output rows: the block reads input rows low..high-1 only."""
    nonzero = weights != 0
    first = nonzero.argmax(axis=1)
    last = weights.shape[1] - nonzero[:, ::-1].argmax(axis=1)
    for start in range(0, weights.shape[0], rows):
        stop = min(start + rows, weights.shape[0])
        yield start, stop, int(first[start:stop].min()), int(last[start:stop].max())


def upsampled_rows(scores: np.ndarray, prepared: Prepared, output_stride: int,
                   block_bytes: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """h x w x K grid scores -> (y0, y1, rows y0..y1-1 of the H x W x K input-resolution scores), block by block.

    Separable: one small matrix product per axis with `upsample_weights`, each restricted to the grid cells its
    block reads, so any number of classes works (OpenCV's resize takes at most 128 channels) and the full
    H x W x K stack never exists at once (benchmarks/resize.py: faster than OpenCV per 128 channels). The
    products are cut small enough for single-threaded BLAS calls (see runtime.units.matmul_rows)."""
    grid_h, grid_w, classes = scores.shape
    height, width = prepared.original_hw
    block_bytes = block_bytes or BLOCK_BYTES
    rows = upsample_weights(grid_h, output_stride, prepared.resized_hw[0], height)
    cols = upsample_weights(grid_w, output_stride, prepared.resized_hw[1], width)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    wide = np.empty((grid_h, width, classes), dtype=np.float32)  # columns at full resolution, rows still on the grid
    for x0, x1, low, high in _bands(cols, max(1, block_bytes // (4 * grid_h * classes))):
        wide[:, x0:x1] = np.matmul(cols[x0:x1, low:high], scores[:, low:high])
    flat = wide.reshape(grid_h, width * classes)
    for y0, y1, low, high in _bands(rows, max(1, block_bytes // (4 * width * classes))):
        yield y0, y1, matmul_columns(rows[y0:y1, low:high], flat[low:high]).reshape(y1 - y0, width, classes)


def scores_to_labels(scores: np.ndarray, prepared: Prepared, background_threshold: float | None = None,
                     keep_scores: bool = False, *, output_stride: int, bg_rule: str = "softmax",
                     image_cos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """h x w x K grid scores -> (H x W int32 labels, K x H x W class maps or None), per the contract's last section.
    Rows are labelled block by block, so memory stays O(H x W) unless the scores are kept.

    With a background value the labels are 0 = background, 1..K the classes, by `bg_rule`: "softmax" thresholds
    the full-resolution softmax(100 scores); "groupvit" and "tcl" add a background channel on the grid
    (`background.background_channels`, which needs `image_cos` for groupvit) and the returned class maps are that
    rule's (GroupViT scores, TCL masks) rather than cosines."""
    height, width = prepared.original_hw
    channels = background_threshold is not None and bg_rule != "softmax"
    thresholded = background_threshold is not None and bg_rule == "softmax"
    if channels:
        scores = background_channels(scores, image_cos, bg_rule, background_threshold)
    first = 1 if channels else 0  # the kept class maps leave the background channel out
    labels = np.empty((height, width), dtype=np.int32)
    kept = np.empty((scores.shape[2] - first, height, width), dtype=np.float32) if keep_scores else None
    for y0, y1, block in upsampled_rows(scores, prepared, output_stride):
        best = block.argmax(axis=2)
        if thresholded:
            top = np.take_along_axis(block, best[:, :, None], axis=2)
            # max softmax probability of CLIP-scaled scores = 1 / sum_k exp(100 (s_k - s_max))
            denom = np.exp((block - top) * np.float32(CLIP_LOGIT_SCALE)).sum(axis=2)
            best += 1
            best[(1.0 / denom) < background_threshold] = 0
        labels[y0:y1] = best
        if kept is not None:
            kept[:, y0:y1] = block[:, :, first:].transpose(2, 0, 1)
    return labels, kept


def window_labels(embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """N x C x h x w window embeddings, K x C classes -> N x h x w argmax labels on the window grid
    (how export parity and int8 calibration compare two graphs' outputs)."""
    scores = np.einsum("nchw,kc->nkhw", embeddings, class_embeddings, optimize=True)
    return scores.argmax(axis=1)


def pixel_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel cosine of two N x C x h x w embedding sets (N x h x w), computed in their own dtype."""
    return (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


__all__ = ["l2_normalize", "stitch", "window_units", "image_scores", "grid_image", "refine", "scores_to_labels",
           "window_labels", "pixel_cosines", "bilinear_weights", "upsample_weights", "upsampled_rows", "BLOCK_BYTES"]
