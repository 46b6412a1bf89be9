"""PyTorch inference: unit assignment vs a naive loop, preprocessing, stitching, scores -> labels.

The geometry both implementations share (meta-point grid, window spans, resize) is tested in test_contract.py."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mgca.config import ConfigError
from mgca.inference import InferenceConfig, SegmentationPredictor, labels_from_scores, upsample_scores
from mgca.inference.units import assign_pixels, semantic_units, unit_embedding_map, unit_scores
from mgca.inference.windows import preprocess, stitch
from mgca.prompts import TCL_TEMPLATES
from runtime.contract import InferenceSettings, meta_point_indices


def random_map(channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(channels, height, width, generator=generator), dim=0)


def random_classes(count: int, channels: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(count, channels, generator=generator), dim=1)


class LocalModel(nn.Module):
    """Each 8x8 patch maps to its own embedding: windows stitched must equal one pass exactly."""

    output_stride = 8

    def __init__(self, channels: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, channels, kernel_size=8, stride=8)
        self.backbone = SimpleNamespace(mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25), patch_size=8,
                                        class_embeddings=lambda names, *_, **__: random_classes(len(names), channels))

    def pixel_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.conv(images), dim=1)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# ---- assignment and pooling vs naive loops --------------------------------------------------

def naive_units(embeddings: torch.Tensor, m: int) -> tuple[list[int], list[torch.Tensor]]:
    channels, height, width = embeddings.shape
    pixels = [embeddings[:, y, x].double() for y in range(height) for x in range(width)]
    points = [pixels[i] for i in meta_point_indices(height, width, m)]
    assignment = []
    for pixel in pixels:
        sims = [float(pixel @ point) / float(pixel.norm() * point.norm()) for point in points]
        best = max(sims)
        assignment.append(next(k for k, s in enumerate(sims) if s >= best - 1e-12))
    units = []
    for k in range(len(points)):
        members = [p for p, a in zip(pixels, assignment, strict=True) if a == k]
        mean = torch.stack(members).mean(0) if members else torch.zeros(channels, dtype=torch.float64)
        units.append(mean / mean.norm() if members else mean)
    return assignment, units


@pytest.mark.parametrize("shape, m", [((7, 9), 6), ((12, 12), 36), ((5, 13), 7), ((6, 6), 16)])
def test_assignment_and_pooling_match_a_naive_loop(shape, m):
    embeddings = random_map(8, *shape, seed=sum(shape) + m)
    assignment, units = semantic_units(embeddings, m)
    naive_assignment, naive_pooled = naive_units(embeddings, m)
    assert assignment.tolist() == naive_assignment
    torch.testing.assert_close(units.double(), torch.stack(naive_pooled), atol=1e-5, rtol=0)


def test_chunked_assignment_equals_one_block():
    embeddings = random_map(8, 17, 23, seed=3)
    flat = embeddings.flatten(1)
    points = torch.tensor(meta_point_indices(17, 23, 36))
    assert torch.equal(assign_pixels(flat, points, chunk_elements=36 * 5), assign_pixels(flat, points))


def test_ties_go_to_the_lowest_meta_point():
    embeddings = torch.zeros(4, 4, 4)
    embeddings[0] = 1.0  # every pixel identical: all similarities tie
    assignment, _ = semantic_units(embeddings, 4)
    assert assignment.tolist() == [0] * 16


def test_label_ties_go_to_the_lowest_class():
    scores = torch.rand(5, 31, 37)
    scores[3] = scores[1] = scores.max(dim=0).values + 1  # classes 1 and 3 tie for the best everywhere
    assert labels_from_scores(scores).unique().tolist() == [1]
    assert torch.equal(labels_from_scores(torch.zeros(4, 6, 6)), torch.zeros(6, 6, dtype=torch.long))


def test_unit_scores_give_each_pixel_its_units_scores():
    embeddings, classes = random_map(8, 9, 11, seed=5), random_classes(5, 8)
    scores = unit_scores(embeddings, classes, 6)
    assignment, units = naive_units(embeddings, 6)
    expected = torch.stack([torch.stack(units)[a].float() @ classes.T for a in assignment]).T.reshape(5, 9, 11)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    assert len({tuple(scores[:, y, x].tolist()) for y in range(9) for x in range(11)}) <= 6


def test_m_equal_l_reproduces_pixel_units():
    embeddings, classes = random_map(8, 4, 6, seed=7), random_classes(5, 8)
    pixel = torch.einsum("kc,chw->khw", classes, embeddings)
    torch.testing.assert_close(unit_scores(embeddings, classes, 0), pixel)
    torch.testing.assert_close(unit_scores(embeddings, classes, 24), pixel)
    torch.testing.assert_close(unit_scores(embeddings, classes, 1000), pixel)
    # the generic path with a meta-point on every pixel (grid 4x6 = the map) gives the same scores
    assignment, units = semantic_units(embeddings, 24)
    assert assignment.tolist() == list(range(24))
    torch.testing.assert_close((units @ classes.T)[assignment].T.reshape(5, 4, 6), pixel, atol=1e-6, rtol=0)


def test_unit_embedding_map_is_normalised_and_piecewise_constant():
    out = unit_embedding_map(random_map(8, 10, 10, seed=2), 9)
    torch.testing.assert_close(out.norm(dim=0), torch.ones(10, 10), atol=1e-5, rtol=0)
    assert len({tuple(out[:, y, x].tolist()) for y in range(10) for x in range(10)}) <= 9


# ---- preprocessing and windows --------------------------------------------------------------

def test_preprocess_normalises_and_lays_out_mmseg_windows():
    image = np.full((500, 334, 3), 128, dtype=np.uint8)
    pre = preprocess(image, InferenceSettings(), (0.5, 0.5, 0.5), (0.25, 0.5, 1.0), 8)
    assert pre.original_size == (500, 334) and pre.resized_size == (671, 448) and pre.tensor.shape == (3, 671, 448)
    value = (128 / 255 - 0.5) / np.array([0.25, 0.5, 1.0])
    torch.testing.assert_close(pre.tensor.mean(dim=(1, 2)), torch.tensor(value, dtype=torch.float32))
    # mmseg: [0, 448) and [223, 671); the second moved back onto the 8 px grid, both all image pixels
    assert pre.boxes == ((0, 448, 0, 448), (216, 664, 0, 448)) and pre.grid_size == (83, 56)
    legacy = preprocess(image, InferenceSettings(padding="image"), (0.5, 0.5, 0.5), (0.25, 0.5, 1.0), 8)
    assert legacy.boxes == ((0, 448, 0, 448), (224, 671, 0, 448)) and legacy.grid_size == (84, 56)


def test_preprocess_checks_images_as_the_runtime_does():
    """Grayscale and RGBA are converted losslessly (as runtime.Segmenter does); floats are refused in one line."""
    gray = random_image(10, 12)[:, :, 0]
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((10, 12, 1), 7, np.uint8)], axis=2)
    small = InferenceSettings(short_side=16, window=16, stride=8)
    reference = preprocess(rgb, small, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 8).tensor
    for converted in (gray, rgba):
        assert torch.equal(preprocess(converted, small, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 8).tensor, reference)
    with pytest.raises(ValueError, match="dtype float32; pass uint8 RGB"):
        preprocess(np.zeros((10, 10, 3), dtype=np.float32), InferenceSettings(), (0, 0, 0), (1, 1, 1), 8)


def test_stitch_averages_overlaps():
    grids = torch.stack([torch.full((2, 2, 2), 1.0), torch.full((2, 2, 2), 3.0)])
    grids[1, 1] = -3.0
    out = stitch(grids, [(0, 16, 0, 16), (0, 16, 8, 24)], (2, 3), 8)
    assert out.shape == (2, 2, 3)
    expected_middle = F.normalize(torch.tensor([2.0, -1.0]), dim=0)
    torch.testing.assert_close(out[:, 0, 1], expected_middle)


# ---- the predictor --------------------------------------------------------------------------

def test_one_covering_window_reproduces_a_single_pass(tiny_model):
    predictor = SegmentationPredictor(tiny_model, InferenceConfig(short_side=64, window=64, stride=32))
    image = random_image(64, 64)
    pre, stitched = predictor.embed(image)
    with torch.no_grad():
        single = tiny_model.pixel_embeddings(pre.tensor[None])[0]
    torch.testing.assert_close(stitched, F.normalize(single, dim=0), atol=1e-5, rtol=0)


def test_sliding_windows_on_a_local_model_equal_a_single_pass():
    model = LocalModel()
    predictor = SegmentationPredictor(model, InferenceConfig(short_side=48, window=32, stride=16))
    pre, stitched = predictor.embed(random_image(50, 90, seed=4))
    assert len(pre.boxes) > 4 and pre.grid_size == (6, 10)  # the windows overlap and cross the image
    with torch.no_grad():
        single = model.pixel_embeddings(pre.tensor[None])[0]
    torch.testing.assert_close(stitched, single, atol=1e-5, rtol=0)


def test_window_scope_equals_image_scope_when_one_window_covers_the_image(tiny_model):
    image = random_image(64, 64, seed=9)
    results = []
    for scope in ("image", "window"):
        config = InferenceConfig(short_side=64, window=64, stride=32, units=9, unit_scope=scope)
        predictor = SegmentationPredictor(tiny_model, config)
        predictor.set_classes(["cat", "dog", "sky"])
        results.append(predictor.predict_scores(image))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(5, 7), (64, 64), (40, 130), (131, 33)])
@pytest.mark.parametrize("units, scope", [(36, "image"), (0, "image"), (4, "window")])
def test_predict_returns_labels_at_the_original_size(tiny_model, shape, units, scope):
    config = InferenceConfig(short_side=32, window=32, stride=16, units=units, unit_scope=scope)
    predictor = SegmentationPredictor(tiny_model, config)
    predictor.set_classes(["cat", "grass", "sky"])
    labels = predictor.predict(random_image(*shape))
    assert labels.shape == shape and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < 3


def test_background_threshold_shifts_classes(tiny_model):
    image = random_image(40, 50)
    base = SegmentationPredictor(tiny_model, InferenceConfig(short_side=32, window=32, stride=16))
    base.set_classes(["cat", "grass", "sky"])
    plain = base.predict(image)
    never = SegmentationPredictor(tiny_model, InferenceConfig(short_side=32, window=32, stride=16,
                                                              background_threshold=0.0, bg_rule="softmax"))
    never.set_classes(["cat", "grass", "sky"])
    np.testing.assert_array_equal(never.predict(image), plain + 1)
    always = SegmentationPredictor(tiny_model, InferenceConfig(short_side=32, window=32, stride=16,
                                                               background_threshold=1.0, bg_rule="softmax"))
    always.set_classes(["cat", "grass", "sky"])
    assert (always.predict(image) <= 3).all()


def test_labels_from_scores_background_rule():
    scores = torch.tensor([[[0.30, 0.20]], [[0.10, 0.20]]])  # K=2, 1x2 pixels
    assert labels_from_scores(scores).tolist() == [[0, 0]]
    assert labels_from_scores(scores, background_threshold=0.95).tolist() == [[1, 0]]


def test_upsample_scores_walks_back_to_the_original_size():
    pre = preprocess(random_image(30, 50), InferenceSettings(short_side=16, window=16, stride=8), (0, 0, 0),
                     (1, 1, 1), 8)
    assert pre.resized_size == (16, 27) and pre.grid_size == (2, 3)  # 24 px of grid: 3 columns edge-extended
    scores = torch.rand(3, 2, 3)
    assert upsample_scores(scores, pre).shape == (3, 30, 50)
    legacy = preprocess(random_image(30, 50), InferenceSettings(short_side=16, window=16, stride=8, padding="image"),
                        (0, 0, 0), (1, 1, 1), 8)
    assert legacy.grid_size == (2, 4)  # 32 px of grid, cropped to 27
    assert upsample_scores(torch.rand(3, 2, 4), legacy).shape == (3, 30, 50)


def test_class_embeddings_are_prompt_averaged_and_cached(tiny_model):
    """TCL's set: the raw template embeddings averaged, then normalised (TCL's build_text_embedding); any other
    averaging is CLIP's (each normalised first), and the two differ on TCL's 9 templates."""
    predictor = SegmentationPredictor(tiny_model, InferenceConfig(short_side=32, window=32, stride=16))
    predictor.set_classes(["cat", "dog"])
    with torch.no_grad():
        raw = [tiny_model.backbone.encode_text([t.format(n) for t in TCL_TEMPLATES]) for n in ["cat", "dog"]]
        clip = tiny_model.backbone.class_embeddings(["cat", "dog"], TCL_TEMPLATES, average="normalized")
    tcl = F.normalize(torch.stack([r.mean(0) for r in raw]), dim=-1)
    torch.testing.assert_close(predictor.class_embeddings, tcl, atol=1e-5, rtol=0)
    expected_clip = F.normalize(torch.stack([F.normalize(r, dim=-1).mean(0) for r in raw]), dim=-1)
    torch.testing.assert_close(clip, expected_clip, atol=1e-5, rtol=0)
    assert (clip - tcl).abs().max() > 1e-4
    first = predictor.class_embeddings
    predictor.set_classes(["cat", "dog"])
    assert predictor.class_embeddings.data_ptr() == first.data_ptr()


def test_predict_needs_classes_and_valid_config(tiny_model):
    predictor = SegmentationPredictor(tiny_model, InferenceConfig(short_side=32, window=32, stride=16))
    with pytest.raises(RuntimeError, match="set_classes"):
        predictor.predict(random_image(10, 10))
    with pytest.raises(ValueError):
        predictor.set_classes([])
    for bad in (dict(window=40), dict(stride=12), dict(stride=64, window=32), dict(units=-1), dict(unit_scope="tile"),
                dict(background_threshold=1.5), dict(templates="nope"), dict(bg_rule="mean"), dict(padding="none"),
                dict(long_side=16), dict(pamr=-1), dict(pamr_dilations=())):
        with pytest.raises(ConfigError):
            SegmentationPredictor(tiny_model, InferenceConfig(**{"short_side": 32, "window": 32, "stride": 16, **bad}))


def test_precomputed_units_give_the_same_labels_for_every_vocabulary(tiny_model):
    """Units depend on the image only: assigned once and passed in, they give bit-identical labels."""
    from mgca.inference.units import image_units

    config = InferenceConfig(short_side=64, window=32, stride=16, units=9, background_threshold=0.5, bg_rule="tcl")
    predictor = SegmentationPredictor(tiny_model, config)
    pre, embeddings = predictor.embed(random_image(50, 70, seed=3))
    assigned = predictor.image_units(embeddings)
    assert assigned is not None and predictor.image_units(embeddings, 0) is None  # pixel units: nothing to assign
    for vocabulary in (["cat", "grass", "sky"], ["road", "car"]):
        predictor.set_classes(vocabulary)
        expected = predictor.labels_from_embedding(pre, embeddings)
        np.testing.assert_array_equal(predictor.labels_from_embedding(pre, embeddings, assigned=assigned), expected)
        np.testing.assert_array_equal(predictor.labels_from_embedding(pre, embeddings, 4, image_units(embeddings, 4)),
                                      predictor.labels_from_embedding(pre, embeddings, 4))
    one_unit = (torch.zeros_like(assigned[0]), assigned[1][:1].expand(9, -1))  # every pixel in unit 0: used, not redone
    assert len(np.unique(predictor.labels_from_embedding(pre, embeddings, assigned=one_unit))) == 1
    with pytest.raises(ValueError, match="precomputed units"):
        predictor.labels_from_embedding(pre, embeddings, 4, assigned)
