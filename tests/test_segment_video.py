"""`mgca-segment` on videos (runtime.video_job): the outputs and their formats, labels equal to Segmenter.segment
frame by frame, resuming after Ctrl-C and after kill -9 without redoing frames (the overlay video still plays), a
folder of videos, outputs that never leave --out or overwrite an input, and each bad input as one line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import mgca.cli.segment as segment_cli
from runtime.video_job import VideoOutput

from .support import SHARED_DATA, one_line_error, subprocess_env
from .test_video_sources import SilentServer, moving_frames, write_video

CLASSES = "cat,dog,road"


def segment(inputs: list[str], out: Path, bundle: Path, *extra: str) -> int:
    """mgca-segment on videos with per-frame labels (--temporal off), so they can be compared with segment()'s and
    an interrupted run's with an uninterrupted one's (a resumed video restarts the temporal memory)."""
    return segment_cli.main([*inputs, "--classes", CLASSES, "--engine", str(bundle), "--out", str(out),
                             "--no-progress", "--temporal", "off", *extra])


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while capture.isOpened():
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def frame_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "frames.jsonl").read_text().splitlines()]


def label_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "labels").glob("*.png"))}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 lossless frames: what the run decodes is exactly `moving_frames`."""
    return write_video(tmp_path_factory.mktemp("clips") / "clip.mkv", moving_frames(12, 96, 128))


def test_video_outputs_and_labels_equal_segment(clip, bundle, segmenter, tmp_path, capsys):
    out = tmp_path / "out"
    assert segment([str(clip)], out, bundle) == 0
    assert "1 videos segmented, 0 already done, 0 failed" in capsys.readouterr().out
    folder = out / "clip"
    frames = moving_frames(12, 96, 128)
    overlay = read_video(folder / "overlay.avi")
    assert len(overlay) == 12 and overlay[0].shape == (96, 128, 3)
    lines = frame_lines(folder)
    assert [line["index"] for line in lines] == list(range(12))
    assert [line["timestamp"] for line in lines] == pytest.approx([i / 10 for i in range(12)])
    for index, (frame, line) in enumerate(zip(frames, lines, strict=True)):
        expected = segmenter.segment(frame, CLASSES.split(",")).labels
        stored = np.asarray(Image.open(folder / "labels" / f"{index:06d}.png"))
        assert stored.dtype == np.uint8 and np.array_equal(stored, expected)
        areas = np.bincount(expected.ravel(), minlength=3) / expected.size
        assert [line["areas"][name] for name in CLASSES.split(",")] == pytest.approx(areas, abs=1e-6)
        assert line["latency"] >= 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["frames"] == 12 and summary["dropped"] == 0 and summary["complete"]
    assert summary["latency_p50"] <= summary["latency_p95"] and summary["fps"] > 0
    assert summary["labels"] == {"folder": "labels", "dtype": "uint8", "unassigned": 255,
                                 "classes": CLASSES.split(",")}
    assert (summary["width"], summary["height"]) == (128, 96)
    assert not list(folder.glob("overlay-part*")) and not list(out.rglob("*.tmp"))
    capsys.readouterr()
    assert segment([str(clip)], out, bundle) == 0  # nothing left to do
    assert "0 videos segmented, 1 already done" in capsys.readouterr().out
    # another setting in the same folder is refused (the output record), --overwrite redoes it
    assert segment([str(clip)], out, bundle, "--background-threshold", "0.5") == 2
    assert "other settings" in one_line_error(2, capsys.readouterr().err)


def test_background_is_the_unassigned_value(clip, bundle, segmenter, tmp_path):
    out = tmp_path / "out"
    assert segment([str(clip)], out, bundle, "--background-threshold", "0.9") == 0
    frame = moving_frames(1, 96, 128)[0]
    expected = segmenter.segment(frame, CLASSES.split(","), background_threshold=0.9).labels  # 0 = background
    stored = np.asarray(Image.open(out / "clip" / "labels" / "000000.png"))
    assert (expected == 0).any(), "the test needs some background"
    assert np.array_equal(stored == 255, expected == 0)
    assert np.array_equal(stored[expected > 0], expected[expected > 0] - 1)
    assert set(frame_lines(out / "clip")[0]["areas"]) == {"background", *CLASSES.split(",")}


def test_label_values_widen_from_255_classes():
    narrow = VideoOutput(Path("."), tuple(f"c{i}" for i in range(254)), background=True)
    wide = VideoOutput(Path("."), tuple(f"c{i}" for i in range(255)), background=True)
    labels = np.array([[0, 1, 254]])
    assert narrow.dtype == np.uint8 and narrow.to_png(labels).tolist() == [[255, 0, 253]]
    assert wide.dtype == np.uint16 and wide.to_png(np.array([[0, 255]])).tolist() == [[65535, 254]]
    assert np.array_equal(wide.from_png(wide.to_png(labels)), labels)


def test_ctrl_c_keeps_a_playable_video_and_resumes(clip, bundle, tmp_path, monkeypatch, capsys):
    import runtime.video_job as video_job
    from runtime.segmenter import Segmenter

    whole = tmp_path / "whole"
    assert segment([str(clip)], whole, bundle) == 0
    store, stored = video_job._store, []

    def interrupted(*args, **kwargs):  # Ctrl-C as the 6th frame's outputs are about to be written
        stored.append(1)
        if len(stored) == 6:
            raise KeyboardInterrupt
        return store(*args, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(video_job, "_store", interrupted)
    assert segment([str(clip)], out, bundle) == 130
    monkeypatch.setattr(video_job, "_store", store)
    folder = out / "clip"
    assert len(read_video(folder / "overlay-part0.avi")) == 5  # closed: every frame done plays
    assert len(frame_lines(folder)) == 5 and len(label_files(folder)) == 5
    assert not json.loads((folder / "summary.json").read_text())["complete"]
    done = label_files(folder)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (folder / "labels").glob("*.png")}

    original, calls = Segmenter.encode, []
    monkeypatch.setattr(Segmenter, "encode", lambda self, *a, **k: (calls.append(1), original(self, *a, **k))[1])
    capsys.readouterr()
    assert segment([str(clip)], out, bundle) == 0
    assert len(calls) == 7  # only the frames not done go through the engine
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "labels").glob("*.png") if p.name in done} == mtimes
    assert label_files(folder) == label_files(whole / "clip")
    assert len(read_video(folder / "overlay.avi")) == 12 and not list(folder.glob("overlay-part*"))
    assert [line["index"] for line in frame_lines(folder)] == list(range(12))


def noisy_frames(count: int, height: int = 240, width: int = 320) -> list[np.ndarray]:
    """Frames of noise: each overlay frame's JPEG outweighs the video writer's 64 KB buffer."""
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def test_kill_9_leaves_a_playable_video_and_a_record_that_resumes(bundle, tmp_path):
    """A real kill -9 of the CLI mid-video (each frame slowed to 50 ms so the kill lands mid-way). The overlay video
    plays every frame done but those in the writer's 64 KB buffer (here at most 2)."""
    clip = write_video(tmp_path / "long.mkv", noisy_frames(80), fourcc="MJPG")
    out = tmp_path / "out"
    slow = ("import sys, time; import runtime.segmenter as s; f = s.Segmenter.encode; "
            "s.Segmenter.encode = lambda self, *a, **k: (time.sleep(0.05), f(self, *a, **k))[1]; "
            "from mgca.cli.segment import main; sys.exit(main(sys.argv[1:]))")
    command = [sys.executable, "-c", slow, str(clip), "--classes", CLASSES, "--engine", str(bundle), "--out",
               str(out), "--no-progress"]
    child = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    folder, lines = out / "long", []
    for _ in range(1200):  # until 10 frames are done (at most 60 s); no timing is asserted
        if (folder / "frames.jsonl").is_file():
            lines = (folder / "frames.jsonl").read_text().splitlines()
        if len(lines) >= 10 or child.poll() is not None:
            break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()
    done = frame_lines(folder)
    assert 10 <= len(done) < 80
    played = read_video(folder / "overlay-part0.avi")  # no index written: still opens and plays in order
    assert len(done) - 2 <= len(played) <= len(done) and played[0].shape == (240, 320, 3)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (folder / "labels").glob("*.png")}
    assert len(before) >= len(done)

    rerun = subprocess.run(command[:1] + ["-m", "mgca.cli.segment"] + command[3:], env=subprocess_env(),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = frame_lines(folder)
    assert [line["index"] for line in after] == list(range(80))
    assert after[:len(done)] == done  # the same lines, latencies included: those frames were not labelled again
    for line in done:
        name = f"{line['index']:06d}.png"
        assert (folder / "labels" / name).stat().st_mtime_ns == before[name][1]
    assert len(read_video(folder / "overlay.avi")) == 80 and not list(folder.glob("overlay-part*"))
    assert not list(out.rglob("*.tmp"))


def test_a_folder_of_videos_with_a_broken_one(bundle, tmp_path, capsys):
    videos = tmp_path / "videos"
    (videos / "day" / "a").mkdir(parents=True)
    write_video(videos / "day" / "a" / "one.avi", moving_frames(4), fourcc="MJPG")
    write_video(videos / "two.mkv", moving_frames(3, 40, 50))
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 then nothing")
    (videos / "notes.txt").write_text("not a video")
    out = videos / "out"  # inside the input folder: never read back as an input
    code = segment([str(videos)], out, bundle)
    err = one_line_error(code, capsys.readouterr().err, expected_code=1)
    assert "1 of 3 videos could not be segmented" in err and "broken.mp4" in err
    assert len(frame_lines(out / "day" / "a" / "one")) == 4 and len(frame_lines(out / "two")) == 3
    assert len(read_video(out / "two" / "overlay.avi")) == 3
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 4 and any("broken.mp4" in row and ",error," in row for row in rows)
    capsys.readouterr()
    assert segment([str(videos)], out, bundle) == 1  # only the broken one again
    assert "0 videos segmented, 2 already done, 1 failed" in capsys.readouterr().out


def test_outputs_never_leave_out_nor_overwrite_the_input(clip, bundle, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip").symlink_to(outside, target_is_directory=True)  # a link inside --out that leads out
    code = segment([str(clip)], out, bundle)
    assert "outside --out" in one_line_error(code, capsys.readouterr().err)
    assert not list(outside.iterdir())
    code = segment([str(clip)], clip, bundle)  # --out is the input video
    assert "is the input" in one_line_error(code, capsys.readouterr().err)
    assert clip.stat().st_size > 0 and len(read_video(clip)) == 12
    link = tmp_path / "link-out"
    link.mkdir()
    (link / "clip").mkdir()
    (link / "clip" / "overlay-part0.avi").symlink_to(clip)  # an output name that is the input
    code = segment([str(clip)], link, bundle)
    assert "overwritten" in one_line_error(code, capsys.readouterr().err)
    assert len(read_video(clip)) == 12


def test_bad_video_inputs_are_one_line(bundle, tmp_path, capsys):
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    code = segment([str(damaged)], tmp_path / "o1", bundle)
    assert "damaged.avi cannot be opened as a video" in one_line_error(code, capsys.readouterr().err, 1)
    code = segment_cli.main(["--camera", "97", "--classes", CLASSES, "--engine", str(bundle), "--out",
                             str(tmp_path / "o2"), "--no-progress"])
    assert "camera 97 does not exist" in one_line_error(code, capsys.readouterr().err, 1)
    server = SilentServer()
    try:
        code = segment([f"rtsp://127.0.0.1:{server.port}/live"], tmp_path / "o3", bundle, "--connect-timeout",
                       "0.3", "--retries", "1")
    finally:
        server.close()
    assert "could not be opened" in one_line_error(code, capsys.readouterr().err, 1)
    assert server.accepted == 2
    code = segment_cli.main(["--camera", "0", "--show", "--classes", CLASSES, "--engine", str(bundle), "--out",
                             str(tmp_path / "o4")])
    assert "--show needs" in one_line_error(code, capsys.readouterr().err)
    frames = tmp_path / "mixed"
    frames.mkdir()
    write_video(frames / "a.mkv", moving_frames(2))
    Image.fromarray(moving_frames(1)[0]).save(frames / "b.png")
    code = segment([str(frames)], tmp_path / "o5", bundle)
    assert "both images and videos" in one_line_error(code, capsys.readouterr().err)


def test_a_truncated_video_keeps_the_frames_before_the_cut(bundle, tmp_path, capsys):
    data = write_video(tmp_path / "whole.mkv", moving_frames(20, 96, 128), fourcc="MJPG").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[:len(data) // 2])
    out = tmp_path / "out"
    code = segment([str(cut)], out, bundle)
    assert "truncated" in one_line_error(code, capsys.readouterr().err, 1)
    lines = frame_lines(out / "cut")
    assert 0 < len(lines) < 20 and [line["index"] for line in lines] == list(range(len(lines)))
    assert len(read_video(out / "cut" / "overlay-part0.avi")) == len(lines)  # closed, not claimed complete
    assert not json.loads((out / "cut" / "summary.json").read_text())["complete"]
    assert "cut.mkv,cut,error," in (out / "summary.csv").read_text()


def test_a_stream_url_that_stalls_keeps_the_frames_labelled(bundle, tmp_path, capsys):
    """A live source (policy latest): an HTTP MJPEG camera that sends 6 frames, then falls silent."""
    from .test_video_sources import mjpeg_greeting

    server = SilentServer(mjpeg_greeting(moving_frames(6, 96, 128)))
    out = tmp_path / "out"
    try:
        code = segment([f"http://127.0.0.1:{server.port}/cam.mjpg"], out, bundle, "--connect-timeout", "2",
                       "--retries", "0")  # 2 s: opening probes the stream's first frames, slow on a loaded machine
    finally:
        server.close()
    assert "stopped sending frames" in one_line_error(code, capsys.readouterr().err, 1)
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    assert folder.name.startswith("127.0.0.1_cam.mjpg-")
    lines = frame_lines(folder)
    assert 1 <= len(lines) <= 6 and [line["index"] for line in lines] == sorted(line["index"] for line in lines)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["frames"] == len(lines) and summary["dropped"] == lines[-1]["index"] + 1 - len(lines)
    assert len(read_video(folder / "overlay.avi")) == len(lines) and not list(folder.glob("overlay-part*"))


def test_checkpoint_path_segments_a_video(clip, tiny_checkpoint, tmp_path, capsys):
    """The PyTorch predictor (--checkpoint) writes the same outputs."""
    out = tmp_path / "out"
    code = segment_cli.main([str(clip), "--classes", CLASSES, "--checkpoint", str(tiny_checkpoint), "--out",
                             str(out), "--no-progress", "--short-side", "96", "--window", "64", "--stride", "32",
                             "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert len(frame_lines(out / "clip")) == 12 and len(read_video(out / "clip" / "overlay.avi")) == 12


@pytest.mark.skipif(not (SHARED_DATA / "video" / "tree.avi").is_file(),
                    reason="../shared/data/video/tree.avi (real footage) is not beside this checkout")
def test_real_footage(bundle, tmp_path):
    out = tmp_path / "out"
    assert segment([str(SHARED_DATA / "video" / "tree.avi")], out, bundle) == 0
    summary = json.loads((out / "tree" / "summary.json").read_text())
    assert summary["frames"] == 68 and summary["complete"] and (summary["width"], summary["height"]) == (320, 240)
    assert len(read_video(out / "tree" / "overlay.avi")) == 68


def test_ray_runs_one_task_per_video_with_the_same_outputs(bundle, tmp_path):
    """(No capsys: Ray Data sets its log handler up once per process, on the stream of the test that first runs it,
    and a capsys stream is closed after its test, which would garble a later test's stderr.)"""
    ray = pytest.importorskip("ray", reason="--ray needs Ray Data (the mgca[ray] extra)")
    pytest.importorskip("ray.data", reason="--ray needs Ray Data (the mgca[ray] extra)")
    videos = tmp_path / "videos"
    videos.mkdir()
    for index in range(3):
        write_video(videos / f"v{index}.mkv", moving_frames(3 + index, 48, 64))
    single, distributed = tmp_path / "single", tmp_path / "ray"
    assert segment([str(videos)], single, bundle) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": subprocess_env()["PYTHONPATH"]}})
    try:
        assert segment([str(videos)], distributed, bundle, "--ray", "--actors", "2") == 0
    finally:
        ray.shutdown()
    rows = (distributed / "summary.csv").read_text().splitlines()
    assert len(rows) == 4 and all(",ok,," in row for row in rows[1:])
    for index in range(3):
        assert label_files(distributed / f"v{index}") == label_files(single / f"v{index}")
        assert len(read_video(distributed / f"v{index}" / "overlay.avi")) == 3 + index


def test_a_second_video_run_on_the_same_out_is_refused(tmp_path):
    """One run per --out for videos too: the second (here: a second lock on the folder, which flock refuses like a
    second process would) gets one line and touches nothing."""
    from runtime.errors import OutputPathError
    from runtime.output_record import output_lock
    from runtime.video_job import run_videos

    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out), pytest.raises(OutputPathError, match="in use by another run"):
        run_videos([], labeller=None, output=VideoOutput(out, ("a",)))
    assert sorted(p.name for p in out.iterdir()) == [".mgca-output.lock"]


def test_video_labels_carry_the_bundles_temporal_memory(clip, bundle, segmenter, tmp_path):
    """With the contract's default (temporal ema) a video's labels are decode's with one state carried through its
    frames in order, which differ from per-frame labels somewhere on this moving clip."""
    out = tmp_path / "out"
    assert segment_cli.main([str(clip), "--classes", CLASSES, "--engine", str(bundle), "--out", str(out),
                             "--no-progress"]) == 0
    assert segmenter.settings.temporal == "ema"
    state, names = segmenter.temporal_state(), CLASSES.split(",")
    differs = False
    for index, frame in enumerate(moving_frames(12, 96, 128)):
        expected = segmenter.decode(segmenter.encode(frame), names, state=state).labels
        stored = np.asarray(Image.open(out / "clip" / "labels" / f"{index:06d}.png"))
        assert np.array_equal(stored, expected), index
        differs |= not np.array_equal(expected, segmenter.segment(frame, names).labels)
    assert differs
