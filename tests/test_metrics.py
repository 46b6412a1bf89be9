"""mIoU over a streaming confusion matrix, checked against a hand-computed example and a naive count."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runtime.metrics import ConfusionMatrix

LABEL = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 1, 0]])


def test_hand_computed_example():
    # valid pixels (label, pred): (0,0) (0,1) (1,1) (1,1) (2,1); the 255 pixel is ignored
    # class 0: TP 1, FN 1, FP 0 -> IoU 1/2; class 1: TP 2, FP 2 -> 2/4; class 2: TP 0, FN 1 -> 0
    matrix = ConfusionMatrix(3)
    matrix.update(PRED, LABEL)
    metrics = matrix.compute(["a", "b", "c"])
    np.testing.assert_allclose(metrics.iou, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(metrics.acc, [0.5, 1.0, 0.0])
    assert metrics.miou == pytest.approx(1 / 3) and metrics.macc == pytest.approx(0.5)
    assert metrics.aacc == pytest.approx(3 / 5) and metrics.num_pixels == 5 and metrics.num_images == 1


def test_classes_absent_from_labels_and_predictions_are_nan_and_excluded():
    matrix = ConfusionMatrix(5)
    matrix.update(PRED, LABEL)
    metrics = matrix.compute()
    assert math.isnan(metrics.iou[3]) and math.isnan(metrics.iou[4])
    assert metrics.miou == pytest.approx(1 / 3)
    # predicted but never labelled: IoU 0, counted (mmseg), accuracy undefined
    matrix.update(np.array([[4]]), np.array([[0]]))
    metrics = matrix.compute()
    assert metrics.iou[4] == 0.0 and math.isnan(metrics.acc[4])
    assert metrics.miou == pytest.approx(np.mean([1 / 3, 0.5, 0.0, 0.0]))


def test_streaming_equals_a_naive_count_over_all_pixels():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 6, size=(7, 9)) for _ in range(4)]
    for label in labels:
        label[rng.random(label.shape) < 0.1] = 255
    preds = [rng.integers(0, 6, size=(7, 9)) for _ in range(4)]
    streaming = ConfusionMatrix(6)
    for pred, label in zip(preds, labels, strict=True):
        streaming.update(pred, label)
    halves = ConfusionMatrix(6), ConfusionMatrix(6)
    for i, (pred, label) in enumerate(zip(preds, labels, strict=True)):
        halves[i % 2].update(pred, label)
    halves[0].merge(halves[1])
    np.testing.assert_array_equal(halves[0].matrix, streaming.matrix)
    gt, pr = np.concatenate([l.ravel() for l in labels]), np.concatenate([p.ravel() for p in preds])
    keep = gt != 255
    gt, pr = gt[keep], pr[keep]
    metrics = streaming.compute()
    for k in range(6):
        inter = np.sum((gt == k) & (pr == k))
        union = np.sum((gt == k) | (pr == k))
        assert metrics.iou[k] == pytest.approx(inter / union)
    assert metrics.aacc == pytest.approx(np.mean(gt == pr)) and metrics.num_images == 4


def test_bad_inputs_are_rejected():
    matrix = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        matrix.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="label holds values outside"):
        matrix.update(np.zeros((1, 2)), np.array([[0, 7]]))
    with pytest.raises(ValueError, match="prediction holds values outside"):
        matrix.update(np.array([[3, 0]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="class names"):
        matrix.compute(["a"])


def test_table_and_json(tmp_path):
    matrix = ConfusionMatrix(4)
    matrix.update(PRED, LABEL)
    metrics = matrix.compute(["cat", "dog", "sky", "road"])
    table = metrics.table()
    assert "cat" in table and "road" in table and "1 images" in table
    assert "mIoU 33.33" in table and "aAcc 60.00" in table
    data = metrics.to_dict()
    assert data["mIoU"] == pytest.approx(33.3333) and data["per_class"]["road"] == {"IoU": None, "Acc": None}
    path = metrics.save_json(tmp_path / "out" / "m.json", extra={"dataset": "toy"})
    loaded = json.loads(path.read_text())
    assert loaded["dataset"] == "toy" and loaded["num_images"] == 1 and loaded["per_class"]["dog"]["IoU"] == 50.0
