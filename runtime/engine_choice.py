"""Which engine and precision run a bundle: the caller's choice, or the `auto` rule, stated once and tested.

The `auto` rule (docs/engines.md has the measurements behind it), first match wins:

1. a TensorRT engine of the bundle (fp16, or int8 when asked) when tensorrt and an NVIDIA GPU are usable;
2. onnxruntime on CUDA when the device is a GPU (device "cuda", or "auto" with onnxruntime-gpu's CUDA provider);
3. on the CPU, with OpenVINO installed: bf16 when the CPU computes it natively (OpenVINO lists BF16 among the
   CPU's capabilities: AVX512_BF16 or AMX). Measured end to end on random-weight ViT-B/16: 1.8-1.9x onnxruntime
   fp32 on an AMD EPYC (AVX512_BF16, no AMX) at 98.0-99.4% label agreement; one window 4.3-4.5x on a Xeon
   with AMX (issue 26). On the trained miniature its mIoU is fp32's less 0.03 (docs/engines.md);
4. else onnxruntime fp32, the reference engine (CPUs without native bf16: OpenVINO fp32 was measured level with
   onnxruntime fp32 on an AMD EPYC, so the rule does not bet on a gain it has not seen).

`auto` never picks int8 by itself: int8's agreement depends on the calibration images, which only the user
can vouch for. Asked for, int8 runs on OpenVINO where it is installed (NNCF's graph when the bundle kept one, else
the QDQ graph, which OpenVINO runs faster than onnxruntime does), else onnxruntime's QDQ graph. A precision
given alone picks its natural engine (bf16: OpenVINO, fp16: TensorRT, fp32: onnxruntime); a backend given alone
runs its default precision (OpenVINO: bf16 where native, else fp32; onnxruntime: fp32; TensorRT: fp16).
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from .contract import BACKENDS, MODEL_KEYS, PRECISIONS, model_key
from .errors import BackendError


@dataclass(frozen=True)
class EngineFacts:
    """What the rule looks at, gathered by `runtime.Segmenter` (so the rule itself is a pure function)."""

    models: Collection[str]  # manifest model keys whose files exist in the bundle
    device: str  # parse_device kind: "auto", "cpu" or "cuda"
    tensorrt_usable: bool = False
    onnxruntime_cuda: bool = False  # onnxruntime lists the CUDA provider
    openvino_installed: bool = False
    cpu_capabilities: Collection[str] = ()  # OpenVINO's CPU OPTIMIZATION_CAPABILITIES


@dataclass(frozen=True)
class EngineChoice:
    backend: str
    precision: str
    reason: str


def choose_engine(backend: str, precision: str | None, facts: EngineFacts) -> EngineChoice:
    """(backend, precision, why) for the caller's `backend` ("auto" or one of BACKENDS) and `precision`
    (None / "auto" or one of PRECISIONS); a one-line BackendError for a combination that cannot run."""
    if backend != "auto" and backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose 'auto', {', '.join(repr(b) for b in BACKENDS)}")
    if precision == "auto":
        precision = None
    if precision is not None and precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose 'auto', "
                           f"{', '.join(repr(p) for p in PRECISIONS)}")
    native_bf16 = "BF16" in facts.cpu_capabilities
    if backend == "auto":
        backend, why = _auto_backend(precision, facts, native_bf16)
    else:
        why = "chosen by the caller"
    if precision is None:
        precision = {"tensorrt": "fp16", "onnxruntime": "fp32"}.get(backend) or ("bf16" if native_bf16 else "fp32")
        why += f"; precision {precision}: " + {
            "tensorrt": "TensorRT's default engine", "onnxruntime": "onnxruntime's reference precision",
        }.get(backend, "the CPU computes bf16 natively" if native_bf16 else "the CPU has no native bf16")
    else:
        why += f"; precision {precision}: chosen by the caller"
    if (backend, precision) not in MODEL_KEYS:
        runs = sorted(p for b, p in MODEL_KEYS if b == backend)
        raise BackendError(f"backend {backend!r} runs precision {' or '.join(runs)}, not {precision!r}; "
                           + _precision_hint(precision))
    return EngineChoice(backend, precision, why)


def _auto_backend(precision: str | None, facts: EngineFacts, native_bf16: bool) -> tuple[str, str]:
    trt_key = MODEL_KEYS.get(("tensorrt", precision or "fp16"))
    if facts.tensorrt_usable and trt_key in facts.models and facts.device != "cpu":
        return "tensorrt", f"auto: the bundle has a TensorRT engine ({trt_key}) and a GPU is usable"
    if precision in ("fp16", "bf16") and facts.device == "cuda":
        raise BackendError(f"precision {precision!r} on a GPU is a TensorRT engine; build one with "
                           "`mgca-export ... --trt fp16`, or use precision 'fp32'")
    if precision == "fp16":
        raise BackendError("precision 'fp16' is a TensorRT engine (NVIDIA GPU); on the CPU use 'bf16' (OpenVINO), "
                           "'fp32' or 'int8'")
    if facts.device == "cuda" or (facts.device == "auto" and facts.onnxruntime_cuda):
        return "onnxruntime", "auto: a GPU device, run by onnxruntime's CUDA provider"
    if precision == "bf16":
        if not facts.openvino_installed:
            raise BackendError("precision 'bf16' runs on OpenVINO, which is not installed: pip install "
                               "'mgca[openvino]', or use precision 'fp32'")
        return "openvino", "auto: bf16 is OpenVINO's"
    if precision == "int8":
        key = model_key("openvino", "int8", facts.models)
        if facts.openvino_installed and key in facts.models:
            nncf = key == MODEL_KEYS[("openvino", "int8")]
            graph = "NNCF's graph" if nncf else "the QDQ graph (the bundle has no NNCF graph)"
            return "openvino", f"auto: int8 runs {graph} on OpenVINO (faster than onnxruntime on the same graph)"
        return "onnxruntime", "auto: int8 on onnxruntime's QDQ graph (OpenVINO not installed)"
    if precision is None and facts.openvino_installed and native_bf16:
        return "openvino", "auto: OpenVINO bf16, the CPU computes bf16 natively"
    if precision is None:
        return "onnxruntime", ("auto: onnxruntime fp32 (the CPU has no native bf16)" if facts.openvino_installed
                               else "auto: onnxruntime fp32 (OpenVINO not installed)")
    return "onnxruntime", "auto: fp32 runs on onnxruntime, the reference engine"


def _precision_hint(precision: str) -> str:
    return {"bf16": "bf16 runs on backend 'openvino'", "fp16": "fp16 is a TensorRT engine (backend 'tensorrt')",
            "fp32": "fp32 runs on backend 'onnxruntime' or 'openvino'",
            "int8": "int8 runs on any backend"}[precision]


__all__ = ["EngineFacts", "EngineChoice", "choose_engine"]
