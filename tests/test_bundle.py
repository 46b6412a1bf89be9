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


def test_an_unknown_dense_mode_in_a_manifest_is_refused(bundle, tmp_path):
    from runtime import BundleError
    from runtime.bundle import load_bundle

    from .support import copy_bundle, edit_manifest

    edited = copy_bundle(bundle, tmp_path / "b")
    edit_manifest(edited, backbone__dense_mode="fancyclip")
    with pytest.raises(BundleError, match="backbone.dense_mode 'fancyclip' is not one of"):
        load_bundle(edited)


def test_a_graph_of_another_clip_is_refused_even_with_a_matching_sha256(bundle, tmp_path, tiny_config):
    """model.onnx swapped for another CLIP's and files_sha256 edited to match: it loaded and gave other labels."""
    import dataclasses

    import torch

    from export.onnx_export import export_onnx
    from mgca.model import build_model
    from runtime import BundleError, Segmenter
    from runtime.files import file_sha256

    from .support import WINDOW, copy_bundle, edit_manifest

    torch.manual_seed(1)
    other = build_model(dataclasses.replace(tiny_config.backbone, init_seed=7), tiny_config.decoder).eval()
    edited = copy_bundle(bundle, tmp_path / "b")
    export_onnx(other, edited / "model.onnx", window=WINDOW)
    manifest = edit_manifest(edited)
    edit_manifest(edited, files_sha256={**manifest["files_sha256"], "model.onnx": file_sha256(edited / "model.onnx")})
    with pytest.raises(BundleError, match=r"model.onnx was exported from another backbone than the manifest's "
                                          r"\(visual_sha256"):
        Segmenter(edited, backend="onnxruntime", device="cpu")
    Segmenter(bundle, backend="onnxruntime", device="cpu")  # the untouched bundle loads
