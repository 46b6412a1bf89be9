"""PAMR: the torch module (mgca.inference.pamr) and the numpy twin (runtime.pamr) against a per-pixel
float64 reference written from the formula, and against each other."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mgca.inference.pamr import PAMR
from runtime.errors import RuntimeInputError
from runtime.pamr import NACLIP_PAMR_DILATIONS, PAMR_DILATIONS, PAMR_ITERATIONS, pamr, resize_align_corners

REPO = Path(__file__).resolve().parents[1]


def blocky(rng: np.random.Generator, height: int, width: int, cells: int = 4) -> np.ndarray:
    """uint8 H x W x 3: flat rectangles (edges for the affinities to respect) plus a little noise."""
    low = rng.integers(0, 256, (cells, cells, 3)).astype(np.float64)
    image = low[np.arange(height) * cells // height][:, np.arange(width) * cells // width]
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def reference_pamr(image: np.ndarray, scores: np.ndarray, iterations: int, dilations) -> np.ndarray:
    """Per pixel, in float64, from the formula (runtime/pamr.py's docstring): H x W x K."""
    image = image.astype(np.float64)
    height, width, channels = image.shape
    h, w, classes = scores.shape

    def source(out: int, size_in: int, size_out: int) -> tuple[int, int, float]:
        pos = out * (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        low = min(int(math.floor(pos)), size_in - 1)
        return low, min(low + 1, size_in - 1), pos - low

    up = np.zeros((height, width, classes))
    for y in range(height):
        y0, y1, fy = source(y, h, height)
        for x in range(width):
            x0, x1, fx = source(x, w, width)
            up[y, x] = ((1 - fy) * ((1 - fx) * scores[y0, x0] + fx * scores[y0, x1])
                        + fy * ((1 - fx) * scores[y1, x0] + fx * scores[y1, x1]))

    def at(a, y, x):  # replicate padding: coordinates clamped to the image
        return a[min(max(y, 0), height - 1), min(max(x, 0), width - 1)]

    ring = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    neighbours = [(d * dy, d * dx) for d in dilations for dy, dx in ring]
    affinity = np.zeros((height, width, len(neighbours)))
    for y in range(height):
        for x in range(width):
            logits = np.zeros(len(neighbours))
            for c in range(channels):
                patch = [
                    at(image, y + d * dy, x + d * dx)[c] for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                ]
                sigma = np.std(patch, ddof=1)
                for n, (dy, dx) in enumerate(neighbours):
                    logits[n] += -abs(image[y, x, c] - at(image, y + dy, x + dx)[c]) / (1e-8 + 0.1 * sigma) / channels
            e = np.exp(logits - logits.max())
            affinity[y, x] = e / e.sum()
    for _ in range(iterations):
        refined = np.zeros_like(up)
        for y in range(height):
            for x in range(width):
                refined[y, x] = sum(affinity[y, x, n] * at(up, y + dy, x + dx) for n, (dy, dx) in enumerate(neighbours))
        up = refined
    return up


def torch_pamr(image: np.ndarray, scores: np.ndarray, iterations: int, dilations, dtype=torch.float32) -> np.ndarray:
    img = torch.from_numpy(image.astype(np.float64)).permute(2, 0, 1)[None].to(dtype)
    sc = torch.from_numpy(scores.astype(np.float64)).permute(2, 0, 1)[None].to(dtype)
    return PAMR(iterations, dilations)(img, sc)[0].permute(1, 2, 0).double().numpy()


def test_defaults_are_the_reference_implementations():
    assert PAMR_DILATIONS == (1, 2, 4, 8, 12, 24) and PAMR_ITERATIONS == 10 and NACLIP_PAMR_DILATIONS == (8, 16)
    module = PAMR()
    assert module.dilations == PAMR_DILATIONS and module.iterations == PAMR_ITERATIONS


@pytest.mark.parametrize("dilations", [(1, 2, 4), (1, 3)])
def test_both_match_the_formula_reference(dilations):
    rng = np.random.default_rng(0)
    image = blocky(rng, 9, 11, cells=3)
    scores = rng.normal(size=(4, 5, 3))
    expected = reference_pamr(image, scores, 2, dilations)
    np.testing.assert_allclose(torch_pamr(image, scores, 2, dilations, torch.float64), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(pamr(image, scores, 2, dilations), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dilations", [PAMR_DILATIONS, NACLIP_PAMR_DILATIONS])
@pytest.mark.parametrize("size", [(60, 80), (13, 10)])  # the second is smaller than the largest dilation
def test_torch_and_numpy_agree(dilations, size):
    rng = np.random.default_rng(sum(size))
    image = blocky(rng, *size)
    scores = rng.normal(size=(size[0] // 8 + 1, size[1] // 8 + 1, 5)).astype(np.float32)
    ours = pamr(image, scores, PAMR_ITERATIONS, dilations)
    theirs = torch_pamr(image, scores, PAMR_ITERATIONS, dilations)
    assert ours.shape == (*size, 5) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5)
    assert np.abs(ours - resize_align_corners(scores, *size)).max() > 0.05  # it did refine something


def test_refinement_follows_image_edges():
    """A score map blurred across an image edge is pulled back to the edge: the point of PAMR."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, 16:] = 200
    truth = np.zeros((32, 32, 1), np.float32)
    truth[:, 16:] = 1
    coarse = truth[4::8, 4::8]  # 4 x 4: upsampled, its edge is a ramp over ~10 pixels
    blurred = resize_align_corners(coarse, 32, 32)
    refined = pamr(image, coarse, PAMR_ITERATIONS, PAMR_DILATIONS)
    assert np.abs(refined - truth).mean() < 0.5 * np.abs(blurred - truth).mean()


def test_normalisation_and_zero_iterations():
    rng = np.random.default_rng(3)
    image = blocky(rng, 40, 30)
    scores = rng.normal(size=(5, 4, 3)).astype(np.float32)
    normalised = (image / 255.0 - np.array([0.48, 0.46, 0.41])) / np.array([0.27, 0.26, 0.28])
    np.testing.assert_allclose(pamr(image, scores), pamr(normalised, scores), atol=1e-5)
    grid = torch.from_numpy(scores).permute(2, 0, 1)[None]
    expected = F.interpolate(grid, size=(40, 30), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(pamr(image, scores, iterations=0), expected[0].permute(1, 2, 0).numpy(), atol=1e-6)


def test_bad_input_is_one_line_error():
    with pytest.raises(RuntimeInputError, match="H x W x C image and h x w x K scores"):
        pamr(np.zeros((10, 10)), np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="dilations must be positive"):
        PAMR(dilations=(0, 2))


def test_numpy_twin_needs_no_torch():
    script = ("import sys\n"
              "for name in ('torch', 'torchvision', 'open_clip', 'mgca', 'export'):\n    sys.modules[name] = None\n"
              "import numpy as np\nfrom runtime.pamr import pamr\n"
              "print(pamr(np.zeros((20, 20, 3), np.uint8), np.ones((3, 3, 2), np.float32)).shape)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(20, 20, 2)"
