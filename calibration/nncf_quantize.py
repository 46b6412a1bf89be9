"""Post-training int8 by NNCF (OpenVINO's quantisation library) on the exported fp32 ONNX graph.

Why beside onnxruntime's QDQ graph: NNCF's transformer preset (int8 weights per channel, int8 activations with
zero points, the attention scores and softmax left in float), SmoothQuant (moves activation outliers into the
weights) and fast bias correction (restores each layer's output mean) can sit nearer fp32 than the plain minmax
QDQ graph: on random-weight ViT-B/16 windows of smooth synthetic images cosine 0.99975 against 0.9995 in one
calibration, but 0.99954 against 0.99960 in another, and on the tiny test model it loses (docs/engines.md). So the
exporter (`export.pipeline.export_nncf_int8`) measures both on OpenVINO and keeps NNCF's only where it wins. The
result is still a QDQ ONNX file (`model.int8.nncf.onnx`), one file a model; TensorRT keeps the symmetric QDQ
graph (`model.int8.onnx`): NNCF's activations have zero points, which TensorRT refuses.
Export time only: imports nncf, which the lean runtime never needs.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from runtime.contract import GRAPH_ROLE_KEY, INPUT_NAME

from .quantize import QuantizeResult, save_quantized
from .reader import CalibrationError

NNCF_HINT = "pip install 'mgca[train,openvino]' (nncf and openvino)"
MAX_CALIBRATION_WINDOWS = 300  # NNCF's own default subset size


def nncf_available() -> bool:
    """nncf and openvino both import (NNCF's ONNX backend runs its statistics through onnxruntime; OpenVINO is
    what runs the result)."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def quantize_nncf(fp32_path: str | Path, out_path: str | Path, windows: np.ndarray,
                  input_name: str = INPUT_NAME) -> QuantizeResult:
    """Write NNCF's int8 QDQ graph of `fp32_path`, calibrated on `windows` (n x 3 x win x win float32, the
    inference preprocessing's windows), to `out_path` atomically."""
    try:
        import nncf
        import onnx
    except ImportError:
        raise CalibrationError(f"NNCF int8 needs nncf and onnx; {NNCF_HINT}") from None
    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 4 or not len(windows):
        raise CalibrationError(f"NNCF calibration needs n x 3 x win x win windows, got shape {windows.shape}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    start = time.perf_counter()
    nncf.set_log_level(logging.ERROR)
    samples = windows[:MAX_CALIBRATION_WINDOWS]
    dataset = nncf.Dataset(list(samples), lambda window: {input_name: window[None]})
    quantized = nncf.quantize(onnx.load(str(fp32_path)), dataset, model_type=nncf.ModelType.TRANSFORMER,
                              preset=nncf.QuantizationPreset.MIXED, subset_size=len(samples),
                              fast_bias_correction=True)
    save_quantized(quantized, fp32_path, out_path, {"precision": "int8-nncf", "calibration_method": "nncf",
                                                    "calibration_windows": str(len(samples)),
                                                    GRAPH_ROLE_KEY: "onnx_int8_nncf"})
    nodes = quantized.graph.node
    return QuantizeResult(path=out_path, method="nncf", num_calibration_windows=len(samples), num_calibration_images=0,
                          quantized_nodes=sum(1 for n in nodes if n.op_type == "DequantizeLinear"), excluded_nodes=0,
                          seconds=time.perf_counter() - start, preprocessed=False)


__all__ = ["quantize_nncf", "nncf_available", "NNCF_HINT"]
