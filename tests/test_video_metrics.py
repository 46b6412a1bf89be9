"""runtime.video_metrics on hand-made sequences whose answers are worked out by hand in the comments."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.video_metrics import (
    VideoScore,
    consistent_share,
    optical_flow,
    pair_miou,
    temporal_consistency,
    warp_back,
)

# Clip 1: three frames of four pixels (a 2 x 2 image, row-major); 255 = ignored.
GT = [[0, 0, 1, 255], [0, 0, 1, 1], [0, 1, 1, 1]]
PRED = [[0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 2, 0]]
# Clip 2: two frames, every pixel class 0, predicted 1 in both.
GT2, PRED2 = [[0, 0, 0, 0]] * 2, [[1, 1, 1, 1]] * 2


def image(values) -> np.ndarray:
    return np.array(values, dtype=np.int64).reshape(2, 2)


def scored(vc_lengths=(2, 3)) -> VideoScore:
    score = VideoScore(3, vc_lengths=vc_lengths)
    for clip_gt, clip_pred in ((GT, PRED), (GT2, PRED2)):
        score.start()
        for gt, pred in zip(clip_gt, clip_pred, strict=True):
            score.update(image(pred), image(gt))
    return score


def test_flicker_by_hand():
    # clip 1, t0 -> t1: ground truth stays at p0, p1, p2 (p3 was ignored), the prediction changes at p1: 1 of 3;
    # t1 -> t2: it stays at p0, p2, p3, the prediction changes at p2: 1 of 3. Clip 2: 0 of 4. In all 2 of 10.
    assert scored().compute().flicker == pytest.approx(2 / 10)


def test_video_consistency_by_hand():
    # VC2, clip 1: runs (t0, t1): label constant at p0 p1 p2, prediction too at p0 p2: 2/3; (t1, t2): p0 p2 p3 and
    # p0 p3: 2/3. Clip 2: 4/4. Mean over clips: (2/3 + 1) / 2.
    # VC3, clip 1 only (clip 2 is too short): label constant at p0, p2; prediction at p0: 1/2.
    metrics = scored()
    assert metrics.vc_lengths == (2, 3)
    done = metrics.compute()
    assert metrics.vc_clips[2] == pytest.approx([2 / 3, 1.0])
    assert metrics.vc_clips[3] == pytest.approx([0.5])
    assert done.sequences == 2 and done.frames == 5
    assert consistent_share([image(p) for p in PRED], [image(g) for g in GT]) == (1, 2)


def test_vc8_and_vc16_defaults():
    # 8 frames, label constant; pixel 3's prediction flips at frame 4: VC8 = 3/4 over the one run; no run of 16.
    score = VideoScore(2)
    for t in range(8):
        score.update(image([0, 0, 1, 1 if t < 4 else 0]), image([0, 0, 1, 1]))
    metrics = score.compute()
    assert metrics.vc8 == pytest.approx(0.75)
    assert math.isnan(metrics.vc16)


def test_per_frame_miou_by_hand():
    # Over all 20 pixels: class 0 TP 4, label 13, predicted 7 -> 4/16; class 1 TP 2, label 6, predicted 11 -> 2/15;
    # class 2 TP 0, predicted once -> 0.
    assert scored().compute().miou == pytest.approx((4 / 16 + 2 / 15 + 0) / 3)


def test_temporal_consistency_by_hand():
    # The flow moves every pixel one column right: pixel (x, y) of t takes the label at (x + 1, y) of t+1, and the
    # last column leaves the frame. Classes over the 9 pixels left: 0: 4 vs 3, 3 shared -> 3/4; 1: 2 vs 3, 2 shared
    # -> 2/3; 2: 3 vs 3 -> 1.
    now = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    then = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    flow = np.zeros((3, 4, 2), dtype=np.float32)
    flow[..., 0] = 1.0
    warped, inside = warp_back(then, flow)
    assert inside[:, 3].sum() == 0 and inside[:, :3].all()
    np.testing.assert_array_equal(warped[:, :3], [[0, 0, 1], [0, 1, 1], [2, 2, 2]])
    assert temporal_consistency(now, then, flow) == pytest.approx((3 / 4 + 2 / 3 + 1) / 3)
    assert pair_miou(now, now) == 1.0


def test_optical_flow_direction_and_labelless_flicker():
    # A texture moved 3 px right: DIS flow from t to t+1 is about (+3, 0), and a label map moved with it warps back
    # onto itself (TC 1 inside the frame).
    rng = np.random.default_rng(0)
    texture = np.repeat(np.repeat(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), 4, 0), 4, 1)
    frame, moved = texture[:, 8:88], texture[:, 5:85]
    flow = optical_flow(frame, moved)
    assert np.median(flow[20:-20, 20:-20, 0]) == pytest.approx(3.0, abs=0.25)
    assert abs(np.median(flow[20:-20, 20:-20, 1])) < 0.25
    labels = (texture[..., 0] > 127).astype(np.int64)
    score = VideoScore()
    score.update(labels[:, 8:88])
    score.update(labels[:, 5:85], flow=flow)
    metrics = score.compute()
    assert metrics.tc > 0.9 and not metrics.labelled and math.isnan(metrics.miou)
    # without labels, flicker is the share of pixels whose label changed: here the shift's edges
    expected = (labels[:, 8:88] != labels[:, 5:85]).mean()
    assert metrics.flicker == pytest.approx(expected)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="differ in shape"):
        VideoScore(2).update(np.zeros((2, 2), dtype=np.int64), np.zeros((2, 3), dtype=np.int64))
