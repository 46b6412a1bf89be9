"""`OpenVinoEngine`: the bundle's ONNX graph on Intel's OpenVINO CPU plugin, in fp32, bf16 or int8.

Why a second CPU engine: onnxruntime has no bf16 kernels on x86, while OpenVINO runs bf16 natively where the CPU
has it (AVX512_BF16, AMX), and runs the int8 QDQ graphs faster than onnxruntime does (docs/engines.md has the
measurements). fp32 and bf16 read the same `model.onnx`: the precision is OpenVINO's `INFERENCE_PRECISION_HINT`
(the CPU plugin's own default is bf16 where the CPU has it, so fp32 is asked for explicitly). int8 reads the QDQ
graph the Segmenter hands it (NNCF's `model.int8.nncf.onnx` where the exporter kept it, else `model.int8.onnx`),
whose float parts run in fp32.

Thread safety: a compiled model serves any number of infer requests, but one request serves one call at a
time. The engine keeps a pool of `concurrent_runs` requests (1 by default: one run already uses every core,
and each request holds its own activation memory); callers take one, run, and give it back, so 8 threads
queue instead of allocating 8 sets of activations.

Compiled-model cache: with `cache_dir` (or the `MGCA_OPENVINO_CACHE` environment variable) OpenVINO stores the
compiled blob keyed by the model and the settings, and a later process loads it instead of compiling.
"""
from __future__ import annotations

import os
import queue
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .contract import INPUT_NAME, OUTPUT_NAME
from .engines import check_concurrent_runs, in_batches, parse_device
from .errors import BackendError, one_line
from .files import check_writable_dir

OPENVINO_HINT = "pip install 'mgca[openvino]' (OpenVINO's CPU runtime), or use backend='onnxruntime'"
# the compile hint for the parts left in float, read-only (no module state)
PRECISION_HINTS = MappingProxyType({"fp32": "f32", "bf16": "bf16", "int8": "f32"})
CACHE_ENV = "MGCA_OPENVINO_CACHE"


def import_openvino():
    """The openvino module, or a one-line BackendError saying how to install it."""
    try:
        import openvino  # type: ignore[import-not-found]
    except ImportError:
        raise BackendError(f"backend 'openvino' needs the openvino package, which is not installed; "
                           f"{OPENVINO_HINT}") from None
    return openvino


def openvino_available() -> bool:
    try:
        import_openvino()
    except BackendError:
        return False
    return True


def cpu_capabilities(core: Any = None) -> tuple[str, ...]:
    """OpenVINO's CPU `OPTIMIZATION_CAPABILITIES` (e.g. FP32, BF16, INT8), asked of `core` (None: a new
    openvino.Core); () without openvino."""
    if core is None:
        if not openvino_available():
            return ()
        import openvino as ov  # type: ignore[import-not-found]

        core = ov.Core()
    try:
        return tuple(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # a plugin that cannot answer has no known capability
        return ()


class OpenVinoEngine:
    """The bundle's graph compiled by OpenVINO for the CPU; thread-safe `run` through a pool of infer requests.

    precision: "fp32", "bf16" (compile hints over the fp32 graph) or "int8" (a QDQ graph).
    model_bytes: the file's contents, already read (and hash-checked) by the caller; `model_path` only names it.
    num_threads: OpenVINO's INFERENCE_NUM_THREADS (None: its default, every core).
    concurrent_runs: infer requests in flight at once (None: 1, see the module docstring).
    cache_dir: OpenVINO's compiled-model cache (None: $MGCA_OPENVINO_CACHE if set, else no cache).
    """

    name = "openvino"

    def __init__(self, model_path: str | Path, input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME,
                 device: str = "auto", precision: str = "fp32", num_threads: int | None = None,
                 model_bytes: bytes | None = None, concurrent_runs: int | None = None,
                 cache_dir: str | Path | None = None):
        ov = import_openvino()
        kind, _ = parse_device(device)
        if kind == "cuda":
            raise BackendError(f"backend 'openvino' runs on the CPU here, not {device!r}; use device='cpu' "
                               "(or backend='tensorrt' / 'onnxruntime' on an NVIDIA GPU)")
        if precision not in PRECISION_HINTS:
            raise BackendError(f"backend 'openvino' runs fp32, bf16 or int8, not {precision!r}")
        check_concurrent_runs(concurrent_runs)
        core = ov.Core()
        capabilities = cpu_capabilities(core)
        if precision == "bf16" and "BF16" not in capabilities:
            raise BackendError(f"this CPU has no native bf16 (OpenVINO reports {list(capabilities)}); OpenVINO would "
                               "emulate it slower than fp32: use precision 'fp32' or 'int8'")
        cache = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or None
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]}
        if num_threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        if cache:
            what = "cache_dir" if cache_dir is not None else f"${CACHE_ENV}"
            config["CACHE_DIR"] = str(check_writable_dir(cache, f"OpenVINO's compiled-model cache {what}"))
        start = time.perf_counter()
        try:
            model = core.read_model(model_bytes if model_bytes is not None else str(model_path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as err:  # OpenVINO raises RuntimeError subclasses for bad files
            raise BackendError(f"OpenVINO cannot load {model_path} ({one_line(err)[:300]}); re-export the "
                               "bundle") from None
        self.compile_seconds = time.perf_counter() - start
        inputs = {name for port in self.compiled.inputs for name in port.get_names()}
        outputs = {name for port in self.compiled.outputs for name in port.get_names()}
        if input_name not in inputs or output_name not in outputs:
            raise BackendError(f"{model_path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}, the manifest "
                               f"names {input_name!r} -> {output_name!r}; re-export the bundle")
        self.model_path = Path(model_path)
        self.input_name, self.output_name = input_name, output_name
        self.precision, self.capabilities, self.cache_dir = precision, capabilities, config.get("CACHE_DIR")
        self.concurrent_runs = concurrent_runs or 1
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.concurrent_runs):
            self._requests.put(self.compiled.create_infer_request())
        shape = lambda port: tuple(d.get_length() if d.is_static else None
                                   for d in port.get_partial_shape())
        self.input_shape = shape(self.compiled.input(input_name))
        self.output_shape = shape(self.compiled.output(output_name))
        self.fixed_batch = None
        self.provider = "OpenVINO CPU"

    def run(self, batch: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """N x 3 x win x win -> N x C x g x g float32, `batch_size` windows per inference at most (None: all)."""
        return in_batches(self._run, batch, batch_size)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        request = self._requests.get()  # blocks while every request is busy
        try:
            request.infer({self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
            # the request reuses its output buffer on the next call: copy before handing the request back
            return np.array(request.get_tensor(self.output_name).data, dtype=np.float32, copy=True)
        finally:
            self._requests.put(request)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "provider": self.provider, "providers": [self.provider],
                "model": self.model_path.name,
                "inference_precision": str(self.compiled.get_property("INFERENCE_PRECISION_HINT")),
                "cpu_capabilities": list(self.capabilities),
                "threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
                "concurrent_runs": self.concurrent_runs, "compile_s": round(self.compile_seconds, 3),
                "cache_dir": self.cache_dir}


__all__ = ["OpenVinoEngine", "openvino_available", "cpu_capabilities", "import_openvino"]
