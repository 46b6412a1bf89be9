"""mgca/evalsets/readers.py: masks are read as class ids or refused in one line (issue 29, item 14)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgca.evalsets import DatasetError
from mgca.evalsets.folder import FolderSource, folder_spec
from mgca.evalsets.readers import read_label


@pytest.fixture
def spec(tmp_path):
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    return folder_spec(FolderSource(tmp_path / "classes.txt"), "test")


def test_a_grey_plus_alpha_mask_names_its_channels(tmp_path, spec):
    """It failed with "label ... is 50x40 but image ... is 50x40"."""
    path = tmp_path / "la.png"
    Image.fromarray(np.zeros((40, 50), np.uint8)).convert("LA").save(path)
    with pytest.raises(DatasetError, match=r"la.png has 2 channels \(mode LA, e.g. grey \+ alpha\)"):
        read_label(path, spec)


def test_float_masks_must_hold_integers(tmp_path, spec):
    """Fractional values were truncated silently (1.5 became cat)."""
    whole, half = np.zeros((4, 6), np.float32), np.zeros((4, 6), np.float32)
    whole[:, 3:] = 2.0
    half[0, 0] = 1.5
    Image.fromarray(whole).save(tmp_path / "whole.tif")
    Image.fromarray(half).save(tmp_path / "half.tif")
    np.testing.assert_array_equal(read_label(Path(tmp_path / "whole.tif"), spec), whole.astype(np.int64))
    with pytest.raises(DatasetError, match=r"half.tif holds 1 non-integer values \(e.g. 1.5\)"):
        read_label(tmp_path / "half.tif", spec)
