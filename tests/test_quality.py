"""mgca.quality: scoring the synthetic benchmark (embed once, assign units once) and its per-image class areas."""
from __future__ import annotations

import numpy as np

from mgca.inference import InferenceConfig
from mgca.quality import PROTOCOLS, ClassAreas, paired_bootstrap, score_models


def test_units_are_assigned_once_per_image_and_unit_count(tiny_model, tmp_path, monkeypatch):
    """Both protocols share one embedding and one unit assignment per (image, unit count)."""
    import mgca.inference.units as units_module
    from mgca.pairs.synthetic import write_benchmark

    root = write_benchmark(tmp_path / "bench", count=3, image_size=48, seed=7)
    calls = []
    original = units_module.semantic_units

    def counted(embeddings, units):
        calls.append(units)
        return original(embeddings, units)

    monkeypatch.setattr(units_module, "semantic_units", counted)
    settings = InferenceConfig(short_side=32, window=32, stride=16)
    cells = score_models({"tiny": tiny_model}, root, settings, units=(0, 4), progress=False)
    assert calls == [4] * 3  # old code: once per protocol too (6)
    assert set(cells) == {("tiny", p, u) for p in PROTOCOLS for u in (0, 4)}
    assert all(len(cell.intersection) == 3 for cell in cells.values())


def _areas(seed: int, images: int = 12, classes: int = 5) -> ClassAreas:
    rng = np.random.default_rng(seed)
    areas = ClassAreas(classes)
    for _ in range(images):
        label = rng.integers(0, classes, (6, 7))
        label[0, 0] = 255  # ignored
        areas.add(np.where(rng.random((6, 7)) < 0.6, label, rng.integers(0, classes, (6, 7))) % classes, label)
    return areas


def _iou_from_lists(areas: ClassAreas, images=None) -> np.ndarray:
    """IoU straight from the per-image lists, the definition."""
    pick = range(len(areas.intersection)) if images is None else images
    inter = sum(areas.intersection[i] for i in pick).astype(np.float64)
    union = sum(areas.label[i] for i in pick) + sum(areas.prediction[i] for i in pick) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def test_class_areas_stack_once_and_follow_add():
    areas = _areas(0)
    picks = np.random.default_rng(1).integers(0, 12, (5, 12))
    for pick in [None, *picks]:
        np.testing.assert_array_equal(areas.iou(pick), _iou_from_lists(areas, pick))
    stacked = areas.stacked()
    assert areas.stacked() is stacked  # bootstrap draws reuse one stack
    areas.add(np.zeros((3, 3), np.int64), np.full((3, 3), 4))
    assert areas.stacked() is not stacked and areas.stacked()[0].shape == (13, 5)
    np.testing.assert_array_equal(areas.iou(), _iou_from_lists(areas))


def test_paired_bootstrap_is_unchanged_by_the_stacking():
    base, other = _areas(2), _areas(3)
    low, high = paired_bootstrap(base, other, samples=200, seed=4)
    rng = np.random.default_rng(4)
    draws = [np.nanmean(_iou_from_lists(other, pick)) - np.nanmean(_iou_from_lists(base, pick))
             for pick in rng.integers(0, 12, (200, 12))]
    tail = 100 * (1 - 0.95) / 2  # as paired_bootstrap computes it (2.4999999999999982)
    assert (low, high) == tuple(float(v) for v in np.nanpercentile(draws, [tail, 100 - tail]))
    assert low < high
