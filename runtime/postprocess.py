"""From window embeddings to label maps in numpy (docs/inference-contract.md, "Sliding windows" from the
stitching on, "Adaptive semantic units" and "Scores to labels"); `preprocess.py` makes the windows.

stitch (valid parts averaged, L2-normalised) -> units (per window before stitching, or on the stitched map)
-> cosine scores -> bilinear to the padded size, crop, bilinear to the input size -> argmax (+ background).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .contract import CLIP_LOGIT_SCALE, InferenceSettings
from .preprocess import Prepared
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


def upsample_weights(grid: int, padded: int, resized: int, original: int) -> np.ndarray:
    """One axis of the contract's score upsampling as one original x grid matrix: bilinear from the stitched
    grid to the padded size, crop to the resized size, bilinear to the input size. Linear maps compose, so
    this equals the three steps (up to float rounding) and each output reads only 2-4 grid cells."""
    up = bilinear_weights(padded, grid)[:resized]
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


def upsampled_rows(scores: np.ndarray, prepared: Prepared,
                   block_bytes: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """h x w x K grid scores -> (y0, y1, rows y0..y1-1 of the H x W x K input-resolution scores), block by block.

    Separable: one small matrix product per axis with `upsample_weights`, each restricted to the grid cells its
    block reads, so any number of classes works (OpenCV's resize takes at most 128 channels) and the full
    H x W x K stack never exists at once (benchmarks/resize.py: faster than OpenCV per 128 channels). The
    products are cut small enough for single-threaded BLAS calls (see runtime.units.matmul_rows)."""
    grid_h, grid_w, classes = scores.shape
    height, width = prepared.original_hw
    block_bytes = block_bytes or BLOCK_BYTES
    rows = upsample_weights(grid_h, prepared.padded_hw[0], prepared.resized_hw[0], height)
    cols = upsample_weights(grid_w, prepared.padded_hw[1], prepared.resized_hw[1], width)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    wide = np.empty((grid_h, width, classes), dtype=np.float32)  # columns at full resolution, rows still on the grid
    for x0, x1, low, high in _bands(cols, max(1, block_bytes // (4 * grid_h * classes))):
        wide[:, x0:x1] = np.matmul(cols[x0:x1, low:high], scores[:, low:high])
    flat = wide.reshape(grid_h, width * classes)
    for y0, y1, low, high in _bands(rows, max(1, block_bytes // (4 * width * classes))):
        yield y0, y1, matmul_columns(rows[y0:y1, low:high], flat[low:high]).reshape(y1 - y0, width, classes)


def scores_to_labels(scores: np.ndarray, prepared: Prepared, background_threshold: float | None = None,
                     keep_scores: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """h x w x K scores -> (H x W int32 labels, K x H x W scores or None), per the contract's last section.
    Rows are labelled block by block, so memory stays O(H x W) unless the scores are kept."""
    height, width = prepared.original_hw
    labels = np.empty((height, width), dtype=np.int32)
    kept = np.empty((scores.shape[2], height, width), dtype=np.float32) if keep_scores else None
    for y0, y1, block in upsampled_rows(scores, prepared):
        best = block.argmax(axis=2)
        if background_threshold is not None:
            top = np.take_along_axis(block, best[:, :, None], axis=2)
            # max softmax probability of CLIP-scaled scores = 1 / sum_k exp(100 (s_k - s_max))
            denom = np.exp((block - top) * np.float32(CLIP_LOGIT_SCALE)).sum(axis=2)
            best += 1
            best[(1.0 / denom) < background_threshold] = 0
        labels[y0:y1] = best
        if kept is not None:
            kept[:, y0:y1] = block.transpose(2, 0, 1)
    return labels, kept


def window_labels(embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """N x C x h x w window embeddings, K x C classes -> N x h x w argmax labels on the window grid
    (how export parity and int8 calibration compare two graphs' outputs)."""
    scores = np.einsum("nchw,kc->nkhw", embeddings, class_embeddings, optimize=True)
    return scores.argmax(axis=1)


def pixel_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel cosine of two N x C x h x w embedding sets (N x h x w), computed in their own dtype."""
    return (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


__all__ = ["l2_normalize", "stitch", "window_units", "image_scores", "scores_to_labels",
           "window_labels", "pixel_cosines", "bilinear_weights", "upsample_weights", "upsampled_rows", "BLOCK_BYTES"]
