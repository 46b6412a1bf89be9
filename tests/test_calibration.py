"""calibration: image-folder reader (inference preprocessing), QDQ int8 quantisation and its accuracy vs fp32."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="calibration tests need onnx")
pytest.importorskip("onnxruntime.quantization", reason="calibration tests need onnxruntime's quantisation tools")

from calibration.quantize import (
    activation_matmuls,
    evaluate_int8,
    label_windows,
    miou,
    quantize_int8,
    read_labelled_set,
)
from calibration.reader import (
    CalibrationError,
    ImageFolderCalibrationReader,
    Preprocess,
    image_windows,
    synthetic_images,
)
from export.onnx_export import export_onnx
from export.parity import parity_windows, random_class_embeddings
from runtime.contract import InferenceSettings
from runtime.engines import OrtEngine

WINDOW = 64
SETTINGS = InferenceSettings.for_window(WINDOW, 8)


def cpu_engine(path) -> OrtEngine:
    return OrtEngine(path, device="cpu")


@pytest.fixture(scope="module")
def preprocess(tiny_model):
    return Preprocess(SETTINGS, tuple(tiny_model.backbone.mean), tuple(tiny_model.backbone.std),
                      int(tiny_model.output_stride))


@pytest.fixture(scope="module")
def fp32_file(tmp_path_factory, tiny_model):
    return export_onnx(tiny_model, tmp_path_factory.mktemp("fp32") / "model.onnx", window=WINDOW)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i, image in enumerate(synthetic_images(6, (48, 80), seed=2)):
        cv2.imwrite(str(root / f"img{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (root / "broken.jpg").write_bytes(b"not an image")
    (root / "notes.txt").write_text("ignored")
    return root


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory, fp32_file, image_folder, preprocess):
    reader = ImageFolderCalibrationReader(image_folder, preprocess, limit=6)
    return quantize_int8(fp32_file, tmp_path_factory.mktemp("int8") / "model.int8.onnx", reader)


# ---------------------------------------------------------------- reader

@pytest.mark.parametrize("shape", [(48, 80), (64, 64), (200, 50), (33, 47)])
def test_windows_follow_the_inference_contract(preprocess, shape):
    """Same crops as the runtime's own preprocessing (docs/inference-contract.md)."""
    prepare = pytest.importorskip("runtime.preprocess").prepare
    image = synthetic_images(1, shape, seed=5)[0]
    ours = preprocess.windows(image)
    mean, std = np.asarray(preprocess.mean, np.float32), np.asarray(preprocess.std, np.float32)
    theirs = prepare(image, SETTINGS, 8, mean, std).crops
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)


def test_windows_shapes_and_normalisation():
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    white = np.full((32, 96, 3), 255, np.uint8)
    crops = image_windows(white, InferenceSettings(short_side=64, window=64, stride=32), output_stride=8, mean=mean,
                          std=std)
    # 32x96 -> 64x192: one row, (192 - 64 + 31) // 32 + 1 = 5 windows, all fully inside
    assert crops.shape == (5, 3, 64, 64)
    np.testing.assert_allclose(crops, 2.0)
    with pytest.raises(CalibrationError, match="calibration image has dtype float32; pass uint8 RGB"):
        image_windows(white.astype(np.float32), SETTINGS, 8, mean, std)
    with pytest.raises(CalibrationError, match="stride 12 must be a multiple of the output stride 8"):
        Preprocess(InferenceSettings(64, 64, 12), mean, std, 8)


def test_reader_over_folder(image_folder, preprocess):
    reader = ImageFolderCalibrationReader(image_folder, preprocess, limit=4, batch_size=3)
    assert reader.num_images == 4 and len(reader.paths) == 4  # broken.jpg skipped, notes.txt ignored
    assert all(p.suffix == ".png" for p in reader.paths)
    batches = list(reader)
    # 48x80 -> 64x107, padded 64x112: 3 windows
    assert sum(b["image"].shape[0] for b in batches) == len(reader.windows) == 4 * 3
    assert all(b["image"].shape[1:] == (3, WINDOW, WINDOW) and b["image"].dtype == np.float32 for b in batches)
    assert reader.get_next() is None
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["image"], batches[0]["image"])
    limited = ImageFolderCalibrationReader(image_folder, preprocess, limit=None, max_windows=5)
    assert len(limited.windows) == 5


def test_reader_errors(tmp_path, preprocess):
    with pytest.raises(CalibrationError, match="does not exist"):
        ImageFolderCalibrationReader(tmp_path / "nope", preprocess)
    with pytest.raises(CalibrationError, match="holds no images"):
        ImageFolderCalibrationReader(tmp_path, preprocess)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(CalibrationError, match="could be decoded"):
        ImageFolderCalibrationReader(tmp_path, preprocess)


# ---------------------------------------------------------------- quantisation

def test_int8_model_is_qdq_and_keeps_attention_in_float(int8_file, fp32_file):
    model = onnx.load(str(int8_file.path))
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    assert "QLinearMatMul" not in ops and "QLinearConv" not in ops  # QDQ format, not QOperator
    # symmetric int8 everywhere (TensorRT explicit quantisation needs zero points of 0)
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = onnx.numpy_helper.to_array(inits[node.input[2]])
            assert zp.dtype in (np.int8, np.int32) and not zp.any()  # int32: quantised biases
    # the attention products (activation x activation) are not quantised
    producers = {o: n for n in model.graph.node for o in n.output}
    fp32 = onnx.load(str(fp32_file))
    excluded = set(activation_matmuls(fp32))
    assert excluded and int8_file.excluded_nodes == len(excluded)
    for node in model.graph.node:
        if node.name in excluded:
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "int8-qdq" and meta["arch"] == "mgca-tiny" and meta["window"] == str(WINDOW)


@pytest.mark.parametrize("batch", [1, 3])
def test_int8_dynamic_batch(int8_file, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 3, WINDOW, WINDOW)).astype(np.float32)
    out = cpu_engine(int8_file.path).run(x)
    assert out.shape == (batch, 64, WINDOW // 8, WINDOW // 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)


def test_int8_label_agreement_with_fp32(int8_file, fp32_file, tiny_model, preprocess):
    windows = np.concatenate(list(parity_windows(preprocess, None, max_windows=4).values()))
    classes = random_class_embeddings(10, tiny_model.embed_dim)
    result = evaluate_int8(cpu_engine(fp32_file), cpu_engine(int8_file.path), windows, classes)
    assert result["label_agreement"] > 0.85, result  # measured ~0.96 on this random-init tiny model
    assert result["mean_cosine"] > 0.99 and 0 < result["miou_vs_fp32"] <= 1


def test_mIoU_on_a_labelled_set(tmp_path, int8_file, fp32_file, tiny_model, preprocess):
    images_dir, labels_dir = tmp_path / "images", tmp_path / "labels"
    images_dir.mkdir()
    labels_dir.mkdir()
    for i, image in enumerate(synthetic_images(3, (48, 64), seed=7)):
        cv2.imwrite(str(images_dir / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        label = (image.mean(axis=2) > 127).astype(np.uint8)  # 2 classes
        label[:4] = 255  # ignored rows
        cv2.imwrite(str(labels_dir / f"{i}.png"), label)
    images, labels = read_labelled_set(images_dir, labels_dir)
    assert len(images) == 3
    windows = np.concatenate([preprocess.windows(im) for im in images])
    targets = np.concatenate([label_windows(lb, preprocess) for lb in labels])
    assert targets.shape == (len(windows), WINDOW // 8, WINDOW // 8)
    assert (targets == 255).any() and set(np.unique(targets)) <= {0, 1, 255}
    classes = random_class_embeddings(2, tiny_model.embed_dim, seed=3)
    result = evaluate_int8(cpu_engine(fp32_file), cpu_engine(int8_file.path), windows, classes, labels=targets)
    assert {"miou_fp32", "miou_int8", "miou_drop"} <= set(result)
    assert result["miou_drop"] == pytest.approx(result["miou_fp32"] - result["miou_int8"])


def test_miou_is_the_metric_modules():
    target = np.array([0, 0, 1, 1, 2, 255])
    pred = np.array([0, 1, 1, 1, 0, 2])
    # ignore_index dropped; IoU: class0 1/3, class1 2/3, class2 0/1, class 3 never seen (left out)
    assert miou(pred, target, 4) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)


def test_quantize_rejects_unknown_method(fp32_file, preprocess, tmp_path):
    reader = ImageFolderCalibrationReader(synthetic_images(1, (48, 64)), preprocess)
    with pytest.raises(CalibrationError, match="calibration method"):
        quantize_int8(fp32_file, tmp_path / "x.onnx", reader, method="kl")


def test_asymmetric_activations_are_uint8_with_zero_points(fp32_file, image_folder, preprocess, tmp_path):
    """symmetric_activations=False (U8S8, onnxruntime CPU only): activations become uint8 with zero points,
    weights stay symmetric int8."""
    reader = ImageFolderCalibrationReader(image_folder, preprocess, limit=2)
    result = quantize_int8(fp32_file, tmp_path / "u8.onnx", reader, symmetric_activations=False)
    model = onnx.load(str(result.path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all(zp.dtype == np.uint8 for zp in zero_points)
    assert any(zp.any() for zp in zero_points)  # asymmetric: zero points follow each range
    weights = [inits[n.input[2]] for n in model.graph.node if n.op_type == "DequantizeLinear" and len(n.input) > 2
               and n.input[0] in inits and inits[n.input[0]].dtype == np.int8]
    assert weights and not any(zp.any() for zp in weights)


def test_quantising_leaves_the_working_directory_alone(fp32_file, image_folder, preprocess, tmp_path, monkeypatch):
    """onnxruntime's symbolic shape inference, on failing, saved its partial model and a model-sized uuid-named
    .data file into the current directory on every export; quantising must write only its output."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    reader = ImageFolderCalibrationReader(image_folder, preprocess, limit=2)
    result = quantize_int8(fp32_file, tmp_path / "out" / "model.int8.onnx", reader)
    assert result.preprocessed
    assert sorted(p.name for p in cwd.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.int8.onnx"]
