"""The OpenVINO backend (runtime/openvino_engine.py), NNCF's int8 export and the `auto` engine rule
(runtime/engine_choice.py): parity with onnxruntime fp32, thread safety, integrity checks, the rule's cases."""
from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from runtime import BackendError, BundleError, Segmenter
from runtime.engine_choice import EngineFacts, choose_engine
from runtime.errors import OutputPathError
from runtime.openvino_engine import cpu_capabilities, openvino_available

from .support import blocky_image

pytestmark = pytest.mark.skipif(not openvino_available(), reason="openvino is not installed (pip install "
                                "'mgca[openvino]'); .ci/run installs it")
NATIVE_BF16 = "BF16" in cpu_capabilities()
# Thresholds from measurements on the tiny random-init test model (labels vs onnxruntime fp32, these 4 blocky
# images, image seeds 11 / 3 / 5; AMD EPYC with AVX512_BF16): OpenVINO fp32 100.00 / 100.00 / 100.00%, bf16
# 97.74 / 99.34 / 98.11%, NNCF int8 91.57 / 85.68 / 94.79% (onnxruntime's QDQ int8: 94.93 / 92.45 / 96.43%).
# Random weights make near-tied classes, the harsh case for reduced precision; ViT-B/16 and the trained model are
# measured by benchmarks/runtime.py and `mgca-eval --engine` (docs/engines.md).
FP32_AGREEMENT, BF16_AGREEMENT, INT8_AGREEMENT = 0.999, 0.95, 0.80


def images(seed: int = 11) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [blocky_image(rng, h, w) for h, w in ((96, 128), (150, 100), (64, 64), (120, 200))]


def agreement(a: Segmenter, b: Segmenter) -> float:
    return float(np.mean([(a.segment(img).labels == b.segment(img).labels).mean() for img in images()]))


@pytest.fixture(scope="module")
def ov_fp32(bundle):
    return Segmenter(bundle, backend="openvino", device="cpu", precision="fp32")


def test_fp32_equals_onnxruntime(bundle, segmenter, ov_fp32):
    info = ov_fp32.describe()
    assert info["backend"] == "openvino" and info["precision"] == "fp32" and info["model"] == "model.onnx"
    assert info["inference_precision"] in ("f32", "<Type: 'float32'>") or "32" in info["inference_precision"]
    for img in images():
        a, b = segmenter.embed(img), ov_fp32.embed(img)
        assert np.abs(a - b).max() < 1e-4
    assert agreement(ov_fp32, segmenter) >= FP32_AGREEMENT


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 (OpenVINO lists no BF16 capability)")
def test_bf16_agrees_with_fp32(bundle, segmenter):
    seg = Segmenter(bundle, backend="openvino", device="cpu", precision="bf16")
    assert "bf16" in seg.describe()["inference_precision"].lower() or "bfloat16" in seg.describe()[
        "inference_precision"].lower()
    assert agreement(seg, segmenter) >= BF16_AGREEMENT


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU has native bf16; the refusal is for CPUs without it")
def test_bf16_refused_without_native_support(bundle):
    with pytest.raises(BackendError, match="no native bf16"):
        Segmenter(bundle, backend="openvino", device="cpu", precision="bf16")


@pytest.fixture(scope="module")
def nncf_bundle(bundle, tmp_path_factory):
    """The tiny bundle with NNCF's graph in it whatever the export decided (on the tiny model the QDQ graph wins, so
    the export drops NNCF's): quantised by calibration.nncf_quantize, manifest rewritten with its hash."""
    from calibration.nncf_quantize import quantize_nncf
    from calibration.reader import Preprocess, synthetic_images, windows_of
    from runtime.bundle import load_bundle, write_manifest

    root = tmp_path_factory.mktemp("nncf") / "tiny"
    shutil.copytree(bundle, root)
    loaded = load_bundle(root)
    preprocess = Preprocess(loaded.inference, loaded.mean, loaded.std, loaded.output_stride)
    quantize_nncf(root / "model.onnx", root / "model.int8.nncf.onnx",
                  windows_of(synthetic_images(4, (72, 96), seed=1), preprocess))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["models"]["onnx_int8_nncf"] = "model.int8.nncf.onnx"
    write_manifest(root, {k: v for k, v in manifest.items() if k != "files_sha256"})
    return root


def test_export_keeps_the_int8_graph_nearer_fp32(bundle, segmenter):
    manifest = json.loads((bundle / "manifest.json").read_text())
    nncf = manifest["nncf"]
    assert nncf["kept"] == (nncf["mean_cosine"] > nncf["qdq_mean_cosine_openvino"])
    assert (manifest["models"]["onnx_int8_nncf"] is not None) == nncf["kept"]
    assert (bundle / "model.int8.nncf.onnx").is_file() == nncf["kept"]
    graph = manifest["parity"]["openvino_int8"]["graph"]
    seg = Segmenter(bundle, backend="openvino", device="cpu", precision="int8")
    assert seg.describe()["model"] == graph == ("model.int8.nncf.onnx" if nncf["kept"] else "model.int8.onnx")
    assert agreement(seg, segmenter) >= INT8_AGREEMENT
    # a precision alone picks its engine: int8 goes to OpenVINO wherever it is installed
    assert Segmenter(bundle, device="cpu", precision="int8").backend == "openvino"


def test_nncf_graph_runs_and_agrees(nncf_bundle, segmenter):
    seg = Segmenter(nncf_bundle, backend="openvino", device="cpu", precision="int8")
    assert seg.describe()["model"] == "model.int8.nncf.onnx"
    assert "NNCF's graph" in Segmenter(nncf_bundle, device="cpu", precision="int8").describe()["engine_reason"]
    assert agreement(seg, segmenter) >= INT8_AGREEMENT


def test_eight_callers_get_serial_results(ov_fp32):
    work = images(3) * 2
    serial = [ov_fp32.segment(img).labels for img in work]
    results: list = [None] * len(work)

    def call(i: int) -> None:
        results[i] = ov_fp32.segment(work[i]).labels

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(serial, results, strict=True))


@pytest.mark.parametrize(("name", "precision"), [("model.onnx", "fp32"), ("model.int8.nncf.onnx", "int8")])
def test_flipped_byte_refused(nncf_bundle, tmp_path, name, precision):
    altered = tmp_path / "altered"
    shutil.copytree(nncf_bundle, altered)
    data = bytearray((altered / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (altered / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="damaged or altered"):
        Segmenter(altered, backend="openvino", device="cpu", precision=precision)


def test_without_nncf_graph_openvino_int8_runs_the_qdq_graph(nncf_bundle, tmp_path):
    stripped = tmp_path / "stripped"
    shutil.copytree(nncf_bundle, stripped)
    manifest = json.loads((stripped / "manifest.json").read_text())
    manifest["models"]["onnx_int8_nncf"] = None
    (stripped / "manifest.json").write_text(json.dumps(manifest))
    seg = Segmenter(stripped, backend="openvino", device="cpu", precision="int8")
    assert seg.describe()["model"] == "model.int8.onnx"
    assert "no NNCF graph" in Segmenter(stripped, device="cpu", precision="int8").describe()["engine_reason"]
    manifest["models"]["onnx_int8"] = None  # no int8 graph at all: the message says how to make one
    (stripped / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="no NNCF int8.*--int8"):
        Segmenter(stripped, backend="openvino", device="cpu", precision="int8")


def test_gpu_device_refused_in_one_line(bundle):
    with pytest.raises(BackendError, match="runs on the CPU") as info:
        Segmenter(bundle, backend="openvino", device="cuda")
    assert "\n" not in str(info.value)


def test_auto_on_this_machine_follows_the_rule(bundle):
    seg = Segmenter(bundle, device="cpu")
    expected = ("openvino", "bf16") if NATIVE_BF16 else ("onnxruntime", "fp32")
    assert (seg.backend, seg.precision) == expected
    assert seg.describe()["engine_reason"].startswith("auto:")


CPU_MODELS = {"onnx", "onnx_int8", "onnx_int8_nncf"}


@pytest.mark.parametrize(("backend", "precision", "facts", "expected"), [
    # the CPU: OpenVINO bf16 only where bf16 is native, else onnxruntime fp32; never int8 unasked
    ("auto", None, EngineFacts(CPU_MODELS, "auto", openvino_installed=True, cpu_capabilities=("FP32", "BF16", "INT8")),
     ("openvino", "bf16")),
    ("auto", "auto", EngineFacts(CPU_MODELS, "cpu", openvino_installed=True, cpu_capabilities=("FP32", "INT8")),
     ("onnxruntime", "fp32")),
    ("auto", None, EngineFacts(CPU_MODELS, "cpu", openvino_installed=False, cpu_capabilities=()),
     ("onnxruntime", "fp32")),
    # a precision alone picks its engine
    ("auto", "fp32", EngineFacts(CPU_MODELS, "cpu", openvino_installed=True, cpu_capabilities=("BF16",)),
     ("onnxruntime", "fp32")),
    ("auto", "int8", EngineFacts(CPU_MODELS, "cpu", openvino_installed=True), ("openvino", "int8")),
    ("auto", "int8", EngineFacts({"onnx", "onnx_int8"}, "cpu", openvino_installed=True), ("openvino", "int8")),
    ("auto", "int8", EngineFacts(CPU_MODELS, "cpu", openvino_installed=False), ("onnxruntime", "int8")),
    ("auto", "bf16", EngineFacts(CPU_MODELS, "cpu", openvino_installed=True, cpu_capabilities=("BF16",)),
     ("openvino", "bf16")),
    # a backend alone runs its default precision
    ("openvino", None, EngineFacts(CPU_MODELS, "cpu", cpu_capabilities=("FP32",)), ("openvino", "fp32")),
    ("tensorrt", None, EngineFacts(CPU_MODELS | {"trt_fp16"}, "cuda"), ("tensorrt", "fp16")),
    # GPUs: a usable TensorRT engine first, else onnxruntime's CUDA provider, even with OpenVINO installed
    ("auto", None, EngineFacts(CPU_MODELS | {"trt_fp16"}, "auto", tensorrt_usable=True, openvino_installed=True,
                               cpu_capabilities=("BF16",)), ("tensorrt", "fp16")),
    ("auto", None, EngineFacts(CPU_MODELS, "auto", onnxruntime_cuda=True, openvino_installed=True,
                               cpu_capabilities=("BF16",)), ("onnxruntime", "fp32")),
])
def test_auto_rule(backend, precision, facts, expected):
    choice = choose_engine(backend, precision, facts)
    assert (choice.backend, choice.precision) == expected and choice.reason


@pytest.mark.parametrize(("backend", "precision", "facts", "message"), [
    ("auto", "bf16", EngineFacts(CPU_MODELS, "cpu", openvino_installed=False), "OpenVINO, which is not installed"),
    ("auto", "fp16", EngineFacts(CPU_MODELS, "cpu"), "TensorRT engine"),
    ("onnxruntime", "bf16", EngineFacts(CPU_MODELS, "cpu"), "bf16 runs on backend 'openvino'"),
    ("tensorrt", "fp32", EngineFacts(CPU_MODELS, "cuda"), "fp32 runs on backend"),
    ("auto", "fp64", EngineFacts(CPU_MODELS, "cpu"), "unknown precision"),
])
def test_auto_rule_refusals(backend, precision, facts, message):
    with pytest.raises(BackendError, match=message) as info:
        choose_engine(backend, precision, facts)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_unusable_compiled_model_cache_is_one_line(bundle, tmp_path, monkeypatch, where):
    """$MGCA_OPENVINO_CACHE naming a file, or a folder that cannot be created: one line naming the variable."""
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MGCA_OPENVINO_CACHE", str(blocker if where == "a file" else blocker / "sub"))
    with pytest.raises(OutputPathError, match=r"\$MGCA_OPENVINO_CACHE .*cache") as info:
        Segmenter(bundle, backend="openvino", device="cpu", precision="fp32")
    assert "\n" not in str(info.value)
