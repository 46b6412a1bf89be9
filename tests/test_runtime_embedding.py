"""Embedding the runtime next to other code: concurrent callers, OpenCV BGR frames, the caller's buffer read in
place, thread caps local to one Segmenter, and no process-wide or module-level state."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import runtime
from runtime import RuntimeInputError, Segmenter

from .support import blocky_image


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
        except BaseException as err:  # reported below
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
    resized_in, normalized_in = _spy(monkeypatch, pre, "resize_image"), _spy(monkeypatch, pre, "normalize")
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
    resized_in = _spy(monkeypatch, pre, "resize_image")
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
    # 0 = onnxruntime's default
    assert free.describe()["intra_op_threads"] == 0 and free.describe()["num_threads"] is None
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
    knobs = lambda: (cv2.getNumThreads(), faiss.omp_get_max_threads(), dict(os.environ))
    before = knobs()
    rng = np.random.default_rng(14)
    images = [blocky_image(rng, 90, 130), blocky_image(rng, 150, 100)]
    a = Segmenter(bundle, backend="onnxruntime", device="cpu", num_threads=1, color_order="bgr", assignment="faiss",
                  units=6)
    a_first = [a.segment(np.ascontiguousarray(img[:, :, ::-1])).labels for img in images]
    a_info = a.describe()
    b = Segmenter(bundle, backend="onnxruntime", device="cpu", num_threads=2, assignment="auto", unit_scope="window")
    b_labels = [b.segment(img).labels for img in images]
    a_again = [a.segment(np.ascontiguousarray(img[:, :, ::-1])).labels for img in images]
    for first, again in zip(a_first, a_again, strict=True):
        np.testing.assert_array_equal(first, again)
    assert a.describe() == a_info and a.color_order == "bgr" and b.color_order == "rgb"
    assert a.describe()["intra_op_threads"] == 1 and b.describe()["intra_op_threads"] == 2
    assert a.assignment == "faiss" and b.assignment_timings is not a.assignment_timings
    reference = Segmenter(bundle, backend="onnxruntime", device="cpu", unit_scope="window", assignment="numpy")
    for img, labels in zip(images, b_labels, strict=True):
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
