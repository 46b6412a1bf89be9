"""The inference contract in code (runtime.contract): settings, their one validation, and the geometry that
mgca (PyTorch) and runtime (numpy) both take from it. Torch-free."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from runtime.contract import (
    DEFAULT_SETTINGS,
    MODEL_FILES,
    MODEL_KEYS,
    InferenceSettings,
    box_cells,
    check_window,
    grid_spans,
    meta_grid,
    meta_point_indices,
    resized_shape,
    round_up,
    uses_pixel_units,
    window_boxes,
    window_layout,
    window_spans,
)
from runtime.errors import SettingsError

# ---- settings -----------------------------------------------------------------------------------


def test_defaults_are_the_papers():
    assert DEFAULT_SETTINGS == InferenceSettings(short_side=448, window=448, stride=224, units=36, unit_scope="image",
                                                 long_side=2048, padding="crop", bg_rule="groupvit", pamr=0)
    assert DEFAULT_SETTINGS.validate(output_stride=8, patch_size=16) is DEFAULT_SETTINGS


def test_for_window_derives_short_side_and_stride_on_the_output_stride_grid():
    assert InferenceSettings.for_window(64, 8) == InferenceSettings(64, 64, 32)
    assert InferenceSettings.for_window(48, 16) == InferenceSettings(48, 48, 16)  # 24 rounded down to the grid
    assert InferenceSettings.for_window(16, 16).stride == 16  # never below one output stride
    given = InferenceSettings.for_window(64, 8, short_side=96, stride=None, units=0)
    assert (given.short_side, given.stride, given.units) == (96, 32, 0)


@pytest.mark.parametrize("bad, message", [
    (dict(window=60), "window 60 must be a positive multiple of the output stride 8"),
    (dict(window=0), "window must be a positive integer"),
    (dict(stride=12), "stride 12 must be a multiple of the output stride 8"),
    (dict(stride=96), "at most the window 64"),
    (dict(short_side=-1), "short_side must be a positive integer"),
    (dict(units=-1), "units must be an integer >= 0"),
    (dict(units=True), "units must be an integer >= 0"),
    (dict(unit_scope="tile"), "unit_scope must be one of"),
    (dict(long_side=50), "long_side must be 0 .no cap. or an integer >= short_side 64"),
    (dict(padding="reflect"), "padding must be one of"),
    (dict(bg_rule="threshold"), "bg_rule must be one of"),
    (dict(pamr=-2), "pamr must be an integer >= 0"),
    (dict(pamr_dilations=(1, 0)), "pamr_dilations must be a non-empty tuple of positive integers"),
    (dict(pamr_dilations=[1, 2]), "pamr_dilations must be a non-empty tuple"),
])
def test_validate_names_the_bad_value(bad, message):
    with pytest.raises(SettingsError, match=message) as info:
        dataclasses.replace(InferenceSettings(64, 64, 32), **bad).validate(8)
    assert "\n" not in str(info.value)


def test_window_on_the_patch_grid_when_the_patch_size_is_known():
    assert check_window(48, 8) == 48
    with pytest.raises(SettingsError, match="patch size 16 and the output stride 8"):
        check_window(40, 8, 16)
    with pytest.raises(SettingsError):
        InferenceSettings(40, 40, 8).validate(8, patch_size=16)


def test_manifest_round_trip_ignores_unknown_keys():
    settings = InferenceSettings(96, 64, 32, 9, "window", long_side=0, padding="image", bg_rule="tcl", pamr=10,
                                 pamr_dilations=(8, 16))
    as_json = json.loads(json.dumps(settings.to_dict()))  # the manifest's `inference` block: tuples become lists
    assert InferenceSettings.from_dict({**as_json, "from_a_newer_version": 1}) == settings
    assert list(settings.to_dict()) == list(InferenceSettings.field_names())
    # a manifest written before these fields existed gets today's defaults (mmseg resize, per-crop padding, groupvit)
    old = {"short_side": 96, "window": 64, "stride": 32, "units": 9, "unit_scope": "image"}
    assert InferenceSettings.from_dict(old) == InferenceSettings(96, 64, 32, 9)


def test_model_files_and_keys_agree():
    assert set(MODEL_KEYS.values()) == set(MODEL_FILES)
    assert len(set(MODEL_FILES.values())) == len(MODEL_FILES)

# ---- geometry -----------------------------------------------------------------------------------


def test_resized_shape_rounds_the_scaled_sides():
    assert resized_shape(500, 334, 448) == (671, 448)
    assert resized_shape(333, 500, 448) == (448, 673)
    assert resized_shape(448, 448, 448) == (448, 448)
    assert resized_shape(5, 7, 448) == (448, 627)
    assert resized_shape(1, 5000, 2) == (2, 10000) and resized_shape(5000, 1, 1) == (5000, 1)
    assert resized_shape(1000, 1, 1) == (1000, 1) and min(resized_shape(3, 10_000, 1)) >= 1


def test_resized_shape_is_mmcv_imrescale():
    """mmcv.imrescale with scale (long_side, short_side): one factor, min(long / max(h, w), short / min(h, w)),
    each side int(side * factor + 0.5): halves round up (Python's round would take 2.5 to 2)."""
    assert resized_shape(4, 5, 2) == (2, 3)  # 5 * 0.5 = 2.5 -> 3
    assert resized_shape(100, 1000, 448, 2048) == (205, 2048)  # 448 / 100 would make 4480: the cap wins
    assert resized_shape(100, 1000, 448, 0) == (448, 4480)
    assert resized_shape(500, 334, 448, 2048) == (671, 448)
    for height, width in [(375, 500), (333, 500), (512, 683), (1024, 2048), (17, 400), (281, 500)]:
        factor = min(2048 / max(height, width), 448 / min(height, width))
        assert resized_shape(height, width, 448, 2048) == (int(height * factor + 0.5), int(width * factor + 0.5))


@pytest.mark.parametrize("size", [448, 449, 455, 600, 671, 672, 673, 896, 1000, 100, 3])
def test_grid_spans_are_mmseg_spans_moved_back_onto_the_output_stride_grid(size):
    mmseg = window_spans(size, 448, 224)
    ours = grid_spans(size, 448, 224, 8)
    for start, end in ours:
        assert start % 8 == 0 and 0 <= start < end <= size and end - start == min(448, size)
    # every mmseg window is ours moved back by < 8 px (duplicates made by the move dropped)
    assert {s - s % 8 for s, _ in mmseg} == {s for s, _ in ours}
    covered = np.zeros(size, dtype=bool)
    for start, end in ours:
        covered[start:end] = True
    layout = window_layout(size, 448, 448, 224, 8)
    grid_px = layout.grid_hw[0] * 8
    assert covered[:min(grid_px, size)].all() and abs(grid_px - size) < 8
    assert all(box_cells(box, 8)[1] <= layout.grid_hw[0] for box in layout.boxes)


def test_window_layouts():
    crop = window_layout(671, 448, 448, 224, 8)
    assert crop.boxes == ((0, 448, 0, 448), (216, 664, 0, 448)) and crop.grid_hw == (83, 56)
    image = window_layout(671, 448, 448, 224, 8, padding="image")  # mgca before issue 20: pad first
    assert image.boxes == ((0, 448, 0, 448), (224, 671, 0, 448)) and image.grid_hw == (84, 56)
    assert [b[:2] for b in image.boxes] == [(y1, min(y2, 671)) for y1, y2 in window_spans(672, 448, 224)]
    small = window_layout(100, 30, 64, 32, 8)  # shorter than the window: one crop of the whole axis, zero-padded
    assert {(b[2], b[3]) for b in small.boxes} == {(0, 30)} and small.grid_hw == (12, 4)  # 96 rows: 4 extended
    assert box_cells((0, 30, 16, 37), 8) == (0, 4, 2, 5)
    with pytest.raises(SettingsError, match="padding must be one of"):
        window_layout(10, 10, 8, 8, 8, padding="edge")


def test_round_up():
    assert [round_up(v, 8) for v in (1, 8, 9, 671)] == [8, 8, 16, 672]


@pytest.mark.parametrize("size, spans", [
    (448, [(0, 448)]), (100, [(0, 100)]), (600, [(0, 448), (152, 600)]),
    (896, [(0, 448), (224, 672), (448, 896)]), (672, [(0, 448), (224, 672)]),
])
def test_window_spans_follow_mmseg_slide_inference(size, spans):
    assert window_spans(size, 448, 224) == spans


def test_window_boxes_cover_every_pixel_row_major():
    boxes = window_boxes(72, 136, 32, 16)
    covered = np.zeros((72, 136), dtype=int)
    for y1, y2, x1, x2 in boxes:
        assert y2 - y1 <= 32 and x2 - x1 <= 32
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1
    assert boxes == sorted(boxes)


@pytest.mark.parametrize("shape, m, grid", [
    ((10, 10), 36, (6, 6)), ((10, 20), 12, (3, 4)), ((20, 10), 12, (4, 3)), ((10, 10), 12, (3, 4)),
    ((5, 9), 7, (1, 7)), ((9, 5), 7, (7, 1)), ((56, 84), 121, (11, 11)), ((3, 3), 1, (1, 1)), ((10, 10), 8, (2, 4)),
])
def test_meta_grid(shape, m, grid):
    assert meta_grid(*shape, m) == grid


def test_meta_points_follow_the_contract_formula():
    for height, width, m in [(28, 28, 36), (28, 42, 36), (7, 11, 12), (56, 56, 16), (4, 100, 36), (4, 6, 6)]:
        gy, gx = meta_grid(height, width, m)
        expected = [int(np.floor((i + 0.5) * height / gy)) * width + int(np.floor((j + 0.5) * width / gx))
                    for i in range(gy) for j in range(gx)]
        assert meta_point_indices(height, width, m) == expected
    assert meta_point_indices(4, 6, 6) == [1 * 6 + 1, 1 * 6 + 3, 1 * 6 + 5, 3 * 6 + 1, 3 * 6 + 3, 3 * 6 + 5]


def test_pixel_units_threshold():
    assert uses_pixel_units(0, 5, 5) and uses_pixel_units(25, 5, 5) and uses_pixel_units(30, 5, 5)
    assert not uses_pixel_units(24, 5, 5)


def test_mgca_settings_are_the_contracts():
    """The PyTorch path's InferenceConfig is the contract's settings plus evaluation extras: one definition."""
    pytest.importorskip("torch")
    from mgca.evalsets.specs import PAPER_PROTOCOL
    from mgca.inference import InferenceConfig

    config = InferenceConfig()
    assert isinstance(config, InferenceSettings)
    assert InferenceSettings(**{k: getattr(config, k) for k in InferenceSettings.field_names()}) == DEFAULT_SETTINGS
    assert (PAPER_PROTOCOL.short_side, PAPER_PROTOCOL.window, PAPER_PROTOCOL.stride) == (
        DEFAULT_SETTINGS.short_side, DEFAULT_SETTINGS.window, DEFAULT_SETTINGS.stride)


# ---- the declaration -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    (dict(units=1_000_000), "units must be an integer >= 0 and at most 1024"),
    (dict(pamr=1_000_000_000), "pamr must be an integer >= 0 and at most 100"),
    (dict(pamr_dilations=(1_000_000,)), r"pamr_dilations must be a non-empty tuple of positive integers \(at most"),
    (dict(pamr_dilations=tuple(range(1, 18))), "at most 16"),
    (dict(short_side=5000, long_side=0), "short_side must be a positive integer and at most 4096"),
    (dict(long_side=10_000), "long_side must be an integer >= 0 and at most 8192"),
    (dict(window=2048, stride=1024), "window must be a positive integer and at most 1024"),
])
def test_every_setting_has_an_upper_bound(bad, message):
    """Issue 29 item 8: values no real use needs (a 14.6 TiB allocation, a PAMR that never ends) are refused by
    the one validation that the manifest, the keyword overrides and the flags all go through."""
    with pytest.raises(SettingsError, match=message) as info:
        dataclasses.replace(InferenceSettings(64, 64, 32), **bad).validate(8)
    assert "\n" not in str(info.value)


def test_each_setting_is_declared_once_with_help_range_and_reason():
    from runtime.contract import SETTING_SPECS

    assert tuple(SETTING_SPECS) == InferenceSettings.field_names()
    for name, spec in SETTING_SPECS.items():
        assert spec.help and (spec.choices or spec.why), name  # what it does, and why its range is what it is
        default = getattr(DEFAULT_SETTINGS, name)
        assert spec.check(name, default) == default
        if spec.choices:
            assert default in spec.choices
        else:
            assert spec.maximum is not None and spec.minimum <= min((default,) if isinstance(default, int)
                                                                    else default) <= spec.maximum


def test_overrides_name_declared_settings_only():
    base = InferenceSettings(96, 64, 32, 9)
    assert base.with_overrides({"units": 0, "pamr_dilations": [8, 16]}) == dataclasses.replace(
        base, units=0, pamr_dilations=(8, 16))
    with pytest.raises(SettingsError, match="unknown inference setting 'unitz'; the settings are short_side, "):
        base.with_overrides({"unitz": 3})
