"""PAMR, pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020), on numpy arrays.

Class scores are repeatedly replaced by an average of their neighbours' scores, weighted by how
alike the neighbouring pixels look. TCL and NACLIP use it as optional post-processing; MGCA's
protocol has none, so it is off unless asked for. This is the numpy twin of
`mgca.inference.pamr.PAMR` (tests/test_pamr.py checks that they agree); it needs no torch.

The computation of the reference implementation (visinf/1-stage-wseg `models/mods/pamr.py`,
copied by TCL `models/tcl/pamr.py` and NACLIP `pamr.py`), per pixel p and image channel c:

* neighbours: the 8 pixels at p + d * (dy, dx), dy, dx in {-1, 0, 1}, for every dilation d,
  coordinates clamped to the image (replicate padding): P = 8 * len(dilations) of them;
* sigma_c(p): unbiased std of the 3 x 3 patch at every dilation (9 * len(dilations) values,
  the centre counted once per dilation);
* affinity a(p, n) = softmax over n of mean_c(-|I_c(p) - I_c(n)| / (1e-8 + 0.1 sigma_c(p)));
* scores are first resized bilinearly (align_corners=True) to the image size, then
  `iterations` times: s(p) <- sum_n a(p, n) s(n) (the pixel itself is not among n).

Any per-channel affine normalisation of the image (mean/std) leaves a(p, n) unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .contract import PAMR_DILATIONS  # the PAMR paper's and TCL's (`apply_pamr`); NACLIP uses (8, 16)
from .errors import RuntimeInputError

PAMR_ITERATIONS = 10  # TCL's and NACLIP's
NACLIP_PAMR_DILATIONS = (8, 16)  # NACLIP's `pamr_stride` default

RING = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def neighbour_offsets(dilations: Sequence[int]) -> list[tuple[int, int]]:
    """(dy, dx) of the P = 8 * len(dilations) neighbours, dilation by dilation."""
    return [(d * dy, d * dx) for d in dilations for dy, dx in RING]


def check_dilations(dilations: Sequence[int]) -> tuple[int, ...]:
    dilations = tuple(int(d) for d in dilations)
    if not dilations or min(dilations) < 1:
        raise ValueError(f"PAMR dilations must be positive integers, got {dilations}")
    return dilations


def resize_align_corners(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """h x w x K -> height x width x K, bilinear with corner pixels aligned (torch's align_corners=True)."""
    def axis_weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.arange(dst) * ((src - 1) / (dst - 1)) if dst > 1 else np.zeros(1)
        low = np.minimum(np.floor(pos).astype(np.int64), src - 1)
        return low, np.minimum(low + 1, src - 1), (pos - low).astype(np.float32)

    top, bottom, wy = axis_weights(maps.shape[0], height)
    rows = maps[top] * (1 - wy)[:, None, None] + maps[bottom] * wy[:, None, None]
    left, right, wx = axis_weights(maps.shape[1], width)
    return rows[:, left] * (1 - wx)[None, :, None] + rows[:, right] * wx[None, :, None]


def _shifted(padded: np.ndarray, pad: int, offset: tuple[int, int], height: int, width: int) -> np.ndarray:
    dy, dx = offset
    return padded[pad + dy:pad + dy + height, pad + dx:pad + dx + width]


def pamr_affinity(image: np.ndarray, dilations: Sequence[int] = PAMR_DILATIONS) -> np.ndarray:
    """H x W x C image -> P x H x W neighbour weights (softmax over the P neighbours of each pixel)."""
    dilations = check_dilations(dilations)
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape[:2]
    pad = max(dilations)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = neighbour_offsets(dilations)
    patch = [(0, 0)] * len(dilations) + offsets  # every dilation's 3 x 3 patch, centre included
    mean = sum(_shifted(padded, pad, o, height, width) for o in patch) / len(patch)
    var = sum((_shifted(padded, pad, o, height, width) - mean) ** 2 for o in patch) / (len(patch) - 1)
    scale = 1e-8 + 0.1 * np.sqrt(var)
    logits = np.stack(
        [(-np.abs(image - _shifted(padded, pad, o, height, width)) / scale).mean(axis=-1) for o in offsets]
    )
    logits -= logits.max(axis=0, keepdims=True)
    weights = np.exp(logits)
    return (weights / weights.sum(axis=0, keepdims=True)).astype(np.float32)


def pamr(image: np.ndarray, scores: np.ndarray, iterations: int = PAMR_ITERATIONS,
         dilations: Sequence[int] = PAMR_DILATIONS) -> np.ndarray:
    """Refined H x W x K float32 scores: `image` is H x W x C (any dtype, any per-channel normalisation),
    `scores` is h x w x K at any resolution (resized to H x W first)."""
    image, scores = np.asarray(image), np.asarray(scores, dtype=np.float32)
    if image.ndim != 3 or scores.ndim != 3:
        raise RuntimeInputError(f"PAMR needs an H x W x C image and h x w x K scores, "
                                f"got shapes {image.shape} and {scores.shape}")
    if iterations < 0:
        raise RuntimeInputError(f"PAMR iterations must be >= 0, got {iterations}")
    height, width = image.shape[:2]
    dilations = check_dilations(dilations)
    scores = resize_align_corners(scores, height, width).astype(np.float32)
    if iterations == 0:
        return scores
    affinity = pamr_affinity(image, dilations)[..., None]
    offsets, pad = neighbour_offsets(dilations), max(dilations)
    for _ in range(iterations):
        padded = np.pad(scores, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        refined = np.zeros_like(scores)
        for weight, offset in zip(affinity, offsets, strict=False):
            refined += weight * _shifted(padded, pad, offset, height, width)
        scores = refined
    return scores


__all__ = ["pamr", "pamr_affinity", "resize_align_corners", "neighbour_offsets", "PAMR_DILATIONS", "PAMR_ITERATIONS",
           "NACLIP_PAMR_DILATIONS"]
