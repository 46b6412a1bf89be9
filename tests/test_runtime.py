"""runtime/: the lean, torch-free inference runtime, checked against the PyTorch pipeline (mgca.inference)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from mgca.inference import InferenceConfig, SegmentationPredictor

import runtime
from runtime import BackendError, BundleError, Result, RuntimeInputError, Segmenter, TextCacheError, VocabularyError
from runtime.text_cache import load_text_cache
from runtime.units import assign_faiss, assign_numpy, meta_grid, meta_indices, tie_eps

REPO = Path(__file__).resolve().parents[1]
WINDOW = 64  # small export window: fast tests, several windows per image
SETTINGS = dict(short_side=96, window=WINDOW, stride=32, units=9, unit_scope="image")
CLASSES = ["cat", "dog", "road", "sky", "tree", "person", "car", "building"]


def export_bundle(checkpoint: Path, out: Path, vocab: list[str], *extra: str) -> Path:
    """A bundle written by the real exporter (`mgca-export`), small window so the tests stay fast."""
    from export.cli import main as export_main

    vocab_file = out.parent / f"{out.name}-vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    code = export_main(["--checkpoint", str(checkpoint), "--out", str(out), "--window", str(WINDOW),
                        "--short-side", str(SETTINGS["short_side"]), "--stride", str(SETTINGS["stride"]),
                        "--units", str(SETTINGS["units"]), "--vocab", str(vocab_file), *extra])
    assert code == 0, f"mgca-export failed with exit status {code}"
    return out


def text_cache(checkpoint: Path, out: Path, vocab: list[str]) -> Path:
    """`mgca-export text`: a cache for another vocabulary of the same backbone."""
    from export.cli import main as export_main

    vocab_file = out.with_suffix(".txt")
    vocab_file.write_text("\n".join(vocab) + "\n")
    assert export_main(["text", "--checkpoint", str(checkpoint), "--vocab", str(vocab_file), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    """fp32 + int8 bundle of `tiny_model` (tiny_checkpoint holds the same weights) with CLASSES as its vocabulary."""
    return export_bundle(tiny_checkpoint, tmp_path_factory.mktemp("bundle") / "tiny", CLASSES, "--int8")


@pytest.fixture(scope="session")
def segmenter(bundle) -> Segmenter:
    return Segmenter(bundle, backend="onnxruntime", device="cpu")


@pytest.fixture(scope="session")
def class_embeddings(bundle) -> np.ndarray:
    return load_text_cache(bundle / "text_cache.npz").embeddings


def predictor(model, embeddings, **overrides) -> SegmentationPredictor:
    cfg = InferenceConfig(**{**SETTINGS, **overrides})
    pred = SegmentationPredictor(model, cfg)
    pred.set_class_embeddings(torch.from_numpy(np.array(embeddings)), CLASSES)
    return pred


def blocky_image(rng, height, width, block=8) -> np.ndarray:
    """Piecewise-constant noise: a few regions per window, so units and classes actually vary."""
    small = rng.integers(0, 256, (-(-height // block), -(-width // block), 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(small, block, 0), block, 1)[:height, :width])


SIZES = [(40, 50), (64, 64), (96, 96), (120, 200), (333, 97), (17, 400)]


# ------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("overrides", [{}, {"unit_scope": "window"}, {"units": 0}, {"units": 6}],
                         ids=["image-units", "window-units", "pixel-units", "non-square-units"])
def test_labels_match_pytorch(bundle, tiny_model, class_embeddings, overrides):
    seg = Segmenter(bundle, backend="onnxruntime", device="cpu", **overrides)
    pred = predictor(tiny_model, class_embeddings, **overrides)
    rng = np.random.default_rng(0)
    agree = total = 0
    for height, width in SIZES:
        image = blocky_image(rng, height, width)
        ours = seg.segment(image).labels
        theirs = pred.predict(image)
        assert ours.shape == (height, width) and ours.dtype == np.int32
        agree += int((ours == theirs).sum())
        total += ours.size
        assert (ours == theirs).mean() >= 0.999, (height, width, (ours == theirs).mean())
    assert agree / total >= 0.999


def test_scores_and_background_match_pytorch(segmenter, tiny_model, class_embeddings):
    rng = np.random.default_rng(1)
    image = blocky_image(rng, 120, 90)
    result = segmenter.segment(image, return_scores=True)
    theirs = predictor(tiny_model, class_embeddings).predict_scores(image).numpy()
    assert result.scores.shape == (len(CLASSES), 120, 90)
    np.testing.assert_allclose(result.scores, theirs, atol=2e-4)
    probs = torch.softmax(torch.from_numpy(theirs) * 100, 0).max(0).values.numpy()
    # whole units share one probability: put the threshold in the widest gap between the 20th-80th percentiles
    levels = np.unique(probs[(probs >= np.percentile(probs, 20)) & (probs <= np.percentile(probs, 80))])
    widest = int(np.argmax(np.diff(levels)))
    threshold = float(levels[widest:widest + 2].mean())
    ours = segmenter.segment(image, background_threshold=threshold)
    ref = predictor(tiny_model, class_embeddings, background_threshold=threshold).predict(image)
    assert ours.class_names == ("background", *CLASSES)
    assert (ours.labels == 0).any() and (ours.labels > 0).any()
    assert (ours.labels == ref).mean() >= 0.999


def test_class_subset_and_order(segmenter, tiny_model, class_embeddings):
    image = blocky_image(np.random.default_rng(2), 80, 70)
    subset = ["sky", "cat", "car"]
    result = segmenter.segment(image, classes=subset)
    assert result.class_names == tuple(subset)
    rows = [CLASSES.index(c) for c in subset]
    pred = SegmentationPredictor(tiny_model, InferenceConfig(**SETTINGS))
    pred.set_class_embeddings(torch.from_numpy(np.array(class_embeddings[rows])), subset)
    assert (result.labels == pred.predict(image)).mean() >= 0.999


def test_batch_equals_single_calls(segmenter):
    rng = np.random.default_rng(3)
    images = [blocky_image(rng, h, w) for h, w in [(50, 60), (130, 70), (64, 64)]]
    batch = segmenter.segment(images)
    assert isinstance(batch, list) and len(batch) == 3
    for image, result in zip(images, batch):
        assert isinstance(result, Result) and result.scores is None
        np.testing.assert_array_equal(result.labels, segmenter.segment(image).labels)
    stacked = segmenter.segment(np.stack([images[2], images[2]]))
    np.testing.assert_array_equal(stacked[1].labels, batch[2].labels)


# ------------------------------------------------------------------------------------------ assignment
def test_meta_grid_and_points():
    assert meta_grid(10, 10, 36) == (6, 6)
    assert meta_grid(10, 20, 6) == (2, 3) and meta_grid(20, 10, 6) == (3, 2) and meta_grid(10, 10, 6) == (2, 3)
    assert meta_grid(5, 5, 7) == (1, 7)
    np.testing.assert_array_equal(meta_indices(4, 6, 2, 3), [1 * 6 + 1, 1 * 6 + 3, 1 * 6 + 5, 3 * 6 + 1, 3 * 6 + 3, 3 * 6 + 5])


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


def test_describe(segmenter):
    info = segmenter.describe()
    assert info["backend"] == "onnxruntime" and info["provider"] == "CPUExecutionProvider"
    assert info["model"] == "model.onnx" and info["window"] == WINDOW and info["stride"] == 32
    assert info["assignment"] in ("numpy", "faiss") and "ms" in info["assignment_reason"]
    assert info["vocabulary"]["classes"] == len(CLASSES)


# ------------------------------------------------------------------------------------------ threads
def test_thread_safety_8_threads_x_20_calls(segmenter):
    rng = np.random.default_rng(5)
    images = [blocky_image(rng, int(rng.integers(30, 150)), int(rng.integers(30, 150))) for _ in range(8)]
    serial = [segmenter.segment(img).labels for img in images]
    results: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        try:
            start.wait()
            for call in range(20):
                index = (t + call) % len(images)
                results[(t, call)] = (index, segmenter.segment(images[index]).labels)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 160
    for index, labels in results.values():
        np.testing.assert_array_equal(labels, serial[index])


# ------------------------------------------------------------------------------------------ C++ neighbours
@pytest.mark.parametrize("size", [(120, 200), (96, 96)], ids=["resized", "already-short-side"])
def test_bgr_frames_equal_rgb(bundle, segmenter, size):
    rgb = blocky_image(np.random.default_rng(10), *size)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    expected = segmenter.segment(rgb, return_scores=True)
    ours = segmenter.segment(bgr, color_order="bgr", return_scores=True)
    np.testing.assert_array_equal(ours.labels, expected.labels)
    np.testing.assert_array_equal(ours.scores, expected.scores)  # the swap is exact, not merely close
    assert not np.array_equal(segmenter.segment(bgr).labels, expected.labels)  # the order does matter here
    bgr_default = Segmenter(bundle, backend="onnxruntime", device="cpu", color_order="BGR")
    np.testing.assert_array_equal(bgr_default.segment(bgr).labels, expected.labels)
    np.testing.assert_array_equal(bgr_default.segment(rgb, color_order="rgb").labels, expected.labels)
    bgra = np.concatenate([bgr, np.full((*size, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(bgr_default.segment([bgra])[0].labels, expected.labels)
    with pytest.raises(RuntimeInputError, match="color_order must be 'rgb' or 'bgr'") as info:
        segmenter.segment(rgb, color_order="hsv")
    assert "\n" not in str(info.value)


def _spy(monkeypatch, module, name: str) -> list[np.ndarray]:
    """Record the image argument of module.name (looked up at call time by prepare())."""
    seen: list[np.ndarray] = []
    original = getattr(module, name)

    def spy(image, *args, **kwargs):
        seen.append(image)
        return original(image, *args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen


@pytest.mark.parametrize("color_order", ["rgb", "bgr"])
def test_caller_buffer_is_read_in_place(segmenter, monkeypatch, color_order):
    """Nothing copies the caller's uint8 buffer before the resize (or, at the right size already, the float
    conversion) that makes the first new array; read-only buffers work and are left untouched."""
    import runtime.preprocess as pre

    rng = np.random.default_rng(11)
    resized_in, normalized_in = _spy(monkeypatch, pre, "resize_short_side"), _spy(monkeypatch, pre, "normalize_pad")
    for size in [(120, 200), (96, 96)]:
        image = blocky_image(rng, *size)
        assert image.flags.c_contiguous
        reference = image.copy()
        image.setflags(write=False)
        resized_in.clear(), normalized_in.clear()
        labels = segmenter.segment(image, color_order=color_order).labels
        assert labels.shape == size
        assert len(resized_in) == 1 and np.shares_memory(resized_in[0], image)
        assert resized_in[0].__array_interface__["data"][0] == image.__array_interface__["data"][0]
        assert np.shares_memory(normalized_in[0], image) == (size[0] == 96)  # no resize: normalisation reads it
        np.testing.assert_array_equal(image, reference)
        assert not image.flags.writeable
    batch = np.stack([blocky_image(rng, 70, 80) for _ in range(2)])
    resized_in.clear()
    segmenter.segment(batch, color_order=color_order)
    assert len(resized_in) == 2 and all(np.shares_memory(seen, batch) for seen in resized_in)


def test_non_contiguous_views_are_read_correctly(segmenter, monkeypatch):
    import runtime.preprocess as pre

    base = blocky_image(np.random.default_rng(12), 160, 240)
    views = [base[::2, ::2], base[:, ::-1], base[10:130, 20:200], np.asfortranarray(base)]
    resized_in = _spy(monkeypatch, pre, "resize_short_side")
    for view in views:
        resized_in.clear()
        labels = segmenter.segment(view).labels
        np.testing.assert_array_equal(labels, segmenter.segment(np.ascontiguousarray(view)).labels)
        assert np.shares_memory(resized_in[0], view)  # handed to cv2.resize as is, no copy of ours


def test_num_threads_caps_onnxruntime_and_faiss(bundle, monkeypatch):
    import runtime.units as units

    caps: list[int | None] = []
    original = units.omp_thread_cap
    monkeypatch.setattr(units, "omp_thread_cap", lambda n: caps.append(n) or original(n))
    capped = Segmenter(bundle, backend="onnxruntime", device="cpu", assignment="faiss", num_threads=1)
    free = Segmenter(bundle, backend="onnxruntime", device="cpu", assignment="faiss")
    info = capped.describe()
    assert info["num_threads"] == 1 and info["intra_op_threads"] == 1 and info["inter_op_threads"] == 1
    assert capped.post_slots == 1
    assert free.describe()["intra_op_threads"] == 0 and free.describe()["num_threads"] is None  # 0 = onnxruntime's default
    image = blocky_image(np.random.default_rng(13), 100, 120)
    caps.clear()
    capped.segment(image)
    assert caps and set(caps) == {1}
    caps.clear()
    free.segment(image)
    assert caps and set(caps) == {None}
    for bad in (0, -2, 1.5, True):
        with pytest.raises(RuntimeInputError, match="num_threads must be a positive integer"):
            Segmenter(bundle, backend="onnxruntime", device="cpu", num_threads=bad)


def test_faiss_thread_cap_is_local_to_the_calling_thread():
    faiss = pytest.importorskip("faiss")
    from runtime.units import omp_thread_cap

    before = faiss.omp_get_max_threads()
    seen: dict[str, int] = {}
    inside, release = threading.Event(), threading.Event()

    def capped() -> None:
        with omp_thread_cap(1):
            seen["inside"] = faiss.omp_get_max_threads()
            inside.set()
            release.wait(30)
        seen["after"] = faiss.omp_get_max_threads()

    thread = threading.Thread(target=capped)
    thread.start()
    assert inside.wait(30)
    seen["other thread meanwhile"] = faiss.omp_get_max_threads()
    release.set()
    thread.join()
    assert seen == {"inside": 1, "other thread meanwhile": before, "after": before}


def test_two_segmenters_do_not_affect_each_other(bundle):
    import cv2

    faiss = pytest.importorskip("faiss")
    knobs = lambda: (cv2.getNumThreads(), faiss.omp_get_max_threads(), dict(os.environ))  # noqa: E731
    before = knobs()
    rng = np.random.default_rng(14)
    images = [blocky_image(rng, 90, 130), blocky_image(rng, 150, 100)]
    a = Segmenter(bundle, backend="onnxruntime", device="cpu", num_threads=1, color_order="bgr", assignment="faiss", units=6)
    a_first = [a.segment(np.ascontiguousarray(img[:, :, ::-1])).labels for img in images]
    a_info = a.describe()
    b = Segmenter(bundle, backend="onnxruntime", device="cpu", num_threads=2, assignment="auto", unit_scope="window")
    b_labels = [b.segment(img).labels for img in images]
    a_again = [a.segment(np.ascontiguousarray(img[:, :, ::-1])).labels for img in images]
    for first, again in zip(a_first, a_again):
        np.testing.assert_array_equal(first, again)
    assert a.describe() == a_info and a.color_order == "bgr" and b.color_order == "rgb"
    assert a.describe()["intra_op_threads"] == 1 and b.describe()["intra_op_threads"] == 2
    assert a.assignment == "faiss" and b.assignment_timings is not a.assignment_timings
    reference = Segmenter(bundle, backend="onnxruntime", device="cpu", unit_scope="window", assignment="numpy")
    for img, labels in zip(images, b_labels):
        np.testing.assert_array_equal(labels, reference.segment(img).labels)
    assert knobs() == before  # no process-wide thread count or environment variable was touched


def test_runtime_modules_hold_no_mutable_state():
    """No module-level dict/list/set/threading.local in runtime/: caches and knobs live on instances."""
    import importlib
    import pkgutil
    import types

    found = []
    for info in pkgutil.iter_modules(runtime.__path__):
        module = importlib.import_module(f"runtime.{info.name}")
        for name, value in vars(module).items():
            if name.startswith("__") or isinstance(value, (types.ModuleType, type, types.FunctionType)):
                continue
            if isinstance(value, (dict, list, set, bytearray, threading.local)) or hasattr(value, "acquire"):
                found.append(f"runtime.{info.name}.{name}: {type(value).__name__}")
    assert not found, found


# ------------------------------------------------------------------------------------------ bad input
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
    with pytest.raises(TextCacheError, match=r"was made for backbone ViT-B-16 .* but bundle .* uses mgca-tiny .*rebuild it with `mgca-export text") as info:
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


def test_tensorrt_missing_is_one_line_error(bundle):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BundleError, match="no TensorRT fp16 model.*--trt fp16"):
            Segmenter(bundle, backend="tensorrt", device="cuda")
        with pytest.raises(BackendError, match="tensorrt package") as info:
            runtime.engines.TensorRTEngine(bundle / "model.onnx", "image", "embeddings", "cuda")
        assert "\n" not in str(info.value)
    else:
        pytest.skip("tensorrt is installed; the missing-package error cannot be shown")
    with pytest.raises(BackendError, match="unknown backend"):
        Segmenter(bundle, backend="openvino")


@pytest.mark.skipif(not runtime.engines.tensorrt_available(), reason="needs tensorrt, cuda-python and an NVIDIA GPU")
def test_tensorrt_backend_matches_onnxruntime(tiny_checkpoint, tmp_path, segmenter):  # pragma: no cover - GPU machines only
    trt_bundle = export_bundle(tiny_checkpoint, tmp_path / "trt", CLASSES, "--trt", "fp16")
    seg = Segmenter(trt_bundle, backend="tensorrt", device="cuda")
    assert seg.describe()["provider"] == "TensorRT" and seg.describe()["model"] == "model.fp16.engine"
    image = blocky_image(np.random.default_rng(7), 100, 130)
    assert (seg.segment(image).labels == segmenter.segment(image).labels).mean() >= 0.99
    assert Segmenter(trt_bundle).backend == "tensorrt"  # auto picks the engine when TensorRT is usable


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_cuda_fallback_is_reported(bundle, monkeypatch):
    """onnxruntime-gpu without a usable GPU lists CUDA but runs on the CPU: describe() must say so."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    seg = Segmenter(bundle, backend="onnxruntime", device="auto")
    assert seg.describe()["requested_providers"][0] == "CUDAExecutionProvider"
    assert seg.describe()["provider"] == "CPUExecutionProvider"
    with pytest.raises(BackendError, match="fell back to the CPU provider"):
        Segmenter(bundle, backend="onnxruntime", device="cuda")


def test_int8_backend(bundle, segmenter):
    seg = Segmenter(bundle, backend="onnxruntime", device="cpu", precision="int8")
    assert seg.describe()["model"] == "model.int8.onnx" and seg.describe()["precision"] == "int8"
    rng = np.random.default_rng(9)
    agree = np.mean([(seg.segment(img).labels == segmenter.segment(img).labels).mean()
                     for img in (blocky_image(rng, 96, 128), blocky_image(rng, 150, 100))])
    assert agree >= 0.8, agree  # random-init weights: int8 noise flips near-tied classes


# ------------------------------------------------------------------------------------------ no torch
NO_TORCH = textwrap.dedent("""
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "mgca", "export", "open_clip"):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, Block())
    import numpy as np
    import runtime
    seg = runtime.Segmenter(sys.argv[1], backend="auto", device="auto")
    result = seg.segment(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8))
    assert result.labels.shape == (70, 90)
    bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "mgca", "export")]
    assert not bad, bad
    print("OK", seg.describe()["provider"], seg.describe()["assignment"])
""")


def test_runtime_never_imports_torch(bundle):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(bundle)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("OK CPUExecutionProvider")


def test_low_memory_label_path_is_identical(segmenter, monkeypatch):
    import runtime.segmenter as seg_module

    image = blocky_image(np.random.default_rng(8), 150, 230)
    stacked = segmenter.segment(image).labels
    monkeypatch.setattr(seg_module, "FULL_RES_BUDGET_BYTES", 0)  # force the per-channel running argmax
    np.testing.assert_array_equal(segmenter.segment(image).labels, stacked)


# ------------------------------------------------------------------------------------------ mgca-eval --engine
EVAL_SMALL = ["--short-side", "96", "--window", str(WINDOW), "--stride", "32", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def voc_tree(tmp_path_factory) -> Path:
    """A 3-image VOC2012 tree (mmseg layout): random pixels, labels with background, two classes and void."""
    from PIL import Image

    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    rng = np.random.default_rng(0)
    names = ["a", "b", "c"]
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, (h, w) in zip(names, [(40, 60), (90, 50), (20, 20)]):
        Image.fromarray(blocky_image(rng, h, w)).save(root / "JPEGImages" / f"{name}.jpg")
        label = np.zeros((h, w), dtype=np.uint8)
        label[h // 4:h // 2, w // 4:w // 2] = 8
        label[-3:, :] = 255
        label[: h // 5, -w // 3:] = 15
        Image.fromarray(label).save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="module")
def voc_cache(tmp_path_factory, tiny_checkpoint) -> Path:
    """A text cache with VOC's prompt classes for the bundle's backbone (`mgca-export text`)."""
    from mgca.evalsets import get_spec

    return text_cache(tiny_checkpoint, tmp_path_factory.mktemp("cache") / "voc.npz", list(get_spec("voc21").prompt_classes))


def test_eval_engine_matches_torch_side_by_side(bundle, voc_tree, voc_cache, tiny_checkpoint, tmp_path, capsys):
    from mgca.cli import eval as eval_cli

    out_json = tmp_path / "cmp.json"
    code = eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--engine", str(bundle), "--text-cache", str(voc_cache),
                          "--compare-torch", str(tiny_checkpoint), "--json", str(out_json), *EVAL_SMALL])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "engine: runtime onnxruntime fp32 (model.onnx) on CPUExecutionProvider" in out.out
    assert "mIoU" in out.out and "aeroplane" in out.out and "labels identical on" in out.out
    result = json.loads(out_json.read_text())
    assert result["label_agreement"] >= 0.999
    assert abs(result["mIoU"] - result["torch"]["mIoU"]) < 0.5
    assert result["inference"]["background_threshold"] == 0.95 and result["num_images"] == 3

    plain_json = tmp_path / "engine.json"
    code = eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--engine", str(bundle), "--text-cache", str(voc_cache),
                          "--json", str(plain_json), *EVAL_SMALL])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(plain_json.read_text())["mIoU"] == result["mIoU"]


@pytest.mark.parametrize("extra, message", [
    ([], "mgca-export text --checkpoint CKPT --dataset voc21"),  # the bundle's own cache lacks VOC's classes
    (["--text-cache", "VOC", "--window", "128"], "exported with"),
    (["--text-cache", "VOC", "--backend", "tensorrt"], "TensorRT fp16 model"),
])
def test_eval_engine_errors_are_one_line(bundle, voc_tree, voc_cache, capsys, extra, message):
    from mgca.cli import eval as eval_cli

    extra = [str(voc_cache) if e == "VOC" else e for e in extra]
    args = ["--dataset", "voc21", "--root", str(voc_tree), "--engine", str(bundle), *EVAL_SMALL, *extra]
    code = eval_cli.main(args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


# ------------------------------------------------------------------------------------------ lean install
def torch_stubs(folder: Path) -> Path:
    """Packages named torch/torchvision/open_clip whose import fails: put first on PYTHONPATH, they make
    PyTorch unimportable for any interpreter or console script started with that environment."""
    for name in ("torch", "torchvision", "open_clip"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    return folder


def test_eval_engine_runs_without_torch(bundle, voc_tree, voc_cache, tmp_path, capsys):
    from mgca.cli import eval as eval_cli

    args = ["--dataset", "voc21", "--root", str(voc_tree), "--engine", str(bundle), "--text-cache", str(voc_cache), *EVAL_SMALL]
    assert eval_cli.main([*args, "--json", str(tmp_path / "in-process.json")]) == 0, capsys.readouterr().err
    capsys.readouterr()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(torch_stubs(tmp_path / "stubs")), str(REPO)])}
    blocked = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert blocked.returncode != 0 and "torch is blocked" in blocked.stderr  # the stub really hides torch
    proc = subprocess.run([sys.executable, "-m", "mgca.cli.eval", *args, "--json", str(tmp_path / "no-torch.json")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mIoU" in proc.stdout
    ours, theirs = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("no-torch", "in-process"))
    assert ours["mIoU"] == theirs["mIoU"] and ours["per_class"] == theirs["per_class"]
    # a PyTorch path in a torch-less install is a one-line error, not a traceback
    proc = subprocess.run([sys.executable, "-m", "mgca.cli.eval", *args, "--compare-torch", "ckpt.pt"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "pip install 'mgca[train]'" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# pip cannot reach a package index: only these skip the venv test; any other pip failure fails it
PIP_OFFLINE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
               "Network is unreachable", "Max retries exceeded", "Connection refused", "ProxyError", "ConnectTimeoutError")
LEAN_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    try:
        import torch
    except ImportError:
        pass
    else:
        raise SystemExit(f"torch is importable in the lean venv: {torch.__file__}")
    import runtime
    assert Path(runtime.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), runtime.__file__  # the installed copy
    bundle, images, out = sys.argv[1:4]
    seg = runtime.Segmenter(bundle)
    with np.load(images) as data:
        labels = {k: seg.segment(data[k]).labels for k in data.files}
        labels.update({f"bgr-{k}": seg.segment(np.ascontiguousarray(data[k][:, :, ::-1]), color_order="bgr").labels for k in data.files})
    np.savez(out, **labels)
    print(json.dumps(seg.describe()))
""")


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) with `pip install <project>` and NO extras: the base list only.

    The project is copied out first: pip builds local projects in place and would write build/ and
    *.egg-info into the working tree others are using. ~25 s with a warm pip cache."""
    import shutil

    root = tmp_path_factory.mktemp("lean")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in ("mgca", "export", "runtime", "calibration"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    proc = subprocess.run([str(python), "-m", "pip", "install", str(src)], capture_output=True, text=True, env=env, cwd=root, timeout=900)
    if proc.returncode != 0:
        log = proc.stdout + proc.stderr
        reason = next((marker for marker in PIP_OFFLINE if marker in log), None)
        if reason:
            pytest.skip(f"pip cannot reach the package index ({reason}); the lean install is untested here")
        pytest.fail(f"pip install of the base (no extras) dependency list failed:\n{log[-3000:]}")
    return venv


@pytest.mark.slow
def test_base_install_segments_and_evaluates_without_torch(lean_venv, bundle, segmenter, voc_tree, voc_cache, tmp_path, capsys):
    """The base dependency list alone loads a bundle written by the [train] exporter, segments (RGB and BGR)
    with the same labels as this environment, and runs `mgca-eval --engine` to the same mIoU."""
    python, bindir = lean_venv / "bin" / "python", lean_venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", "")])
    rng = np.random.default_rng(20)
    images = {f"{h}x{w}": blocky_image(rng, h, w) for h, w in [(96, 96), (120, 200), (333, 97)]}
    np.savez(tmp_path / "images.npz", **images)
    proc = subprocess.run([str(python), "-c", LEAN_SCRIPT, str(bundle), str(tmp_path / "images.npz"), str(tmp_path / "labels.npz")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1])["provider"] == "CPUExecutionProvider"
    with np.load(tmp_path / "labels.npz") as lean:
        for key, image in images.items():
            expected = segmenter.segment(image).labels
            np.testing.assert_array_equal(lean[key], expected)
            np.testing.assert_array_equal(lean[f"bgr-{key}"], expected)

    from mgca.cli import eval as eval_cli

    args = ["--dataset", "voc21", "--root", str(voc_tree), "--engine", str(bundle), "--text-cache", str(voc_cache), *EVAL_SMALL]
    assert eval_cli.main([*args, "--json", str(tmp_path / "main.json")]) == 0, capsys.readouterr().err
    proc = subprocess.run([str(bindir / "mgca-eval"), *args, "--json", str(tmp_path / "lean.json")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lean, main = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("lean", "main"))
    assert lean["mIoU"] == main["mIoU"] and lean["per_class"] == main["per_class"]
