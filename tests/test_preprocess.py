"""runtime/preprocess.py: images are checked before any large allocation (issue 29, item 14)."""
from __future__ import annotations

import numpy as np
import pytest

from runtime import RuntimeInputError
from runtime.preprocess import MAX_RESIZED_PIXELS, resize_image


def test_a_long_thin_image_without_a_long_side_cap_is_refused_before_resizing(bundle):
    """1 x 100000 at --long-side 0 failed on a raw 10.3 GiB allocation (here: short side 96, 0.9 gigapixels)."""
    from runtime import Segmenter

    thin = np.zeros((1, 100_000, 3), np.uint8)
    with pytest.raises(RuntimeInputError, match=r"100000x1 would be resized to 9600000x96 .*--long-side 2048"):
        resize_image(thin, 96, 0)
    uncapped = Segmenter(bundle, backend="onnxruntime", device="cpu", long_side=0)
    with pytest.raises(RuntimeInputError, match="cap the longer side"):
        uncapped.segment(thin)


def test_the_largest_allowed_size_is_resized():
    width = MAX_RESIZED_PIXELS // 96 // 50  # well inside the bound: a 96 x ~13000 panorama
    assert resize_image(np.zeros((96, width, 3), np.uint8), 96, 0).shape == (96, width, 3)
