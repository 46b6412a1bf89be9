"""Bad input to the runtime: images converted or refused in one line, vocabularies and text caches checked,
broken bundles named with the fix."""
from __future__ import annotations

import json

import numpy as np
import pytest

from runtime import BundleError, RuntimeInputError, Segmenter, SettingsError, TextCacheError, VocabularyError

from .support import CLASSES, blocky_image


def test_image_conversions(segmenter):
    rng = np.random.default_rng(6)
    gray = blocky_image(rng, 60, 70)[:, :, 0].copy()
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    expected = segmenter.segment(rgb).labels
    np.testing.assert_array_equal(segmenter.segment(gray).labels, expected)
    np.testing.assert_array_equal(segmenter.segment(gray[:, :, None]).labels, expected)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (60, 70, 1), dtype=np.uint8)], axis=2)
    np.testing.assert_array_equal(segmenter.segment(rgba).labels, expected)
    np.testing.assert_array_equal(segmenter.segment(rgb.astype(np.int64)).labels, expected)  # lossless
    np.testing.assert_array_equal(segmenter.segment(rgb[:, ::-1][:, ::-1]).labels, expected)  # non-contiguous views


@pytest.mark.parametrize("image, message", [
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 0), np.uint8), "empty"),
    (np.zeros((10, 10, 3), np.float32), "float32"),
    (np.zeros((10, 10, 3), bool), "bool"),
    (np.full((10, 10, 3), 300, np.uint16), "outside 0..255"),
    (np.zeros((10, 10, 2), np.uint8), "2 channels"),
    (np.zeros((10,), np.uint8), "shape"),
    ("not an image", "must be a numpy array"),
])
def test_bad_images_refused(segmenter, image, message):
    with pytest.raises(RuntimeInputError, match=message) as info:
        segmenter.segment(image)
    assert "\n" not in str(info.value)


def test_unknown_class_and_missing_vocabulary(segmenter, bundle, tmp_path):
    with pytest.raises(VocabularyError, match=r"'unicorn'.*mgca-export text") as info:
        segmenter.segment(np.zeros((20, 20, 3), np.uint8), classes=["cat", "unicorn"])
    assert "\n" not in str(info.value)
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.onnx", "manifest.json"):
        (bare / name).write_bytes((bundle / name).read_bytes())
    manifest = json.loads((bare / "manifest.json").read_text())
    manifest["text_cache"] = None
    (bare / "manifest.json").write_text(json.dumps(manifest))
    seg = Segmenter(bare, backend="onnxruntime", device="cpu")
    with pytest.raises(VocabularyError, match="no text cache"):
        seg.segment(np.zeros((20, 20, 3), np.uint8))
    seg.set_vocabulary(bundle / "text_cache.npz")  # a cache file passed in later works
    assert seg.segment(np.zeros((20, 20, 3), np.uint8)).class_names == tuple(CLASSES)
    other = Segmenter(bare, backend="onnxruntime", device="cpu", text_cache=bundle / "text_cache.npz")
    assert other.class_names == tuple(CLASSES)


def test_mismatched_text_cache_refused(bundle, tmp_path):
    with np.load(bundle / "text_cache.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta.update(arch="ViT-B-16", text_sha256="f" * 64)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "other.npz", **arrays)
    with pytest.raises(TextCacheError,
                       match=r"was made for backbone ViT-B-16 .* but bundle .* uses mgca-tiny "
                             r".*rebuild it with `mgca-export text") as info:
        Segmenter(bundle, backend="onnxruntime", device="cpu", text_cache=tmp_path / "other.npz")
    assert "\n" not in str(info.value)


def test_bundle_errors(bundle, tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        Segmenter(tmp_path / "nope")
    with pytest.raises(BundleError, match="no manifest.json"):
        Segmenter(tmp_path)
    broken = tmp_path / "b"
    broken.mkdir()
    manifest = json.loads((bundle / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "format": "mgca-bundle/9"}))
    with pytest.raises(BundleError, match="unknown bundle format 'mgca-bundle/9'"):
        Segmenter(broken)
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="model.onnx is missing"):
        Segmenter(broken)
    (broken / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes())
    manifest["models"]["onnx_int8"] = None
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="no int8 ONNX model.*--int8"):
        Segmenter(broken, backend="onnxruntime", precision="int8")
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Segmenter(broken)
    bad_window = {**manifest, "inference": {**manifest["inference"], "window": 60}}
    (broken / "manifest.json").write_text(json.dumps(bad_window))
    with pytest.raises(BundleError, match="inference window 60 must be a positive multiple of the output stride 8"):
        Segmenter(broken)


def test_bad_settings_overrides_are_one_line_settings_errors(bundle):
    for overrides, message in [(dict(stride=12), "stride 12 must be a multiple of the output stride 8"),
                               (dict(stride=128), "at most the window 64"), (dict(units=-3), "units must be"),
                               (dict(unit_scope="tile"), "unit_scope must be one of")]:
        with pytest.raises(SettingsError, match=message) as info:
            Segmenter(bundle, backend="onnxruntime", device="cpu", **overrides)
        assert "\n" not in str(info.value)


def test_reads_version_1_manifests(bundle, tmp_path):
    """mgca-bundle/1 wrote the window (and arch) at the top level too; the inference block it also wrote is read."""
    old = tmp_path / "v1"
    old.mkdir()
    for name in ("model.onnx", "text_cache.npz"):
        (old / name).write_bytes((bundle / name).read_bytes())
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(format="mgca-bundle/1", arch=manifest["backbone"]["arch"], window=manifest["inference"]["window"])
    manifest["models"]["onnx_int8"] = None
    (old / "manifest.json").write_text(json.dumps(manifest))
    seg = Segmenter(old, backend="onnxruntime", device="cpu")
    assert seg.bundle.arch == "mgca-tiny" and seg.settings == Segmenter(bundle, backend="onnxruntime").settings
