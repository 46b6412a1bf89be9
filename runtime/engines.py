"""Inference engines that map window batches (N x 3 x win x win float32) to embeddings (N x C x g x g).

* `OrtEngine`: onnxruntime, the one place a session is configured (the runtime, export parity and
  int8 calibration all run their graphs through it). `InferenceSession.run` may be called from several
  threads at once (onnxruntime guarantees it), so one session serves every caller. The provider
  actually used is read back from `session.get_providers()`: onnxruntime-gpu on a machine without
  CUDA silently falls back to the CPU provider, and `describe()` says so.
* `TensorRTEngine`: a serialized TensorRT engine (`model.fp16.engine`), TensorRT 10 name-based API,
  device memory through cuda-python. Imported lazily; without tensorrt it raises a one-line
  BackendError. Execution contexts are not thread-safe, so each thread gets its own context and stream.

Engines are built by the exporter on the machine that runs them (`mgca-export ... --trt fp16`), which
pins the overflow-prone layers (LayerNorm, Softmax, the L2 norm) to fp32.
"""
from __future__ import annotations

import contextlib
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .contract import INPUT_NAME, OUTPUT_NAME
from .errors import BackendError, one_line

TRT_HINT = ("install TensorRT and cuda-python on an NVIDIA GPU machine (pip install 'mgca[trt]' cuda-python), "
            "or use backend='onnxruntime'")


def parse_device(device: str | None) -> tuple[str, int]:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'gpu' -> (kind, index)."""
    text = (device or "auto").strip().lower()
    if text in ("auto", "cpu"):
        return text, 0
    match = re.fullmatch(r"(cuda|gpu)(?::(\d+))?", text)
    if not match:
        raise BackendError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return "cuda", int(match.group(2) or 0)


def check_concurrent_runs(value: object) -> None:
    """`concurrent_runs` of an engine: a positive integer or None (the engine's default), else a one-line error."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise BackendError(f"concurrent_runs must be a positive integer or None, got {value!r}")


def in_batches(run, batch: np.ndarray, batch_size: int | None) -> np.ndarray:
    """`run` over consecutive chunks of at most `batch_size` windows (None: all at once), concatenated."""
    if batch_size is None or batch.shape[0] <= batch_size:
        return run(batch)
    return np.concatenate([run(batch[i:i + batch_size]) for i in range(0, batch.shape[0], batch_size)])


class OrtEngine:
    """An onnxruntime session over one ONNX file; thread-safe `run`.

    num_threads: this session's intra/inter-op pools (None: one thread per core). spinning: let idle
    intra-op threads spin-wait (off by default: they would steal the cores the numpy post-processing needs).
    model_bytes: the file's contents, already read (and hash-checked) by the caller; `model_path` then only names it.
    concurrent_runs: most `session.run` calls in flight at once; the others wait their turn. None: 1 on the CPU
    provider, unbounded on CUDA. On CPU one run already spreads over every core, so a second one only adds its
    own activation buffers to the arena (measured, ViT-B/16, 8 callers on 1024 x 2048: peak RSS 4.9 GiB unbounded)
    while the calls take as long in total.
    """

    name = "onnxruntime"

    def __init__(self, model_path: str | Path, input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME,
                 device: str = "auto", num_threads: int | None = None, spinning: bool = False,
                 model_bytes: bytes | None = None, concurrent_runs: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("backend 'onnxruntime' needs the onnxruntime package: "
                               "pip install onnxruntime (or onnxruntime-gpu, not both)") from None
        kind, index = parse_device(device)
        available = ort.get_available_providers()
        providers: list[Any] = []
        if kind == "cuda" or (kind == "auto" and "CUDAExecutionProvider" in available):
            if "CUDAExecutionProvider" not in available:
                raise BackendError(f"device {device!r} asked for CUDA but onnxruntime here has only {available}; "
                                   "pip uninstall onnxruntime && pip install onnxruntime-gpu, or use device='cpu'")
            providers.append(("CUDAExecutionProvider", {"device_id": index}))
        providers.append("CPUExecutionProvider")
        options = ort.SessionOptions()
        if num_threads is not None:  # this session's own pools (ORT default: per-session); None = one per core
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = int(num_threads)  # used only by ORT_PARALLEL; capped all the same
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # The memory pattern, planned after the first run, is one block per run for all intermediates, taken
        # from the arena beside the first run's chunks, which it cannot reuse: the arena doubles (ViT-B/16, 3 windows:
        # +580 MB) for no measured speed. Without it the arena's chunks are reused run after run.
        options.enable_mem_pattern = False
        # Idle intra-op threads spin-wait by default, stealing the cores numpy/OpenCV need for the
        # post-processing that follows every run (measured: unit pooling 0.2 -> 130 ms on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            model = model_bytes if model_bytes is not None else str(model_path)
            self.session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as err:  # onnxruntime raises several types for bad files
            raise BackendError(f"onnxruntime cannot load {model_path} ({one_line(err)[:300]}); "
                               "re-export the bundle") from None
        if model_bytes is not None:
            # onnxruntime keeps the bytes a session was built from for the session's whole life (345 MB for
            # ViT-B/16), only to rebuild it on another provider after a failure. With that fallback off (a CUDA
            # failure is reported, never silently run on CPU), the bytes are dropped once the session holds the model.
            self.session.disable_fallback()
            if getattr(self.session, "_model_bytes", None) is not None:
                self.session._model_bytes = None
        self.model_path = Path(model_path)
        self.requested = [p[0] if isinstance(p, tuple) else p for p in providers]
        self.providers = list(self.session.get_providers())  # what onnxruntime actually enabled
        self.provider = self.providers[0]
        if kind == "cuda" and self.provider == "CPUExecutionProvider":
            raise BackendError("CUDA was requested but onnxruntime fell back to the CPU provider (no usable CUDA "
                               "device/libraries); use device='cpu' or fix the CUDA install")
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if input_name not in inputs or output_name not in outputs:
            raise BackendError(f"{model_path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}, the manifest "
                               f"names {input_name!r} -> {output_name!r}; re-export the bundle")
        self.input_name, self.output_name = input_name, output_name
        check_concurrent_runs(concurrent_runs)
        if concurrent_runs is None and self.provider == "CPUExecutionProvider":
            concurrent_runs = 1
        self.concurrent_runs = concurrent_runs
        self._run_gate = threading.BoundedSemaphore(concurrent_runs) if concurrent_runs else contextlib.nullcontext()
        outputs_by_name = {o.name: o for o in self.session.get_outputs()}
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inputs[input_name].shape)
        self.output_shape = tuple(d if isinstance(d, int) else None for d in outputs_by_name[output_name].shape)
        batch_dim = inputs[input_name].shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None

    def run(self, batch: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """N x 3 x win x win -> N x C x g x g, `batch_size` windows per session call at most (None: all)."""
        return in_batches(self._run, batch, batch_size)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch)
        if self.fixed_batch is None:
            with self._run_gate:
                return self.session.run([self.output_name], {self.input_name: batch})[0]
        parts = []
        size = self.fixed_batch
        for start in range(0, batch.shape[0], size):
            chunk = batch[start:start + size]
            count = chunk.shape[0]
            if count < size:  # a fixed-batch export: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((size - count, *chunk.shape[1:]), chunk.dtype)])
            with self._run_gate:
                parts.append(self.session.run([self.output_name], {self.input_name: chunk})[0][:count])
        return np.concatenate(parts)

    def describe(self) -> dict[str, Any]:
        options = self.session.get_session_options()
        return {"engine": self.name, "provider": self.provider, "providers": self.providers,
                "requested_providers": self.requested, "model": self.model_path.name,
                "intra_op_threads": options.intra_op_num_threads, "inter_op_threads": options.inter_op_num_threads,
                "concurrent_runs": self.concurrent_runs}


def _import_tensorrt():
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise BackendError("backend 'tensorrt' needs the tensorrt package, which is not installed; "
                           f"{TRT_HINT}") from None
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        except ImportError:
            raise BackendError("backend 'tensorrt' needs cuda-python for device memory (pip install "
                               f"cuda-python); {TRT_HINT}") from None
    return trt, cudart


def _check(result: Any, what: str) -> Any:
    """cuda-python calls return (err, *values); raise a one-line BackendError on failure."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA call {what} failed with {err}; check the GPU and driver")
    return values[0] if len(values) == 1 else (values or None)


class TensorRTEngine:
    """A deserialized TensorRT engine; one execution context + stream per calling thread."""

    name = "tensorrt"

    def __init__(self, engine_path: Path, input_name: str, output_name: str, device: str = "auto",
                 engine_bytes: bytes | None = None):
        trt, cudart = _import_tensorrt()
        kind, index = parse_device(device)
        if kind == "cpu":
            raise BackendError("backend 'tensorrt' runs on an NVIDIA GPU; use device='cuda' or "
                               "backend='onnxruntime' for CPU")
        count = _check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if not count:
            raise BackendError(f"backend 'tensorrt' found no CUDA device; {TRT_HINT}")
        _check(cudart.cudaSetDevice(index), "cudaSetDevice")
        self.trt, self.cudart, self.device_index = trt, cudart, index
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        data = engine_bytes if engine_bytes is not None else Path(engine_path).read_bytes()
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendError(f"TensorRT cannot deserialize {engine_path} (built for another GPU or TensorRT "
                               "version?); rebuild it here with `mgca-export --checkpoint CKPT --out DIR --trt fp16`")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if input_name not in names or output_name not in names:
            raise BackendError(f"TensorRT engine {engine_path} has tensors {names}, the manifest names {input_name!r} "
                               f"-> {output_name!r}; rebuild it")
        self.model_path = Path(engine_path)
        self.input_name, self.output_name = input_name, output_name
        self.output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(output_name)))
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(input_name)))
        self.input_shape = tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(input_name))
        self.output_shape = tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(output_name))
        self._local = threading.local()
        self.provider = "TensorRT"
        self.fixed_batch = None

    def _context(self):
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            self.cudart.cudaSetDevice(self.device_index)
            ctx = self._local.ctx = self.engine.create_execution_context()
            self._local.stream = _check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
            self._local.buffers = {}  # name -> (device pointer, capacity in bytes)
        return ctx, self._local.stream

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, capacity = self._local.buffers.get(name, (None, 0))
        if capacity < nbytes:
            if ptr is not None:
                _check(self.cudart.cudaFree(ptr), "cudaFree")
            ptr = _check(self.cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._local.buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, batch: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """N x 3 x win x win -> N x C x g x g float32, `batch_size` windows per execution at most (None: all)."""
        return in_batches(self._run, batch, batch_size)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        cudart = self.cudart
        ctx, stream = self._context()
        host_in = np.ascontiguousarray(batch, dtype=self.input_dtype)
        if not ctx.set_input_shape(self.input_name, tuple(host_in.shape)):
            raise BackendError(f"TensorRT engine {self.model_path.name} does not accept input shape {host_in.shape} "
                               "(outside its optimisation profile); rebuild it with a larger --trt-max-batch or lower "
                               "Segmenter(max_batch=...)")
        out_shape = tuple(ctx.get_tensor_shape(self.output_name))
        host_out = np.empty(out_shape, dtype=self.output_dtype)
        d_in = self._buffer(self.input_name, host_in.nbytes)
        d_out = self._buffer(self.output_name, host_out.nbytes)
        ctx.set_tensor_address(self.input_name, int(d_in))
        ctx.set_tensor_address(self.output_name, int(d_out))
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(d_in, host_in.ctypes.data, host_in.nbytes, h2d, stream), "cudaMemcpyAsync")
        if not ctx.execute_async_v3(stream):
            raise BackendError("TensorRT execute_async_v3 failed; see the TensorRT log above")
        _check(cudart.cudaMemcpyAsync(host_out.ctypes.data, d_out, host_out.nbytes, d2h, stream), "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return host_out.astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "provider": self.provider, "providers": ["TensorRT"],
                "model": self.model_path.name, "device": f"cuda:{self.device_index}"}


def ort_cuda_listed() -> bool:
    """onnxruntime (onnxruntime-gpu) lists the CUDA provider; whether it then works is OrtEngine's to report."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def tensorrt_available() -> bool:
    """tensorrt and cuda-python import and a CUDA device is visible (cheap; no engine is built)."""
    try:
        _, cudart = _import_tensorrt()
        return bool(_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount"))
    except BackendError:
        return False
