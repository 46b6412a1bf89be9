"""runtime/segmenter.py: `Segmenter`'s inference-setting overrides, checked against the contract's declaration."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from runtime import RuntimeInputError, Segmenter
from runtime.errors import SettingsError

from .support import SETTINGS, blocky_image

ONNX_CPU = dict(backend="onnxruntime", device="cpu", assignment="numpy")


@pytest.mark.parametrize("given, message", [
    ({"backend": "tensorrt"}, "backend is an argument of Segmenter itself, not an inference setting"),
    ({"device": "cuda"}, "device is an argument of Segmenter itself"),
    ({"units": 0, "unitz": 3}, "unknown inference setting 'unitz'"),
])
def test_engine_choices_inside_the_settings_are_one_line(bundle, given, message):
    """Issue 29 item 10: backend=/device= among the setting overrides was a raw TypeError ('got multiple values
    for keyword argument'); overrides now travel apart from the engine choices, in `settings`, and are checked."""
    with pytest.raises(SettingsError, match=message) as info:
        Segmenter(bundle, **ONNX_CPU, settings=given)
    assert "\n" not in str(info.value)


def test_keyword_overrides_are_checked_against_the_declaration(bundle):
    with pytest.raises(SettingsError, match="unknown inference setting 'unitz'.*units"):
        Segmenter(bundle, **ONNX_CPU, unitz=3)
    with pytest.raises(SettingsError, match="window 128 differs from the window 64 the bundle was exported with"):
        Segmenter(bundle, **ONNX_CPU, window=128)
    with pytest.raises(SettingsError, match="units is given twice"):
        Segmenter(bundle, **ONNX_CPU, units=0, settings={"units": 4})


@pytest.mark.parametrize("given, message", [
    ({"units": 1_000_000}, "units must be an integer >= 0 and at most 1024"),
    ({"pamr": 100_000_000}, "pamr must be an integer >= 0 and at most 100"),
    ({"pamr_dilations": [1_000_000]}, "pamr_dilations must be a non-empty tuple of positive integers"),
])
def test_out_of_range_overrides_are_one_line(bundle, given, message):
    """Issue 29 item 8, keyword side: the same bounds as the manifest's, before any image is read."""
    with pytest.raises(SettingsError, match=message):
        Segmenter(bundle, **ONNX_CPU, **given)


def test_overrides_replace_only_what_they_name(bundle):
    same = Segmenter(bundle, **ONNX_CPU, settings={"window": SETTINGS["window"], "pamr_dilations": [8, 16]})
    assert same.settings.window == SETTINGS["window"] and same.settings.pamr_dilations == (8, 16)
    assert same.settings.units == SETTINGS["units"] and same.settings.short_side == SETTINGS["short_side"]
    assert same.describe()["pamr_dilations"] == [8, 16]
    again = Segmenter(bundle, **ONNX_CPU, settings=same.settings)  # a whole settings object is a valid override
    assert again.settings == same.settings


def test_a_list_must_hold_images(segmenter):
    image = blocky_image(np.random.default_rng(0), 8, 10)
    with pytest.raises(RuntimeInputError, match="image 0 of the list is a list.*img.tolist") as info:
        segmenter.segment(image.tolist())
    assert "\n" not in str(info.value)
    assert len(segmenter.segment([image, Image.fromarray(image)])) == 2  # arrays, or objects numpy can read


@pytest.mark.parametrize("threshold", ["0.5", float("nan"), 1.5, True, [0.5]])
def test_background_threshold_must_be_a_number_in_0_1(segmenter, threshold):
    with pytest.raises(RuntimeInputError, match="background_threshold must be a number in"):
        segmenter.segment(np.zeros((20, 20, 3), np.uint8), background_threshold=threshold)


def test_segment_none_says_none(segmenter):
    with pytest.raises(RuntimeInputError, match="image is None") as info:
        segmenter.segment(None)
    assert "dtype object" not in str(info.value)
