"""The moving miniature (mgca.pairs.synthetic_video), the clip readers (mgca.evalsets.sequences) and
`mgca-eval --dataset synthetic-video / folder-video`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mgca.cli.eval import main as eval_main
from mgca.evalsets import DatasetError
from mgca.evalsets.folder import FolderSource
from mgca.evalsets.sequences import open_sequence_folder, open_sequences
from mgca.pairs.synthetic import CLASS_NAMES, COLORS
from mgca.pairs.synthetic_video import SyntheticSequences, write_sequences

from .support import EVAL_SMALL

SMALL = dict(count=3, frames=6, image_size=48)


def test_clips_are_deterministic_and_seeded():
    a, b = SyntheticSequences(**SMALL).render(1), SyntheticSequences(**SMALL).render(1)
    for x, y in zip(a.frames + a.masks, b.frames + b.masks, strict=True):
        np.testing.assert_array_equal(x, y)
    other = SyntheticSequences(**SMALL, seed=7).render(1)
    assert not np.array_equal(a.frames[0], other.frames[0])
    assert len(a.frames) == len(a.masks) == 6 and a.frames[0].shape == (48, 48, 3) and a.masks[0].dtype == np.uint8


def test_masks_match_the_pixels_and_things_move():
    """Without sensor noise, backdrop pixels are the clip's one static backdrop and object pixels carry their class's
    colour (+-15 shade); the noise changes pixels, never masks; the shapes move."""
    clean = SyntheticSequences(**SMALL, noise=0.0)
    noisy = SyntheticSequences(**SMALL, noise=4.0)
    for index in range(clean.count):
        clip, loud = clean.render(index), noisy.render(index)
        backdrop_value = int(np.bincount(clip.masks[0].ravel()).argmax())
        assert CLASS_NAMES[backdrop_value].endswith("background")
        for t, (frame, mask) in enumerate(zip(clip.frames, clip.masks, strict=True)):
            both = (mask == backdrop_value) & (clip.masks[0] == backdrop_value)
            np.testing.assert_array_equal(frame[both], clip.frames[0][both])
            for value in np.unique(mask[mask != backdrop_value]):
                colour = np.array(COLORS[CLASS_NAMES[value].split()[0]])
                assert np.abs(frame[mask == value].astype(int) - colour).max() <= 15, (index, t, value)
            np.testing.assert_array_equal(loud.masks[t], mask)
            diff = np.abs(loud.frames[t].astype(int) - frame.astype(int))
            assert 2.0 < diff.mean() < 5.0  # Gaussian noise of std 4: mean absolute 3.2
        assert any(not np.array_equal(clip.masks[0], m) for m in clip.masks[1:])


def test_written_folder_reads_back(tmp_path):
    sequences = SyntheticSequences(**SMALL)
    root = write_sequences(tmp_path / "clips", sequences)
    stamp = (root / "sequences.json").stat().st_mtime_ns
    assert write_sequences(root, sequences) == root and (root / "sequences.json").stat().st_mtime_ns == stamp
    dataset = open_sequences("synthetic-video", root)
    assert len(dataset) == 3 and dataset.frames == 18 and dataset.spec.num_classes == 40
    clip = sequences.render(2)
    for t, sample in enumerate(dataset.clips[2]):
        np.testing.assert_array_equal(sample.image, clip.frames[t])
        expected = clip.masks[t].astype(np.int64) - 4  # the backdrops (0..3) are ignored, objects shift down
        expected[clip.masks[t] < 4] = 255
        np.testing.assert_array_equal(sample.label, expected)
    with pytest.raises(DatasetError, match="no clip folders"):
        open_sequences("synthetic-video", tmp_path)
    with pytest.raises(DatasetError, match="not clips"):
        open_sequences("synthetic", root)


def test_own_clips_folder(tmp_path):
    (tmp_path / "classes.txt").write_text("sky\nroad\n")
    for clip in ("a", "b"):
        for sub in ("images", "masks"):
            (tmp_path / "clips" / clip / sub).mkdir(parents=True)
        for t in range(3):
            folder = tmp_path / "clips" / clip
            Image.fromarray(np.full((8, 8, 3), 40 * t, np.uint8)).save(folder / "images" / f"{t}.png")
            Image.fromarray(np.full((8, 8), t % 2, np.uint8)).save(folder / "masks" / f"{t}.png")
    dataset = open_sequence_folder(FolderSource(tmp_path / "classes.txt", tmp_path / "clips"))
    assert dataset.names == ["a", "b"] and dataset.frames == 6 and dataset.spec.classes == ("sky", "road")
    assert [int(s.label[0, 0]) for s in dataset.clips[1]] == [0, 1, 0]
    (tmp_path / "clips" / "b" / "masks" / "2.png").unlink()
    with pytest.raises(DatasetError, match="frame .*2.png of clip b has no file"):
        open_sequence_folder(FolderSource(tmp_path / "classes.txt", tmp_path / "clips"))


@pytest.mark.parametrize("engine", [False, True], ids=["torch", "engine"])
def test_eval_cli_on_clips(tmp_path, tiny_checkpoint, bundle, engine, capsys):
    root = write_sequences(tmp_path / "clips", SyntheticSequences(count=2, frames=5, image_size=48))
    out = tmp_path / "video.json"
    model = ["--engine", str(bundle), "--text-cache", str(_synthetic_cache(tmp_path, tiny_checkpoint))] if engine \
        else ["--checkpoint", str(tiny_checkpoint), *EVAL_SMALL]
    if engine:
        model += ["--no-progress", "--device", "cpu", "--backend", "onnxruntime"]
    assert eval_main(["--dataset", "synthetic-video", "--root", str(root), *model, "--temporal", "ema",
                      "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    row = record["rows"][0]
    assert row["temporal"] == "ema" and row["sequences"] == 2 and row["frames"] == 10
    for name in ("miou", "vc8", "flicker", "tc"):
        assert row[name] is None or 0.0 <= row[name] <= 1.0
    assert row["vc8"] is None and row["vc16"] is None  # 5 frames: no run of 8
    assert 0.0 <= row["flicker"] <= 1.0 and 0.0 <= row["tc"] <= 1.0
    assert "temporal ema" in capsys.readouterr().out


def _synthetic_cache(tmp_path, checkpoint):
    from mgca.evalsets.specs import SYNTHETIC_OBJECTS

    from .support import text_cache_with_cli

    return text_cache_with_cli(checkpoint, tmp_path / "synthetic_text.npz", list(SYNTHETIC_OBJECTS))
