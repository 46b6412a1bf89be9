"""runtime/bundle.py: reading a bundle's manifest. Its `inference` block goes through the contract's one
declaration of the settings, so a hand-edited value outside a setting's range is a one-line BundleError."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runtime.bundle import load_bundle
from runtime.errors import BundleError


def edited_copy(bundle: Path, to: Path, **inference) -> Path:
    shutil.copytree(bundle, to)
    manifest = json.loads((to / "manifest.json").read_text())
    manifest["inference"].update(inference)
    (to / "manifest.json").write_text(json.dumps(manifest))
    return to


@pytest.mark.parametrize("edit, message", [
    ({"units": 1_000_000}, "units must be an integer >= 0 and at most 1024"),  # was a 14.6 TiB allocation
    ({"pamr": 1_000_000_000}, "pamr must be an integer >= 0 and at most 100"),  # hung every call
    ({"pamr_dilations": [1_000_000]}, "pamr_dilations must be a non-empty tuple of positive integers"),  # 43.7 TiB
    ({"short_side": 100_000, "long_side": 0}, "short_side must be a positive integer and at most 4096"),
])
def test_out_of_range_manifest_settings_are_one_line(bundle, tmp_path, edit, message):
    """Issue 29 item 8: a manifest's settings are bounded where they are declared."""
    copy = edited_copy(bundle, tmp_path / "edited", **edit)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(copy)
    assert "\n" not in str(info.value) and "re-export the bundle" in str(info.value)


def test_in_range_manifest_settings_load(bundle, tmp_path):
    copy = edited_copy(bundle, tmp_path / "edited", units=1024, pamr=100, pamr_dilations=[1, 128])
    settings = load_bundle(copy).inference
    assert (settings.units, settings.pamr, settings.pamr_dilations) == (1024, 100, (1, 128))


@pytest.mark.parametrize("precision, role", [("fp32", "onnx_int8"), ("int8", "onnx")])
def test_swapped_model_files_are_refused_even_with_matching_sha256(bundle, tmp_path, precision, role):
    """model.onnx and model.int8.onnx swapped, files_sha256 edited to match: the wrong graph ran silently. Each
    graph records the manifest key it was written as (ONNX metadata `model_role`), checked when it is opened."""
    from runtime import Segmenter
    from runtime.files import file_sha256

    from .test_reliability import copy_bundle, edit_manifest

    swapped = copy_bundle(bundle, tmp_path / "b")
    fp32, int8 = (swapped / "model.onnx").read_bytes(), (swapped / "model.int8.onnx").read_bytes()
    (swapped / "model.onnx").write_bytes(int8)
    (swapped / "model.int8.onnx").write_bytes(fp32)
    manifest = edit_manifest(swapped)
    edit_manifest(swapped, files_sha256={**manifest["files_sha256"], "model.onnx": file_sha256(swapped / "model.onnx"),
                                         "model.int8.onnx": file_sha256(swapped / "model.int8.onnx")})
    with pytest.raises(BundleError, match=rf"holds the graph exported as models.{role} .*swapped") as info:
        Segmenter(swapped, backend="onnxruntime", device="cpu", precision=precision)
    assert "\n" not in str(info.value)
    Segmenter(bundle, backend="onnxruntime", device="cpu", precision=precision)  # the untouched bundle loads
