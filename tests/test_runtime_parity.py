"""runtime.Segmenter against the PyTorch pipeline (mgca.inference) on the same bundle: labels, scores,
background, class subsets, batches, the low-memory label path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime import Result, Segmenter

from .support import CLASSES, SIZES, blocky_image, torch_predictor


@pytest.mark.parametrize("overrides", [{}, {"unit_scope": "window"}, {"units": 0}, {"units": 6}],
                         ids=["image-units", "window-units", "pixel-units", "non-square-units"])
def test_labels_match_pytorch(bundle, tiny_model, class_embeddings, overrides):
    seg = Segmenter(bundle, backend="onnxruntime", device="cpu", **overrides)
    pred = torch_predictor(tiny_model, class_embeddings, **overrides)
    rng = np.random.default_rng(0)
    agree = total = 0
    for height, width in SIZES:
        image = blocky_image(rng, height, width)
        ours = seg.segment(image).labels
        theirs = pred.predict(image)
        assert ours.shape == (height, width) and ours.dtype == np.int32
        agree += int((ours == theirs).sum())
        total += ours.size
        assert (ours == theirs).mean() >= 0.999, (height, width, (ours == theirs).mean())
    assert agree / total >= 0.999


def test_scores_and_background_match_pytorch(segmenter, tiny_model, class_embeddings):
    rng = np.random.default_rng(1)
    image = blocky_image(rng, 120, 90)
    result = segmenter.segment(image, return_scores=True)
    theirs = torch_predictor(tiny_model, class_embeddings).predict_scores(image).numpy()
    assert result.scores.shape == (len(CLASSES), 120, 90)
    np.testing.assert_allclose(result.scores, theirs, atol=2e-4)
    probs = torch.softmax(torch.from_numpy(theirs) * 100, 0).max(0).values.numpy()
    # whole units share one probability: put the threshold in the widest gap between the 20th-80th percentiles
    levels = np.unique(probs[(probs >= np.percentile(probs, 20)) & (probs <= np.percentile(probs, 80))])
    widest = int(np.argmax(np.diff(levels)))
    threshold = float(levels[widest:widest + 2].mean())
    ours = segmenter.segment(image, background_threshold=threshold)
    ref = torch_predictor(tiny_model, class_embeddings, background_threshold=threshold).predict(image)
    assert ours.class_names == ("background", *CLASSES)
    assert (ours.labels == 0).any() and (ours.labels > 0).any()
    assert (ours.labels == ref).mean() >= 0.999


def test_class_subset_and_order(segmenter, tiny_model, class_embeddings):
    image = blocky_image(np.random.default_rng(2), 80, 70)
    subset = ["sky", "cat", "car"]
    result = segmenter.segment(image, classes=subset)
    assert result.class_names == tuple(subset)
    rows = [CLASSES.index(c) for c in subset]
    pred = torch_predictor(tiny_model, class_embeddings[rows], subset)
    assert (result.labels == pred.predict(image)).mean() >= 0.999


def test_batch_equals_single_calls(segmenter):
    rng = np.random.default_rng(3)
    images = [blocky_image(rng, h, w) for h, w in [(50, 60), (130, 70), (64, 64)]]
    batch = segmenter.segment(images)
    assert isinstance(batch, list) and len(batch) == 3
    for image, result in zip(images, batch, strict=True):
        assert isinstance(result, Result) and result.scores is None
        np.testing.assert_array_equal(result.labels, segmenter.segment(image).labels)
    stacked = segmenter.segment(np.stack([images[2], images[2]]))
    np.testing.assert_array_equal(stacked[1].labels, batch[2].labels)


def test_row_blocks_do_not_change_labels_or_scores(segmenter, monkeypatch):
    import runtime.postprocess as postprocess

    image = blocky_image(np.random.default_rng(8), 150, 230)
    whole = segmenter.segment(image, return_scores=True, background_threshold=0.5)
    monkeypatch.setattr(postprocess, "BLOCK_BYTES", 1)  # one row (and one column) per block
    rows = segmenter.segment(image, return_scores=True, background_threshold=0.5)
    np.testing.assert_array_equal(rows.labels, whole.labels)
    # Equal to float32 rounding: on a 2-core AMD EPYC (numpy 2.4's OpenBLAS) a 1-row block's products differed from
    # the whole image's in the last bit (1.2e-7), most likely because BLAS picks its kernel by the block's rows.
    np.testing.assert_allclose(rows.scores, whole.scores, rtol=0, atol=1e-6)
