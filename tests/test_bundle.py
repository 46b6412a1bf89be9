"""runtime/bundle.py: reading a bundle's manifest. Its `inference` block goes through the contract's one
declaration of the settings, so a hand-edited value outside a setting's range is a one-line BundleError."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime import Segmenter
from runtime.bundle import load_bundle
from runtime.errors import BundleError

from .support import ONNX_CPU, as_unprivileged_user, copy_bundle, edit_manifest


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

    from .support import copy_bundle, edit_manifest

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


def test_altered_model_file_is_refused(bundle, tmp_path):
    altered = copy_bundle(bundle, tmp_path / "b")
    data = bytearray((altered / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    data[len(data) // 2 + 1] ^= 0xFF
    (altered / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx does not match its sha256.*re-export") as info:
        Segmenter(altered, **ONNX_CPU)
    assert "\n" not in str(info.value)


def test_wrong_or_missing_hash_is_refused(bundle, tmp_path):
    wrong = copy_bundle(bundle, tmp_path / "wrong")
    manifest = edit_manifest(wrong)
    edit_manifest(wrong, files_sha256={**manifest["files_sha256"], "model.onnx": "0" * 64})
    with pytest.raises(BundleError, match="does not match its sha256"):
        Segmenter(wrong, **ONNX_CPU)
    edit_manifest(wrong, files_sha256={k: v for k, v in manifest["files_sha256"].items() if k != "model.onnx"})
    with pytest.raises(BundleError, match="no sha256 for model.onnx"):
        Segmenter(wrong, **ONNX_CPU)
    cache = copy_bundle(bundle, tmp_path / "cache")
    with np.load(cache / "text_cache.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["embeddings"] = arrays["embeddings"][::-1].copy()  # same names, shuffled vectors
    np.savez(cache / "text_cache.npz", **arrays)
    with pytest.raises(BundleError, match="text_cache.npz does not match its sha256"):
        Segmenter(cache, **ONNX_CPU)
    with pytest.raises(BundleError, match="text_cache.npz does not match its sha256"):  # named explicitly too
        Segmenter(cache, **ONNX_CPU, text_cache=cache / "text_cache.npz")


@pytest.mark.parametrize("name", ["../outside/model.onnx", "/etc/passwd", "sub/model.onnx", ".."])
def test_model_paths_stay_inside_the_bundle(bundle, tmp_path, name):
    moved = copy_bundle(bundle, tmp_path / "b")
    (tmp_path / "outside").mkdir()
    shutil.copy(bundle / "model.onnx", tmp_path / "outside" / "model.onnx")
    edit_manifest(moved, models__onnx=name)
    with pytest.raises(BundleError, match="inside the bundle folder"):
        Segmenter(moved, **ONNX_CPU)


def test_links_out_of_the_bundle_are_refused(bundle, tmp_path):
    linked = copy_bundle(bundle, tmp_path / "b")
    (tmp_path / "elsewhere.onnx").write_bytes((bundle / "model.onnx").read_bytes())
    (linked / "model.onnx").unlink()
    (linked / "model.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    with pytest.raises(BundleError, match="links outside the bundle folder"):
        Segmenter(linked, **ONNX_CPU)


@pytest.mark.parametrize("std", [[0, 0, 0], [0.2, -0.1, 0.3], [0.2, float("nan"), 0.3]])
def test_normalisation_values_are_checked(bundle, tmp_path, std):
    bad = copy_bundle(bundle, tmp_path / "b")
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["input"]["std"] = std
    (bad / "manifest.json").write_text(json.dumps(manifest))  # NaN is written as the token NaN, which json reads
    with pytest.raises(BundleError, match="input.std must hold 3 positive finite numbers"):
        Segmenter(bad, **ONNX_CPU)


def test_edited_window_is_refused_at_load(bundle, tmp_path):
    """inference.window (and a top-level copy) changed together to another valid size: refused when the bundle is
    opened, since the graph's fixed input says otherwise, not at the first segment()."""
    edited = copy_bundle(bundle, tmp_path / "b")
    manifest = edit_manifest(edited)
    edit_manifest(edited, window=128, inference={**manifest["inference"], "window": 128, "short_side": 128,
                                                 "stride": 64})
    with pytest.raises(BundleError, match="model.onnx has input N x 3 x 64 x 64.*inference.window 128"):
        Segmenter(edited, **ONNX_CPU)
    edit_manifest(edited, window=64, inference=manifest["inference"])
    edit_manifest(edited, window=128)  # the two copies disagree
    with pytest.raises(BundleError, match="window 128 and inference.window 64 differ"):
        Segmenter(edited, **ONNX_CPU)


def test_unreadable_bundle_and_manifest_are_named(bundle, open_folder):
    closed = copy_bundle(bundle, open_folder / "closed")
    closed.chmod(0)
    with as_unprivileged_user(), pytest.raises(BundleError, match="cannot read bundle .*Permission denied") as info:
        Segmenter(closed, **ONNX_CPU)
    assert "\n" not in str(info.value)
    closed.chmod(0o755)
    (closed / "manifest.json").chmod(0)
    with as_unprivileged_user(), pytest.raises(BundleError, match="cannot read bundle .*manifest.json") as info:
        Segmenter(closed, **ONNX_CPU)
    assert "not valid JSON" not in str(info.value)
