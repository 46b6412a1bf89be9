"""TensorRT engines from the exported ONNX graphs (optional extra: `pip install 'mgca[trt]'`).

* fp16: the fp32 `model.onnx` parsed into a weakly typed network with `BuilderFlag.FP16`. ViTs
  overflow fp16 in LayerNorm (sum of squares over 768 channels), Softmax (exp of large logits)
  and in the final L2 normalisation (sum of squares over C): those layers (TensorRT's
  Normalization, Softmax, Reduce, ElementWise POW, Unary SQRT, and every layer made from an ONNX
  LayerNormalization/Softmax/ReduceMean/ReduceL2/Pow node) are pinned to fp32 with
  `layer.precision` / `set_output_type` under `BuilderFlag.OBEY_PRECISION_CONSTRAINTS`.
* int8: explicit quantisation from the QDQ `model.int8.onnx` written by `calibration.quantize`
  (the calibration is the Q/DQ scales; TensorRT's implicit-quantisation calibrators are
  deprecated since 10.1). Weakly typed with `INT8` + `FP16` flags (unquantised layers may run in
  fp16, with the same fp32 pins).
* TensorRT >= 11 removed the precision flags (strong typing only): there the fp16 engine is built
  from an fp16 copy of the graph (`fp16_onnx`: float16 weights and activations, the sensitive ops
  kept in fp32 with Casts around them) as a strongly typed network, and int8 from the QDQ model
  as a strongly typed network (unquantised layers in fp32).

Every build has an optimisation profile min/opt/max over the dynamic batch, a workspace memory
limit, and an optional timing cache file that is loaded before and saved after the build.
tensorrt is imported lazily: without it `require_tensorrt()` raises TensorRTUnavailable with a
one-line message (the CLI prints it and exits non-zero).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runtime.contract import INPUT_NAME
from runtime.errors import MgcaError
from runtime.files import atomic_write_bytes

TRT_MISSING = "TensorRT is not installed: pip install 'mgca[trt]' on a machine with an NVIDIA GPU"
FP32_ONNX_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceL2", "ReduceSumSquare", "Pow", "Sqrt")


class TensorRTUnavailable(MgcaError, RuntimeError):
    """tensorrt cannot be imported or no GPU is usable; the message is one line."""


class TensorRTBuildError(MgcaError, RuntimeError):
    """TensorRT could not parse the graph or build the engine (the export ran: exit status 1)."""

    exit_code = 1


def require_tensorrt():
    """The tensorrt module, or TensorRTUnavailable with the install hint."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise TensorRTUnavailable(TRT_MISSING) from None
    return trt


def tensorrt_available() -> bool:
    try:
        require_tensorrt()
        return True
    except TensorRTUnavailable:
        return False


def _one_line(text: object, limit: int = 400) -> str:
    return " ".join(str(text).split())[:limit]


@dataclass
class EngineResult:
    path: Path
    precision: str
    tensorrt_version: str
    strongly_typed: bool
    min_batch: int
    opt_batch: int
    max_batch: int
    workspace_bytes: int
    fp32_layers: int
    seconds: float
    timing_cache: str | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = self.path.name
        return out


def _has_precision_flags(trt) -> bool:
    return hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS")


def _onnx_names_of_sensitive_nodes(onnx_path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return [node.name for node in model.graph.node if node.op_type in FP32_ONNX_OPS and node.name]


def _pin_fp32(trt, network, sensitive_node_names: list[str]) -> int:
    """Force overflow-prone layers to fp32 (weakly typed networks); returns how many were pinned."""
    layer_types = {getattr(trt.LayerType, name) for name in ("NORMALIZATION", "SOFTMAX", "REDUCE")
                   if hasattr(trt.LayerType, name)}
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        sensitive = layer.type in layer_types
        if not sensitive and layer.type == trt.LayerType.ELEMENTWISE:
            layer.__class__ = trt.IElementWiseLayer
            sensitive = layer.op == trt.ElementWiseOperation.POW
        elif not sensitive and layer.type == trt.LayerType.UNARY:
            layer.__class__ = trt.IUnaryLayer
            sensitive = layer.op == trt.UnaryOperation.SQRT
        if not sensitive and sensitive_node_names:
            # The ONNX parser names layers after the node they come from (plus a suffix when one
            # node becomes several layers), so a decomposed LayerNorm/ReduceL2 is caught here.
            sensitive = any(layer.name.startswith(name) for name in sensitive_node_names)
        if not sensitive:
            continue
        if layer.type == trt.LayerType.NORMALIZATION:
            layer.__class__ = trt.INormalizationLayer
            if hasattr(layer, "compute_precision"):
                layer.compute_precision = trt.float32
        if any(layer.get_output(i).dtype not in (trt.float32, trt.float16) for i in range(layer.num_outputs)):
            continue  # shape/index computations (int32/int64/bool): leave alone
        layer.precision = trt.float32
        for out in range(layer.num_outputs):
            layer.set_output_type(out, trt.float32)
        pinned += 1
    return pinned


def fp16_onnx(fp32_path: str | Path, out_path: str | Path) -> Path:
    """An fp16 copy of the graph (fp32 input/output kept) with LayerNorm/Softmax/reductions/Pow in
    fp32, for strongly typed TensorRT (>= 11) and fp16 onnxruntime on GPU."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(FP32_ONNX_OPS))
    out_path = Path(out_path)
    onnx.save_model(half, str(out_path))
    return out_path


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str, window: int,
                 input_name: str = INPUT_NAME, min_batch: int = 1, opt_batch: int | None = None, max_batch: int = 16,
                 workspace_gib: float = 4.0, timing_cache: str | Path | None = None,
                 verbose: bool = False) -> EngineResult:
    """Build and serialise an engine. `onnx_path` is the fp32 graph for fp16, the QDQ graph for int8."""
    if precision not in ("fp16", "int8"):
        raise ValueError(f"TensorRT precision must be 'fp16' or 'int8', got {precision!r}")
    if not 1 <= min_batch <= max_batch:
        raise ValueError(f"batch profile needs 1 <= min_batch ({min_batch}) <= max_batch ({max_batch})")
    opt_batch = opt_batch or max(min_batch, max_batch // 2)
    if not min_batch <= opt_batch <= max_batch:
        raise ValueError(f"opt_batch {opt_batch} must lie in [{min_batch}, {max_batch}]")
    trt = require_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except Exception as err:  # no CUDA device / driver
        raise TensorRTUnavailable(f"TensorRT cannot create a builder ({_one_line(err, 200)}); it needs an NVIDIA GPU "
                                  "with a working driver") from None
    if builder is None:
        raise TensorRTUnavailable("TensorRT cannot create a builder; it needs an NVIDIA GPU with a working driver")

    weakly_typed = _has_precision_flags(trt)
    source = onnx_path
    tmpdir = None
    if precision == "fp16" and not weakly_typed:
        tmpdir = tempfile.TemporaryDirectory(prefix="mgca-trt-")
        source = fp16_onnx(onnx_path, Path(tmpdir.name) / "model.fp16.onnx")
    flags = 0
    if not weakly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    try:
        if not parser.parse_from_file(str(source)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise TensorRTBuildError(f"TensorRT cannot parse {onnx_path.name}: {_one_line(errors)}")
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if input_name not in names:
        raise TensorRTBuildError(f"{onnx_path.name} has inputs {names}, expected {input_name!r}")

    config = builder.create_builder_config()
    workspace = int(workspace_gib * (1 << 30))
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    pinned = 0
    if weakly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantisation: scales come from the Q/DQ nodes
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_fp32(trt, network, _onnx_names_of_sensitive_nodes(onnx_path))

    profile = builder.create_optimization_profile()
    shape = (3, window, window)
    profile.set_shape(input_name, (min_batch, *shape), (opt_batch, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError(f"TensorRT failed to build a {precision} engine from {onnx_path.name}; see the "
                                 "TensorRT log above")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(engine_path, memoryview(serialized))
    if cache_path is not None:
        atomic_write_bytes(cache_path, memoryview(config.get_timing_cache().serialize()))
    return EngineResult(path=engine_path, precision=precision, tensorrt_version=str(trt.__version__),
                        strongly_typed=not weakly_typed, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
                        workspace_bytes=workspace, fp32_layers=pinned, seconds=time.perf_counter() - start,
                        timing_cache=str(cache_path) if cache_path else None)


__all__ = ["TRT_MISSING", "TensorRTUnavailable", "TensorRTBuildError", "EngineResult", "require_tensorrt",
           "tensorrt_available", "build_engine", "fp16_onnx", "FP32_ONNX_OPS"]
