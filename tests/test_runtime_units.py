"""Meta-point assignment: numpy and FAISS give identical labels, ties to the lowest index, on raw maps and
through the Segmenter. (The meta-point grid and positions are runtime.contract's: test_contract.py.)"""
from __future__ import annotations

import numpy as np
import pytest

from runtime import Segmenter
from runtime.units import assign_faiss, assign_numpy, tie_eps

from .support import SIZES, blocky_image


@pytest.mark.parametrize("channels", [64, 512])
def test_faiss_and_numpy_assign_identically(channels):
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((5000, channels), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    points = x[rng.choice(5000, 36, replace=False)].copy()
    points[7] = points[3]  # exact duplicates: ties must go to the lowest index in both
    x[:200] = points[3]  # pixels sitting exactly on the duplicated meta-point
    mix = points[10] + points[11]  # pixels equidistant from two meta-points
    x[200:400] = mix / np.linalg.norm(mix)
    ours, theirs = assign_numpy(x, points), assign_faiss(x, points)
    np.testing.assert_array_equal(ours, theirs)
    assert (ours[:200] == 3).all()
    exact = (x.astype(np.float64) @ points.T.astype(np.float64))
    clear = np.sort(exact, axis=1)[:, -1] - np.sort(exact, axis=1)[:, -2] > tie_eps(channels)
    np.testing.assert_array_equal(ours[clear], exact[clear].argmax(1))


def test_segmenter_faiss_equals_numpy(bundle):
    rng = np.random.default_rng(4)
    a = Segmenter(bundle, backend="onnxruntime", device="cpu", assignment="numpy")
    b = Segmenter(bundle, backend="onnxruntime", device="cpu", assignment="faiss")
    for height, width in SIZES[:4]:
        image = blocky_image(rng, height, width)
        np.testing.assert_array_equal(a.segment(image).labels, b.segment(image).labels)
