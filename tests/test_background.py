"""Background rules (groupvit, tcl, softmax): the numpy runtime and the PyTorch twin against slow float64 loops
written from issue 20's description of each rule, on random embeddings, per pixel and per unit; then the two
implementations against each other on the exported bundle, label for label, each rule with and without PAMR."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mgca.inference import background as torch_background
from runtime import Segmenter
from runtime.contract import DEFAULT_SETTINGS, InferenceSettings, default_background
from runtime.postprocess import scores_to_labels
from runtime.preprocess import Prepared

from .support import SIZES, blocky_image, torch_predictor

CHANNELS, CLASSES_K, HEIGHT, WIDTH = 128, 12, 9, 11


# ---- the reference: loops and float64, from the words -----------------------------------

def ref_softmax(values: list[float]) -> list[float]:
    top = max(v for v in values if v != -math.inf)
    exps = [0.0 if v == -math.inf else math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def ref_cos(a: np.ndarray, b: np.ndarray) -> float:
    dot = sum(float(x) * float(y) for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(float(x) ** 2 for x in a)) * math.sqrt(sum(float(y) ** 2 for y in b)))


def reference_labels(groups: np.ndarray, assignment: np.ndarray, pixels: np.ndarray, text: np.ndarray, rule: str,
                     value: float) -> np.ndarray:
    """Labels (0 background, 1..K) of every pixel, its group `assignment[y][x]` among `groups` (M x C).

    groupvit: logits = 100 cos(group, class); p_all = softmax over all classes; the image's top-5 classes by the
    softmax of the image-average feature (mean of the pixel embeddings); p_top5 = softmax of the logits with every
    other class at -inf; score = p_top5 * p_all; background where a pixel's best score < min(threshold, the image's
    maximum score). tcl: a constant background channel `value` beside sigmoid(10 cos - 2.5), argmax.
    softmax: background where the best softmax(100 cos) probability < threshold."""
    height, width = assignment.shape
    classes = len(text)
    mean = [sum(float(pixels[y, x, c]) for y in range(height) for x in range(width)) / (height * width)
            for c in range(pixels.shape[2])]
    image_logits = [100.0 * ref_cos(np.array(mean), text[k]) for k in range(classes)]
    image_probs = ref_softmax(image_logits)
    top5 = sorted(range(classes), key=lambda k: (-image_probs[k], k))[:5]
    per_group = []
    for g in range(len(groups)):
        logits = [100.0 * ref_cos(groups[g], text[k]) for k in range(classes)]
        p_all = ref_softmax(logits)
        if rule == "groupvit":
            p_top = ref_softmax([logits[k] if k in top5 else -math.inf for k in range(classes)])
            per_group.append([p_top[k] * p_all[k] for k in range(classes)])
        elif rule == "tcl":
            per_group.append([1.0 / (1.0 + math.exp(-(10.0 * ref_cos(groups[g], text[k]) - 2.5)))
                              for k in range(classes)])
        else:
            per_group.append(p_all)
    image_max = max(max(per_group[assignment[y, x]]) for y in range(height) for x in range(width))
    labels = np.zeros((height, width), dtype=np.int64)
    for y in range(height):
        for x in range(width):
            scores = per_group[assignment[y, x]]
            best = max(scores)
            winner = scores.index(best) + 1
            if rule == "groupvit":
                labels[y, x] = 0 if best < min(value, image_max) else winner
            elif rule == "tcl":
                labels[y, x] = 0 if value >= best else winner  # argmax, background first on ties
            else:
                labels[y, x] = 0 if best < value else winner
    return labels


# ---- the production code on the same input --------------------------------------------------------

def random_case(seed: int, units: int | None):
    """Pixel embeddings (h x w x C), groups (M x C: the pixels themselves, or `units` random unit embeddings with a
    random assignment), class embeddings (K x C); all L2-normalised float32. Each pixel leans towards one class,
    so cosines differ between classes by a few hundredths, as CLIP's do (softmax(100 cos) does not saturate)."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(CLASSES_K, CHANNELS))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    if units is None:
        pixels = text[rng.integers(0, CLASSES_K, (HEIGHT, WIDTH))] + 1.5 * rng.normal(size=(HEIGHT, WIDTH, CHANNELS))
        pixels /= np.linalg.norm(pixels, axis=2, keepdims=True)
        groups, assignment = pixels.reshape(-1, CHANNELS), np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)
    else:
        groups = text[rng.integers(0, CLASSES_K, units)] + 1.5 * rng.normal(size=(units, CHANNELS))
        groups /= np.linalg.norm(groups, axis=1, keepdims=True)
        assignment = rng.integers(0, units, (HEIGHT, WIDTH))
        pixels = groups[assignment] + 0.1 * rng.normal(size=(HEIGHT, WIDTH, CHANNELS))
        pixels /= np.linalg.norm(pixels, axis=2, keepdims=True)
    return pixels.astype(np.float32), groups.astype(np.float32), assignment, text.astype(np.float32)


def identity_prepared(height: int, width: int) -> Prepared:
    """Sizes with output stride 1 and no resize: scores_to_labels then works on the grid itself."""
    return Prepared((height, width), (height, width), (height, width), ((0, height, 0, width),),
                    np.zeros((1, 3, 1, 1), np.float32), np.zeros((3, height, width), np.float32))


def production_inputs(pixels, groups, assignment, text):
    scores = (groups @ text.T)[assignment]  # h x w x K: each pixel takes its unit's cosines
    mean = pixels.reshape(-1, pixels.shape[2]).mean(axis=0)
    return scores.astype(np.float32), (text @ (mean / np.linalg.norm(mean))).astype(np.float32)


def runtime_labels(scores, image_cos, rule, value):
    labels, _ = scores_to_labels(scores, identity_prepared(*scores.shape[:2]), value, output_stride=1, bg_rule=rule,
                                 image_cos=image_cos)
    return labels


def torch_labels(scores, image_cos, rule, value):
    maps = torch.from_numpy(scores).permute(2, 0, 1)
    if rule == "softmax":
        from mgca.inference import labels_from_scores

        return labels_from_scores(maps, value).numpy()
    return torch_background.background_channels(maps, torch.from_numpy(image_cos), rule, value).argmax(0).numpy()


def split_value(best: np.ndarray) -> float:
    """A background value that splits the image far from any score: the middle of the widest gap between
    distinct best scores in their middle half (float32 and float64 then agree on every side)."""
    levels = np.unique(np.asarray(best, dtype=np.float64))
    middle = levels[len(levels) // 4:max(len(levels) * 3 // 4, len(levels) // 4 + 2)]
    widest = int(np.argmax(np.diff(middle)))
    return float(middle[widest:widest + 2].mean())


@pytest.mark.parametrize("units", [None, 7], ids=["pixels", "units"])
@pytest.mark.parametrize("rule", ["groupvit", "tcl", "softmax"])
@pytest.mark.parametrize("seed", [0, 1])
def test_rule_matches_the_slow_float64_reference(rule, units, seed):
    pixels, groups, assignment, text = random_case(seed, units)
    scores, image_cos = production_inputs(pixels, groups, assignment, text)
    if rule == "groupvit":  # each pixel's best score under the rule, only to place the value between two of them
        best = torch_background.groupvit_scores(torch.from_numpy(scores).permute(2, 0, 1).double(),
                                                torch.from_numpy(image_cos)).max(0).values.numpy()
    elif rule == "tcl":
        best = 1 / (1 + np.exp(-(10 * scores.astype(np.float64).max(axis=2) - 2.5)))
    else:
        best = torch.softmax(torch.from_numpy(scores).double() * 100, dim=2).max(2).values.numpy()
    value = split_value(best)
    expected = reference_labels(groups, assignment, pixels, text, rule, value)
    assert (expected == 0).any() and (expected > 0).any() and len(np.unique(expected)) > 2
    np.testing.assert_array_equal(runtime_labels(scores, image_cos, rule, value), expected)
    np.testing.assert_array_equal(torch_labels(scores, image_cos, rule, value), expected)


def test_groupvit_uses_the_image_maximum_when_it_is_below_the_threshold():
    """min(threshold, image max): with a threshold above every score, the image's best cell stays foreground."""
    pixels, groups, assignment, text = random_case(4, None)  # a seed whose best score is unique in float32 too
    scores, image_cos = production_inputs(pixels, groups, assignment, text)
    labels = runtime_labels(scores, image_cos, "groupvit", 1.0)
    assert (labels > 0).sum() == 1  # only the image's best pixel reaches min(1.0, image max)
    np.testing.assert_array_equal(torch_labels(scores, image_cos, "groupvit", 1.0), labels)
    np.testing.assert_array_equal(labels, reference_labels(groups, assignment, pixels, text, "groupvit", 1.0))


def test_groupvit_scores_vanish_outside_the_top_5():
    pixels, groups, assignment, text = random_case(4, 5)
    scores, image_cos = production_inputs(pixels, groups, assignment, text)
    fg = torch_background.groupvit_scores(torch.from_numpy(scores).permute(2, 0, 1), torch.from_numpy(image_cos))
    nonzero = (fg > 0).flatten(1).any(1)
    assert int(nonzero.sum()) == 5 and set(np.flatnonzero(nonzero.numpy())) == set(np.argsort(-image_cos)[:5])


def test_default_background_values():
    assert default_background("groupvit", 0.35) == 0.35 and default_background("softmax", 0.95, pamr=10) == 0.95
    assert default_background("tcl", 0.95) == 0.5 and default_background("tcl", 0.35, pamr=10) == 0.4
    assert default_background("tcl", None) is None and DEFAULT_SETTINGS.bg_rule == "groupvit"


# ---- PyTorch and the runtime on the exported bundle, per rule ---------------------------------------

def torch_best(predictor, image, rule: str) -> np.ndarray:
    """Each grid cell's best score under `rule` (the torch side's maps), to place a background value."""
    _, scores, image_cos = predictor.grid_scores(image)
    if rule == "groupvit":
        return torch_background.groupvit_scores(scores, image_cos).max(0).values.numpy()
    if rule == "tcl":
        return torch_background.tcl_masks(scores).max(0).values.numpy()
    return torch.softmax(scores * 100, 0).max(0).values.numpy()


@pytest.mark.parametrize("pamr", [0, 3], ids=["no-pamr", "pamr"])
@pytest.mark.parametrize("rule", ["groupvit", "tcl", "softmax"])
def test_runtime_labels_equal_pytorch_for_each_rule(bundle, tiny_model, class_embeddings, rule, pamr):
    seg = Segmenter(bundle, backend="onnxruntime", device="cpu", bg_rule=rule, pamr=pamr)
    rng = np.random.default_rng(5)
    probe = blocky_image(rng, 120, 200)
    value = split_value(torch_best(torch_predictor(tiny_model, class_embeddings, bg_rule=rule, pamr=pamr), probe, rule))
    pred = torch_predictor(tiny_model, class_embeddings, bg_rule=rule, pamr=pamr, background_threshold=value)
    background = foreground = 0
    for height, width in SIZES:
        image = noisy(blocky_image(rng, height, width))
        ours = seg.segment(image, background_threshold=value).labels
        theirs = pred.predict(image)
        assert (ours == theirs).mean() >= 0.999, (rule, pamr, (height, width), (ours == theirs).mean())
        background += int((ours == 0).sum())
        foreground += int((ours > 0).sum())
    assert background and foreground  # the value splits the images: the rule decided something


def noisy(image: np.ndarray) -> np.ndarray:
    """A little pixel noise: PAMR's local std is 0 on a perfectly flat patch, where its affinities divide float
    rounding noise by 1e-8 (the reference implementation does the same) and two float paths part ways."""
    noise = np.random.default_rng(image.shape[0]).normal(0, 4, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("overrides", [{"pamr": 2}, {"pamr": 2, "pamr_dilations": (1, 3)}, {"padding": "image"},
                                       {"long_side": 100}], ids=["pamr", "pamr-dilations", "image-padding", "capped"])
def test_runtime_scores_equal_pytorch_for_protocol_settings(bundle, tiny_model, class_embeddings, overrides):
    seg = Segmenter(bundle, backend="onnxruntime", device="cpu", **overrides)
    pred = torch_predictor(tiny_model, class_embeddings, **overrides)
    for height, width in [(120, 90), (40, 330), (17, 400)]:
        image = noisy(blocky_image(np.random.default_rng(height), height, width))
        result = seg.segment(image, return_scores=True)
        np.testing.assert_allclose(result.scores, pred.predict_scores(image).numpy(), atol=2e-4)
        assert (result.labels == pred.predict(image)).mean() >= 0.999


def test_pamr_changes_the_scores_and_describe_reports_the_settings(bundle, segmenter):
    image = blocky_image(np.random.default_rng(6), 100, 140)
    refined = Segmenter(bundle, backend="onnxruntime", device="cpu", pamr=5, bg_rule="tcl")
    assert np.abs(refined.segment(image, return_scores=True).scores
                  - segmenter.segment(image, return_scores=True).scores).max() > 1e-3
    described = refined.describe()
    assert described["pamr"] == 5 and described["bg_rule"] == "tcl" and described["dense_mode"] == "tcl"
    assert described["padding"] == "crop" and described["long_side"] == 2048 and "pamr=5" in repr(refined)
    assert InferenceSettings.from_dict(refined.settings.to_dict()) == refined.settings
