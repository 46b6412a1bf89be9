"""runtime.Segmenter against the PyTorch pipeline (mgca.inference) on the same bundle: labels, scores,
background, class subsets, batches, the low-memory label path."""
from __future__ import annotations

import tracemalloc

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import torch

from runtime import Result, Segmenter

from .support import CLASSES, ONNX_CPU, SIZES, blocky_image, torch_predictor


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


def test_thousand_classes_match_pytorch(bundle, tiny_model):
    """1,000 classes (OpenCV 5's resize stops at 128 channels) give the PyTorch pipeline's labels and scores."""
    rng = np.random.default_rng(2)
    names = [f"class {i}" for i in range(1000)]
    embeddings = rng.normal(size=(1000, 64)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    seg = Segmenter(bundle, **ONNX_CPU)
    seg.set_vocabulary((names, embeddings))
    image = blocky_image(rng, 90, 70)
    result = seg.segment(image, return_scores=True)
    reference = torch_predictor(tiny_model, embeddings, names)
    assert result.labels.shape == (90, 70) and result.scores.shape == (1000, 90, 70)
    assert (result.labels == reference.predict(image)).mean() >= 0.999
    np.testing.assert_allclose(result.scores, reference.predict_scores(image).numpy(), atol=2e-4)


def test_score_upsampling_is_the_contracts_three_steps(bundle):
    """The composed separable resize equals bilinear to the grid's pixel size, crop (or edge-extend) to the
    resized size, bilinear to the input (torch's F.interpolate), for both window paddings."""
    import torch.nn.functional as F

    from runtime.contract import InferenceSettings
    from runtime.postprocess import scores_to_labels
    from runtime.preprocess import prepare

    for padding in ("crop", "image"):
        settings = InferenceSettings(short_side=96, window=64, stride=32, units=0, padding=padding)
        for height, width in [(50, 333), (96, 96), (131, 47)]:
            prepared = prepare(np.zeros((height, width, 3), np.uint8), settings, 8, np.zeros(3, np.float32),
                               np.ones(3, np.float32))
            scores = np.random.default_rng(height).uniform(-1, 1, (*prepared.grid_hw, 300)).astype(np.float32)
            labels, kept = scores_to_labels(scores, prepared, keep_scores=True, output_stride=8)
            full = F.interpolate(torch.from_numpy(scores.astype(np.float64)).permute(2, 0, 1)[None],
                                 size=(prepared.grid_hw[0] * 8, prepared.grid_hw[1] * 8), mode="bilinear",
                                 align_corners=False)
            full = full[:, :, :prepared.resized_hw[0], :prepared.resized_hw[1]]
            pad_h, pad_w = prepared.resized_hw[0] - full.shape[2], prepared.resized_hw[1] - full.shape[3]
            full = F.pad(full, (0, pad_w, 0, pad_h), mode="replicate")
            full = F.interpolate(full, size=(height, width), mode="bilinear", align_corners=False)[0].numpy()
            np.testing.assert_allclose(kept, full, atol=1e-5)
            assert (labels == full.argmax(axis=0)).mean() > 0.999


def test_score_upsampling_extends_a_short_grid_by_its_edge():
    """Where the grid stops short of the resized image (< os px) the last row/column is repeated."""
    from runtime.postprocess import bilinear_weights, upsample_weights

    weights = upsample_weights(3, 8, 27, 27)  # grid 3 x 8 = 24 px, resized 27: 3 rows repeat row 23
    np.testing.assert_allclose(weights[:24], bilinear_weights(24, 3), atol=1e-7)
    np.testing.assert_array_equal(weights[24:], np.repeat(weights[23:24], 3, axis=0))


# ---------------------------------------------------------------- memory and equality on any aspect ratio

_LENGTHS = st.one_of(st.integers(1, 4000), st.sampled_from([2 ** k + 1 for k in range(15)]))
_SHAPES = st.one_of(
    st.tuples(st.just(1), _LENGTHS), st.tuples(_LENGTHS, st.just(1)), st.tuples(st.just(3), _LENGTHS),
    st.tuples(_LENGTHS, st.just(3)), st.tuples(*[st.sampled_from([2 ** k + 1 for k in range(10)])] * 2))


def _bilinear_axis(values: np.ndarray, axis: int, size: int) -> np.ndarray:
    """`values` resized along `axis` to `size` samples, bilinear with align_corners=False, in float64: the
    formula (source (i + 0.5) n / size - 0.5, clamped to the samples) written out."""
    n = values.shape[axis]
    src = np.maximum((np.arange(size) + 0.5) * n / size - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.intp), n - 1)
    frac = (src - low).reshape([-1 if a == axis else 1 for a in range(values.ndim)])
    return np.take(values, low, axis) * (1 - frac) + np.take(values, np.minimum(low + 1, n - 1), axis) * frac


def _reference_scores(scores: np.ndarray, grid_pixels: tuple[int, int], resized: tuple[int, int],
                      original: tuple[int, int]) -> np.ndarray:
    """The contract's score upsampling step by step in float64: grid -> its pixel size, cropped to the resized
    size or extended by its edge, -> the input size. H x W x K."""
    out = scores.astype(np.float64)
    for axis in (0, 1):
        out = _bilinear_axis(out, axis, grid_pixels[axis])
        out = np.take(out, np.minimum(np.arange(resized[axis]), grid_pixels[axis] - 1), axis)
        out = _bilinear_axis(out, axis, original[axis]) if resized[axis] != original[axis] else out
    return out


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(shape=_SHAPES, short_side=st.sampled_from([8, 24, 96]), cap=st.sampled_from([0, 1, 2, 2048]),
                  output_stride=st.sampled_from([8, 16]), padding=st.sampled_from(["crop", "image"]),
                  classes=st.integers(1, 5), block_bytes=st.sampled_from([1, 97, 4096, None]),
                  strip_bytes=st.sampled_from([1, 5000, None]), seed=st.integers(0, 2 ** 16))
def test_upsampling_equals_the_reference_on_any_aspect_ratio(shape, short_side, cap, output_stride, padding,
                                                             classes, block_bytes, strip_bytes, seed):
    """1 x N, N x 1, 3 x N and 2^k + 1 sizes, tiles of every size: the runtime's full-resolution scores equal the
    contract's steps in float64, each pixel made once, and its labels equal the reference's and PyTorch's
    (mgca.inference.predictor.upsample_scores) wherever the two best classes are further apart than the
    rounding of each (PyTorch computes source coordinates in float32: up to ~1e-4 of a pixel at 2048)."""
    from mgca.inference.predictor import upsample_scores
    from mgca.inference.windows import Preprocessed
    from runtime.contract import InferenceSettings, resized_shape, settings_layout
    from runtime.postprocess import scores_to_labels, upsampled_tiles
    from runtime.preprocess import Prepared

    height, width = shape
    long_side = cap * short_side if cap in (1, 2) else cap
    settings = InferenceSettings(short_side=short_side, long_side=long_side, window=64, stride=32, padding=padding)
    resized = resized_shape(height, width, short_side, long_side)
    hypothesis.assume(resized[0] * resized[1] <= 1 << 20)
    grid = settings_layout(*resized, settings.validate(output_stride), output_stride).grid_hw
    prepared = Prepared((height, width), resized, grid, (), np.empty(0), np.empty(0))
    scores = np.random.default_rng(seed).uniform(-1, 1, (*grid, classes)).astype(np.float32)

    ours = np.full((height, width, classes), np.nan, dtype=np.float32)
    for y0, y1, x0, x1, tile in upsampled_tiles(scores, prepared, output_stride, block_bytes, strip_bytes):
        assert np.isnan(ours[y0:y1, x0:x1]).all()  # each pixel exactly once
        ours[y0:y1, x0:x1] = tile
    exact = _reference_scores(scores, (grid[0] * output_stride, grid[1] * output_stride), resized, shape)
    np.testing.assert_allclose(ours, exact, rtol=0, atol=1e-6)

    labels, _ = scores_to_labels(scores, prepared, output_stride=output_stride)
    pre = Preprocessed(torch.empty(0), shape, resized, (), grid, output_stride)
    theirs = upsample_scores(torch.from_numpy(scores).permute(2, 0, 1), pre).max(dim=0).indices.numpy()
    top2 = np.sort(exact, axis=2)[:, :, -2:] if classes > 1 else np.stack([exact[..., 0] - 1, exact[..., 0]], 2)
    margin = top2[..., 1] - top2[..., 0]
    np.testing.assert_array_equal(labels[margin > 1e-5], exact.argmax(axis=2)[margin > 1e-5])
    torch_rounding = 8 * 2.0 ** -24 * (max(*resized, *shape) + 1)  # float32 source coordinates, score range 2
    np.testing.assert_array_equal(labels[margin > torch_rounding], theirs[margin > torch_rounding])


@pytest.mark.parametrize("shape", [(1, 200_000), (200_000, 1), (3, 70_000), (70_000, 3), (450, 450)])
def test_memory_is_bounded_by_pixels_on_any_aspect_ratio(bundle, shape):
    """Peak Python-heap memory (numpy's arrays; tracemalloc) of a whole `segment` call: a few bytes per pixel
    plus the upsampling's fixed tile and strip budgets, whatever the shape (a dense original x resized
    interpolation matrix took 2 kB per pixel of a 1 x 200000 image here, 4.6 GB for 250000 x 4 at the default
    long side)."""
    import runtime.postprocess as postprocess

    seg = Segmenter(bundle, backend="onnxruntime", device="cpu", long_side=256)
    image = blocky_image(np.random.default_rng(9), *shape)
    seg.segment(image)  # first-call allocations (the engine's, imports) are not the image's
    tracemalloc.start()
    try:
        labels = seg.segment(image).labels
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert labels.shape == shape
    bound = 16 * image.shape[0] * image.shape[1] + 6 * postprocess.BLOCK_BYTES
    assert peak <= bound, f"{shape}: peak {peak / 1e6:.1f} MB over the bound {bound / 1e6:.1f} MB"
