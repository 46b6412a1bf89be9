"""Runtime backends: what describe() reports, onnxruntime fp32/int8, CUDA fallback, TensorRT (GPU machines only,
else its missing-package error)."""
from __future__ import annotations

import numpy as np
import pytest

import runtime
from runtime import BackendError, BundleError, Segmenter

from .support import CLASSES, WINDOW, blocky_image, export_with_cli


def test_describe(segmenter):
    info = segmenter.describe()
    assert info["backend"] == "onnxruntime" and info["provider"] == "CPUExecutionProvider"
    assert info["model"] == "model.onnx" and info["window"] == WINDOW and info["stride"] == 32
    assert info["assignment"] in ("numpy", "faiss") and "ms" in info["assignment_reason"]
    assert info["vocabulary"]["classes"] == len(CLASSES)


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
        Segmenter(bundle, backend="openvivo")


@pytest.mark.skipif(not runtime.engines.tensorrt_available(), reason="needs tensorrt, cuda-python and an NVIDIA GPU")
def test_tensorrt_backend_matches_onnxruntime(tiny_checkpoint, tmp_path,
                                              segmenter):  # pragma: no cover - GPU machines only
    trt_bundle = export_with_cli(tiny_checkpoint, tmp_path / "trt", CLASSES, "--trt", "fp16")
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



def most_runs_in_flight(engine, callers: int = 6) -> int:
    """The most `session.run` calls in flight at once while `callers` threads call `engine.run` together."""
    import threading
    import time

    in_flight, most, lock = [0], [0], threading.Lock()
    real_run = engine.session.run

    def counting_run(*args, **kwargs):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.2)  # hold the slot long enough for the other callers to arrive
        try:
            return real_run(*args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    engine.session = type("Proxy", (), {"run": staticmethod(counting_run)})()
    batch = np.zeros((1, 3, WINDOW, WINDOW), dtype=np.float32)
    threads = [threading.Thread(target=engine.run, args=(batch,)) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return most[0]


def test_cpu_engine_runs_one_call_at_a_time_and_drops_the_model_bytes(bundle):
    """On CPU concurrent callers queue for the session (each extra run would add its own activation memory), and
    the engine keeps no copy of the model file's bytes once the session is built."""
    from runtime.engines import OrtEngine

    path = bundle / "model.onnx"
    with pytest.raises(BackendError, match="concurrent_runs must be a positive integer"):
        OrtEngine(path, device="cpu", concurrent_runs=0)
    for limit, expected in ((None, 1), (2, 2)):
        engine = OrtEngine(path, device="cpu", model_bytes=path.read_bytes(), concurrent_runs=limit)
        assert engine.describe()["concurrent_runs"] == expected
        assert getattr(engine.session, "_model_bytes", None) is None
        assert most_runs_in_flight(engine) == expected, limit
