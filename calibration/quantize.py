"""Static int8 quantisation of the exported fp32 graph (QDQ format) and its accuracy against fp32.

`quantize_int8` runs onnxruntime's `quantize_static` with a calibration reader over real windows:

* QDQ format (QuantizeLinear/DequantizeLinear pairs around the quantised ops), which both
  onnxruntime (CPU/CUDA) and TensorRT's explicit quantisation consume;
* int8 weights, symmetric, per output channel; int8 activations, symmetric, per tensor (zero
  point 0 everywhere: TensorRT accepts only symmetric scales);
* only the weight-bearing linear ops are quantised: Conv (patch embedding, decoder convs),
  MatMul/Gemm with a constant weight (attention in/out projections, MLPs, the final
  projection). Attention's activation x activation products (Q.K^T, P.V), LayerNorm, Softmax,
  GELU/Erf, the L2 normalisation and the Resize stay in float: those are where ViTs lose accuracy
  under int8, and they are a small share of the FLOPs.

`evaluate_int8` reports the accuracy drop against fp32: per-pixel label agreement over a set of
class embeddings, mIoU of the int8 labels against the fp32 labels, and, given a labelled set,
mIoU of both models against the ground truth and the drop.
"""
from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.contract import GRAPH_ROLE_KEY, resized_shape, settings_layout
from runtime.files import atomic_path
from runtime.metrics import ConfusionMatrix
from runtime.postprocess import pixel_cosines, window_labels

from .reader import CalibrationError, Preprocess

QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def _onnx_quantization():
    try:
        from onnxruntime import quantization
    except ImportError:
        raise CalibrationError("int8 quantisation needs onnxruntime (pip install onnxruntime)") from None
    return quantization


class _quiet_root_logger:
    def __enter__(self):
        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self.level)
        return False


def activation_matmuls(model) -> list[str]:
    """Names of MatMul nodes whose two inputs are both activations (attention's Q.K^T and P.V)."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    # A weight may reach the MatMul through a Transpose/Cast/Reshape of an initializer.
    producers = {out: node for node in model.graph.node for out in node.output}

    def is_constant(name: str, depth: int = 0) -> bool:
        if name in constants:
            return True
        node = producers.get(name)
        if node is None or depth > 3 or node.op_type not in ("Transpose", "Cast", "Reshape", "Identity", "Unsqueeze"):
            return False
        return is_constant(node.input[0], depth + 1)

    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and not any(is_constant(i) for i in node.input)]


@dataclass
class QuantizeResult:
    path: Path
    method: str
    num_calibration_windows: int
    num_calibration_images: int
    quantized_nodes: int
    excluded_nodes: int
    seconds: float
    preprocessed: bool

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def quantize_int8(fp32_path: str | Path, out_path: str | Path, reader, method: str = "minmax",
                  per_channel: bool = True, op_types: Sequence[str] = QUANTIZED_OP_TYPES,
                  quantize_attention_matmuls: bool = False, preprocess: bool = True,
                  symmetric_activations: bool = True) -> QuantizeResult:
    """Write a QDQ int8 model calibrated on `reader` (an onnxruntime CalibrationDataReader).

    symmetric_activations=False writes uint8 activations with a zero point (U8S8, MLAS's native x86 kernel):
    onnxruntime CPU only, TensorRT refuses it; the default S8S8 graph with zero points 0 serves both."""
    import onnx

    q = _onnx_quantization()
    method = method.lower()
    if method not in CALIBRATION_METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; choose one of {list(CALIBRATION_METHODS)}")
    calibrate_method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                        "percentile": q.CalibrationMethod.Percentile}[method]
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mgca-quant-") as tmp:
        source = fp32_path
        preprocessed = False
        if preprocess:
            # onnx's shape inference + onnxruntime's basic fusions, as onnxruntime recommends before static
            # quantisation; the raw graph if it fails. Not onnxruntime's symbolic shape inference: it cannot follow
            # the dynamo graph's Expand of the CLS token, and on failing it saves its partial model, weights and
            # all, into the working directory (sym_shape_infer_temp.onnx + a uuid-named .data file per export).
            candidate = Path(tmp) / "pre.onnx"
            try:
                with warnings.catch_warnings(), _quiet_root_logger():
                    warnings.simplefilter("ignore")
                    q.shape_inference.quant_pre_process(str(fp32_path), str(candidate), skip_symbolic_shape=True)
                source, preprocessed = candidate, True
            except Exception:  # optional step
                pass
        model = onnx.load(str(source))
        excluded = [] if quantize_attention_matmuls else activation_matmuls(model)
        extra = {
            "ActivationSymmetric": symmetric_activations,
            "WeightSymmetric": True,
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # MatMul weights are K x N: channel axis 1
        }
        if method == "percentile":
            extra["CalibPercentile"] = 99.999
        tmp_out = Path(tmp) / "int8.onnx"
        reader.rewind()
        q.quantize_static(
            str(source), str(tmp_out), calibration_data_reader=reader, quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=list(op_types), per_channel=per_channel,
            activation_type=q.QuantType.QInt8 if symmetric_activations else q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8, nodes_to_exclude=excluded, calibrate_method=calibrate_method,
            extra_options=extra)
        quantized = onnx.load(str(tmp_out))
        save_quantized(quantized, fp32_path, out_path, {
            "precision": "int8-qdq", "calibration_method": method, GRAPH_ROLE_KEY: "onnx_int8",
            "calibration_windows": str(len(reader.windows) if hasattr(reader, "windows") else "")})
    return QuantizeResult(
        path=out_path, method=method,
        num_calibration_windows=len(getattr(reader, "windows", ())),
        num_calibration_images=getattr(reader, "num_images", 0),
        quantized_nodes=sum(1 for n in quantized.graph.node if n.op_type in op_types) - len(excluded),
        excluded_nodes=len(excluded), seconds=time.perf_counter() - start, preprocessed=preprocessed)


def save_quantized(quantized, fp32_path: Path, out_path: Path, marks: dict[str, str]) -> None:
    """Check `quantized` (an onnx.ModelProto) and write it atomically to `out_path`, carrying the fp32 export's
    metadata (backbone hashes, format) over with `marks` (precision, calibration) on top."""
    import onnx

    if fp32_path.exists():
        meta = {p.key: p.value for p in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
        meta.update(marks)
        del quantized.metadata_props[:]
        for key, value in meta.items():
            entry = quantized.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.checker.check_model(quantized)
    with atomic_path(out_path) as final_tmp:
        onnx.save_model(quantized, str(final_tmp))


# --------------------------------------------------------------------------------------------
# Accuracy against fp32

def label_windows(label: np.ndarray, preprocess: Preprocess, ignore_index: int = 255) -> np.ndarray:
    """A label map (H x W ints) through the same resize and windows as its image (each crop padded with
    ignore_index), sampled at the centre of every output-stride cell: n x (win/os) x (win/os)."""
    height, width = label.shape[:2]
    settings = preprocess.settings
    new_h, new_w = resized_shape(height, width, settings.short_side, settings.long_side)
    if (new_h, new_w) != (height, width):
        label = _resize_nearest(label, new_h, new_w)
    os_ = preprocess.output_stride
    win = settings.window
    grid = win // os_
    centre = np.arange(grid) * os_ + os_ // 2
    out = []
    for y1, y2, x1, x2 in settings_layout(new_h, new_w, settings, os_).boxes:
        crop = np.full((win, win), ignore_index, dtype=np.int64)
        crop[:y2 - y1, :x2 - x1] = label[y1:y2, x1:x2]
        out.append(crop[np.ix_(centre, centre)])
    return np.stack(out)


def _resize_nearest(label: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    return cv2.resize(label.astype(np.int32) if label.dtype != np.uint8 else label, (width, height),
                      interpolation=cv2.INTER_NEAREST).astype(np.int64)


def read_labelled_set(images_dir: str | Path, labels_dir: str | Path, limit: int | None = None):
    """(images, label maps) pairs: every image with a same-stem PNG label (class ids, 255 = ignore)."""
    import cv2

    from .reader import read_images

    images, paths = read_images(images_dir, None)
    labels_root = Path(labels_dir).expanduser()
    pairs_img, pairs_lbl = [], []
    for image, path in zip(images, paths, strict=True):
        label_path = labels_root / f"{path.stem}.png"
        if not label_path.is_file():
            continue
        label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        if label is None or label.ndim != 2 or label.shape != image.shape[:2]:
            continue
        pairs_img.append(image)
        pairs_lbl.append(label)
        if limit and len(pairs_img) >= limit:
            break
    if not pairs_img:
        raise CalibrationError(f"no image in {images_dir} has a matching single-channel PNG label of the same "
                               f"size in {labels_dir}")
    return pairs_img, pairs_lbl


def miou(prediction: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """mIoU of `prediction` against `target` (label maps of any shape; 255 = ignore), `runtime.metrics`' definition."""
    matrix = ConfusionMatrix(num_classes)
    matrix.update(prediction, target)
    return matrix.compute().miou


def evaluate_int8(fp32, int8, windows: np.ndarray, class_embeddings: np.ndarray, labels: np.ndarray | None = None,
                  batch_size: int = 4, fp32_embeddings: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy of the int8 graph against the fp32 one on `windows` (and on `labels`, n x g x g, if given).

    `fp32` and `int8` are engines (`runtime.engines.OrtEngine`); `fp32_embeddings` saves running fp32 again."""
    class_embeddings = np.asarray(class_embeddings, dtype=np.float32)
    num_classes = len(class_embeddings)
    ref = fp32_embeddings if fp32_embeddings is not None else fp32.run(windows, batch_size)
    out = int8.run(windows, batch_size)
    ref_labels, out_labels = window_labels(ref, class_embeddings), window_labels(out, class_embeddings)
    result = {
        "num_windows": int(len(windows)),
        "num_classes": int(num_classes),
        "label_agreement": float((ref_labels == out_labels).mean()),
        "miou_vs_fp32": miou(out_labels, ref_labels, num_classes),
        "mean_cosine": float(pixel_cosines(out, ref).mean()),
        "max_abs_err": float(np.abs(out - ref).max()),
    }
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != ref_labels.shape:
            raise CalibrationError(f"labels {labels.shape} do not match the prediction grid {ref_labels.shape}")
        m32 = miou(ref_labels, labels, num_classes)
        m8 = miou(out_labels, labels, num_classes)
        result.update({"miou_fp32": m32, "miou_int8": m8, "miou_drop": m32 - m8})
    return result


__all__ = ["quantize_int8", "save_quantized", "evaluate_int8", "QuantizeResult", "activation_matmuls", "label_windows",
           "read_labelled_set", "miou", "QUANTIZED_OP_TYPES", "CALIBRATION_METHODS"]
