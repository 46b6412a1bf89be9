"""The `temporal` setting: runtime.temporal and its PyTorch twin give the same labels frame by frame, "off" is
segment(), and the gated moving average and the carried units do what the contract says (checked by hand)."""
from __future__ import annotations

import numpy as np
import pytest

from runtime import Segmenter, SettingsError, TemporalState
from runtime.contract import InferenceSettings, meta_point_indices
from runtime.temporal import carried_points, cell_change, grow, smooth_scores

from .support import blocky_image, torch_predictor


def moving_frames(count: int, height: int = 72, width: int = 88, seed: int = 0) -> list[np.ndarray]:
    """A blocky backdrop with a blocky patch sliding 3 px a frame, plus per-frame noise: what a stream looks like."""
    rng = np.random.default_rng(seed)
    backdrop = blocky_image(rng, height, width).astype(np.int16)
    patch = blocky_image(rng, 24, 24, block=6).astype(np.int16)
    frames = []
    for t in range(count):
        frame = backdrop.copy()
        y, x = 10 + t, 5 + 3 * t
        frame[y:y + 24, x:x + 24] = patch
        frame += rng.integers(-3, 4, frame.shape, dtype=np.int16)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


@pytest.mark.parametrize("mode", ["ema", "units", "both"])
def test_runtime_and_pytorch_temporal_labels_are_equal(bundle, tiny_model, class_embeddings, mode):
    seg = Segmenter(bundle, backend="onnxruntime", device="cpu", temporal=mode)
    pred = torch_predictor(tiny_model, class_embeddings, temporal=mode)
    ours, theirs = seg.temporal_state(), pred.temporal_state()
    assert ours.mode == theirs.mode == mode
    changed = 0
    for frame in moving_frames(6):
        labels = seg.decode(seg.encode(frame), state=ours).labels
        reference = pred.predict(frame, state=theirs)
        assert (labels == reference).mean() >= 0.999, mode
        changed += int((labels != seg.segment(frame).labels).sum())
    assert ours.frames == theirs.frames == 6
    assert changed > 0  # the option did something on these frames, so agreeing is not agreeing on segment()


def test_off_and_no_state_are_segment(segmenter):
    state = segmenter.temporal_state("off")
    for frame in moving_frames(3, seed=1):
        encoded = segmenter.encode(frame)
        expected = segmenter.segment(frame).labels
        np.testing.assert_array_equal(segmenter.decode(encoded, state=state).labels, expected)
        np.testing.assert_array_equal(segmenter.decode(encoded).labels, expected)
    assert state.frames == 0  # off keeps no memory


def test_first_frame_is_the_frame_alone(segmenter):
    frame = moving_frames(1, seed=2)[0]
    for mode in ("ema", "units", "both"):
        state = segmenter.temporal_state(mode)
        np.testing.assert_array_equal(segmenter.decode(segmenter.encode(frame), state=state).labels,
                                      segmenter.segment(frame).labels)


def test_state_resets_when_the_size_or_classes_change(segmenter):
    state = segmenter.temporal_state("both")
    frames = moving_frames(2, seed=3)
    segmenter.decode(segmenter.encode(frames[0]), state=state)
    other = blocky_image(np.random.default_rng(4), 64, 50)
    # another size: the memory is dropped, so the frame is labelled alone
    np.testing.assert_array_equal(segmenter.decode(segmenter.encode(other), state=state).labels,
                                  segmenter.segment(other).labels)
    assert state.frames == 1
    subset = ["sky", "cat", "car"]
    np.testing.assert_array_equal(segmenter.decode(segmenter.encode(other), subset, state=state).labels,
                                  segmenter.segment(other, subset).labels)


def test_smoothing_by_hand():
    """Two 2 x 6-cell frames (output stride 2): the left column's pixels change (that cell and, grown by one, its
    neighbours take the new scores), the rest blend half and half."""
    state = TemporalState("ema", alpha=0.5, gate=0.1, grow=1)
    std = np.ones(3, dtype=np.float32)
    still = np.zeros((3, 4, 12), dtype=np.float32)  # 2 x 6 cells of 2 x 2 px
    first = np.full((2, 6, 1), 1.0, dtype=np.float32)
    out = smooth_scores(first, still, state, 2, std)
    np.testing.assert_array_equal(out, first)  # nothing to blend with yet
    moved = still.copy()
    moved[:, :, 0:2] = 0.5  # the first column of cells changes by 0.5 per pixel; the others by 0
    second = np.full((2, 6, 1), 3.0, dtype=np.float32)
    out = smooth_scores(second, moved, state, 2, std)
    expected = np.full((2, 6), 2.0, dtype=np.float32)  # 0.5 x 3 + 0.5 x 1
    expected[:, :2] = 3.0  # the changed column and its grown neighbour
    np.testing.assert_array_equal(out[:, :, 0], expected)
    np.testing.assert_array_equal(state.scores, out)  # the average is recursive: the next frame blends with this
    still_again = moved.copy()
    third = np.full((2, 6, 1), 0.0, dtype=np.float32)
    ungrown = TemporalState("ema", alpha=0.25, gate=0.1, grow=0, image=moved, scores=out.copy())
    moved_again = still_again.copy()
    moved_again[:, :, 0:2] = 0.0  # only the first column changes back
    out = smooth_scores(third, moved_again, ungrown, 2, std)
    expected_third = 0.75 * expected  # 0.25 x 0 + 0.75 x the previous output where nothing changed
    expected_third[:, 0] = 0.0  # the changed column alone, not grown
    np.testing.assert_allclose(out[:, :, 0], expected_third, rtol=1e-6)


def test_cell_change_by_hand():
    previous = np.zeros((3, 5, 4), dtype=np.float32)
    image = previous.copy()
    image[0, 0, 0] = 0.8  # one pixel of one channel in the top-left cell
    image[:, 4, :] = 0.2  # the last row, alone in its cells (5 rows, output stride 2: the grid has 3 rows)
    std = np.array([0.5, 1.0, 1.0], dtype=np.float32)
    change = cell_change(image, previous, (3, 2), 2, std)
    last = (0.2 * 0.5 + 0.2 + 0.2) / 3  # channels weighted by their std, averaged
    np.testing.assert_allclose(change, [[0.8 * 0.5 / 3 / 4, 0], [0, 0], [last, last]], rtol=1e-6)
    mask = np.zeros((3, 4), dtype=bool)
    mask[0, 0] = True
    np.testing.assert_array_equal(grow(mask), [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(grow(mask, 2), [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0]])
    np.testing.assert_array_equal(grow(mask, 0), mask)


def test_carried_points_are_the_previous_units():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    grid = x[meta_point_indices(4, 5, 4)]
    np.testing.assert_array_equal(carried_points(x, 4, 5, 4, None), grid)
    previous = np.eye(4, dtype=np.float32)
    previous[2] = 0.0  # an emptied unit takes its grid pixel
    points = carried_points(x, 4, 5, 4, previous)
    np.testing.assert_array_equal(points[[0, 1, 3]], previous[[0, 1, 3]])
    np.testing.assert_array_equal(points[2], grid[2])


def test_setting_is_declared_and_checked(segmenter):
    assert InferenceSettings().temporal == "ema"  # measured: VC8 +15 points at no mIoU cost (docs/results.md)
    with pytest.raises(SettingsError, match="temporal"):
        InferenceSettings(temporal="kalman").validate(8)
    with pytest.raises(SettingsError, match="unit_scope"):
        InferenceSettings(temporal="units", unit_scope="window").validate(8)
    with pytest.raises(SettingsError, match="temporal"):
        segmenter.temporal_state("blur")
