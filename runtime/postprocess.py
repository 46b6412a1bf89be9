"""From window embeddings to label maps in numpy (docs/inference-contract.md, "Sliding windows" from the
stitching on, "Adaptive semantic units", "PAMR" and "Scores to labels"); `preprocess.py` makes the windows.

stitch (valid parts averaged, L2-normalised) -> units (per window before stitching, or on the stitched map)
-> cosine scores on the grid -> PAMR (optional) -> background channels (groupvit, tcl) -> bilinear to the grid's
pixel size, cropped or edge-extended to the resized size, bilinear to the input size -> argmax (the softmax
rule thresholds here).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from .background import background_channels
from .contract import CLIP_LOGIT_SCALE, InferenceSettings, box_cells
from .pamr import pamr, resize_align_corners
from .preprocess import Prepared
from .units import matmul_columns, pixel_scores, pool_units

# Full-resolution scores are made this many bytes of rows at a time (cache-sized: 150 classes x 683 columns
# is 10 rows), labelled, and dropped.
BLOCK_BYTES = 4 << 20
# Scores upsampled along x only (grid rows x columns x classes) are kept for at most this many bytes of
# columns at a time (and at most BLOCK_BYTES per row): the whole width of a photo (150 classes x 28 grid rows x
# 4000 columns is 67 MB); a wider image is cut into column strips, so a 4 x 250000 image costs no more.
STRIP_BYTES = 64 << 20

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


def bilinear_taps(index: np.ndarray, out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, frac) of outputs `index` of a bilinear resize along one axis (align_corners=False, as torch's
    F.interpolate and cv2.INTER_LINEAR): output i = (1 - frac[i]) input[low[i]] + frac[i] input[high[i]]."""
    src = np.maximum((np.asarray(index) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.intp), in_size - 1)
    return low, np.minimum(low + 1, in_size - 1), src - low


def bilinear_weights(out_size: int, in_size: int) -> np.ndarray:
    """out_size x in_size float64 matrix of `bilinear_taps` (a reference for tests and benchmarks: the pipeline
    never builds a dense matrix, whose size would be a product of two lengths)."""
    low, high, frac = bilinear_taps(np.arange(out_size), out_size, in_size)
    weights = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def upsample_band(grid: int, output_stride: int, resized: int, original: int, start: int,
                  stop: int) -> tuple[int, np.ndarray]:
    """Outputs start..stop-1 of one axis of the contract's score upsampling as (first cell, (stop - start) x cells
    float32 weights over grid cells first..): bilinear from the stitched grid to its pixel size (grid x os),
    cropped to the resized size or extended by its edge pixel where the grid stops short of it (< os pixels),
    bilinear to the input size. Linear maps compose, so this equals the steps (up to float rounding); each output
    reads at most 3 neighbouring cells, so a block costs O(its outputs) whatever the image's aspect ratio."""
    index = np.arange(start, stop)
    if resized == original:
        taps = [(index, np.ones(len(index)))]
    else:
        low, high, frac = bilinear_taps(index, original, resized)
        taps = [(low, 1.0 - frac), (high, frac)]
    rows, cells, weights = [], [], []
    for pixel, weight in taps:
        low, high, frac = bilinear_taps(np.minimum(pixel, grid * output_stride - 1), grid * output_stride, grid)
        rows += [index, index]
        cells += [low, high]
        weights += [weight * (1.0 - frac), weight * frac]
    first = int(min(c.min() for c in cells))
    band = np.zeros((stop - start, int(max(c.max() for c in cells)) + 1 - first))
    np.add.at(band, (np.concatenate(rows) - start, np.concatenate(cells) - first), np.concatenate(weights))
    return first, band.astype(np.float32)


def upsample_weights(grid: int, output_stride: int, resized: int, original: int) -> np.ndarray:
    """The whole original x grid matrix of `upsample_band` (for tests and small sizes)."""
    first, band = upsample_band(grid, output_stride, resized, original, 0, original)
    weights = np.zeros((original, grid), dtype=np.float32)
    weights[:, first:first + band.shape[1]] = band
    return weights


def _blocks(size: int, rows: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive blocks of at most `rows` (>= 1) along an axis of `size`."""
    rows = max(1, rows)
    for start in range(0, size, rows):
        yield start, min(start + rows, size)


def _band_rows(cells: int, size: int, block_bytes: int) -> int:
    """Outputs per block whose `upsample_band` fits `block_bytes`: its float64 band (rows x at most
    rows cells / size + 4 cells: the root of ratio r^2 + 4 r = entries) and its ~256 bytes of taps per output."""
    ratio, entries = cells / size, block_bytes / 8
    return min(block_bytes // 256, int((math.sqrt(16.0 + 4.0 * ratio * entries) - 4.0) / (2.0 * ratio)))


def upsampled_tiles(scores: np.ndarray, prepared: Prepared, output_stride: int, block_bytes: int | None = None,
                    strip_bytes: int | None = None) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """h x w x K grid scores -> (y0, y1, x0, x1, the H x W x K input-resolution scores of rows y0..y1-1 and
    columns x0..x1-1), tile by tile: column strips (the whole width for photos) upsampled along x, then cut into
    row blocks upsampled along y.

    Separable: one small matrix product per axis with `upsample_band`, each restricted to the grid cells its
    block reads, so any number of classes works (OpenCV's resize takes at most 128 channels), and no array
    grows with the full H x W x K stack or with a product of two lengths: memory is bounded by STRIP_BYTES,
    BLOCK_BYTES and the pixels whatever the aspect ratio (benchmarks/resize.py: faster than OpenCV per 128
    channels). The products are cut small enough for single-threaded BLAS calls (see runtime.units.matmul_rows)."""
    grid_h, grid_w, classes = scores.shape
    (height, width), (resized_h, resized_w) = prepared.original_hw, prepared.resized_hw
    block_bytes, strip_bytes = block_bytes or BLOCK_BYTES, strip_bytes or STRIP_BYTES
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    # A strip holds grid_h x its columns x K floats, a tile at least one of its rows: both stay under their budget.
    strip_width = max(1, min(strip_bytes // (4 * grid_h * classes), block_bytes // (4 * classes), width))
    column_rows = min(block_bytes // (4 * grid_h * classes), _band_rows(grid_w, width, block_bytes))
    row_rows = min(block_bytes // (4 * strip_width * classes), _band_rows(grid_h, height, block_bytes))
    row_bands = ((y0, y1, *upsample_band(grid_h, output_stride, resized_h, height, y0, y1))
                 for y0, y1 in _blocks(height, row_rows))
    if width > strip_width:
        row_bands = list(row_bands)  # the same for every strip: O(H) weights
    for s0, s1 in _blocks(width, strip_width):
        strip = np.empty((grid_h, s1 - s0, classes), dtype=np.float32)  # columns at full resolution, rows on the grid
        for x0, x1 in _blocks(s1 - s0, column_rows):
            low, band = upsample_band(grid_w, output_stride, resized_w, width, s0 + x0, s0 + x1)
            strip[:, x0:x1] = np.matmul(band, scores[:, low:low + band.shape[1]])
        flat = strip.reshape(grid_h, (s1 - s0) * classes)
        for y0, y1, low, band in row_bands:
            tile = matmul_columns(band, flat[low:low + band.shape[1]])
            yield y0, y1, s0, s1, tile.reshape(y1 - y0, s1 - s0, classes)


def scores_to_labels(scores: np.ndarray, prepared: Prepared, background_threshold: float | None = None,
                     keep_scores: bool = False, *, output_stride: int, bg_rule: str = "softmax",
                     image_cos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """h x w x K grid scores -> (H x W int32 labels, K x H x W class maps or None), per the contract's last section.
    Tiles are labelled one by one (`upsampled_tiles`), so memory stays O(H x W) on any aspect ratio unless the
    scores are kept.

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
    for y0, y1, x0, x1, block in upsampled_tiles(scores, prepared, output_stride):
        best = block.argmax(axis=2)
        if thresholded:
            top = np.take_along_axis(block, best[:, :, None], axis=2)
            # max softmax probability of CLIP-scaled scores = 1 / sum_k exp(100 (s_k - s_max))
            denom = np.exp((block - top) * np.float32(CLIP_LOGIT_SCALE)).sum(axis=2)
            best += 1
            best[(1.0 / denom) < background_threshold] = 0
        labels[y0:y1, x0:x1] = best
        if kept is not None:
            kept[:, y0:y1, x0:x1] = block[:, :, first:].transpose(2, 0, 1)
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
           "window_labels", "pixel_cosines", "bilinear_weights", "bilinear_taps", "upsample_band",
           "upsample_weights", "upsampled_tiles", "BLOCK_BYTES", "STRIP_BYTES"]
