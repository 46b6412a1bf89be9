"""Segment videos (files, folders of them, cameras, stream URLs) into an output folder, resumably at frame granularity:
`mgca-segment clip.mp4 --engine bundle/ --out OUT`.

    OUT/<video>/overlay.avi          the frames with their labels' colours blended in (Motion-JPEG in AVI)
    OUT/<video>/labels/000123.png    label ids per frame: class k is k, 255 = unassigned / background (uint8);
                                     uint16 with 65535 from 255 classes on (DepthAI's and ROS' label-image convention)
    OUT/<video>/frames.jsonl         one line per frame: index, timestamp (s, the source's), latency (s), class areas
    OUT/<video>/summary.json         frames, dropped, fps, latency p50/p95, size, formats, complete
    OUT/summary.csv                  one row per video; OUT/.video-log.jsonl the rows as videos finish

<video> mirrors the input tree (`runtime.batch.list_tasks` lists the videos, with the images' rules); a camera or
stream gets <camera0|host>-<UTC time> per run (a live stream cannot be read twice, so it is never resumed).

Why Motion-JPEG in AVI, written by OpenCV's own AVI writer (`cv2.CAP_OPENCV_MJPEG`): every opencv-python-headless
has it (no FFmpeg encoder needed), each frame is a whole JPEG written straight to the file, and a reader that finds no
index at the end reads the frames in order; so a process killed with -9 leaves a video that plays up to the frames
the writer had not yet handed to the OS (the last one, at most a few). An MP4's index is written at close: killed, it
does not open at all. Each run writes overlay-partN.avi and renames it to overlay.avi once the video is complete; a
resumed run first re-renders the frames done from their label PNGs (no inference), so its part holds every frame.

Per frame, the label PNG is written atomically first, then the video frame, then the frames.jsonl line: a frame
counts as done when its line (of this producer) and its PNG exist, so a rerun redoes at most the frame a kill caught.
The output folder's record (`runtime.output_record`) refuses a rerun with other settings unless --overwrite; every
output resolves inside OUT and onto no input (`VideoOutput.check_targets`).

Where the labels come from is one function, `Labeller`: frames in, `Labelled` records out. `engine_labeller` runs a
`runtime.Segmenter`'s pipelined stream (`runtime.stream`); the PyTorch path of mgca-segment hands in a per-frame
loop over its predictor (`predict_labeller`). Torch-free.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image
from tqdm import tqdm

from .batch import (
    IMAGES,
    LIST_SUFFIXES,
    BatchInputError,
    BatchReport,
    BatchWriteError,
    FileKind,
    RunLog,
    _write_failure,
    list_tasks,
    log_row,
    write_png,
    write_summary,
)
from .errors import MgcaError, OutputPathError, one_line
from .files import atomic_write_text, check_writable_dir, remove_temporaries, same_file
from .frames import Frame
from .output_record import OutputRecord, check_record, output_lock, write_record
from .overlay import blend, class_palette
from .ray_start import RayOptions, start_ray
from .video_sources import VIDEO_SUFFIXES, FrameSource, is_url, open_source

VIDEOS = FileKind("video", VIDEO_SUFFIXES, "{}/")
LOG_NAME = ".video-log.jsonl"
OVERLAY_NAME, FRAMES_NAME, SUMMARY_NAME, LABELS_DIR = "overlay.avi", "frames.jsonl", "summary.json", "labels"
OVERLAY_CODEC = "MJPG"  # in AVI, by OpenCV's built-in writer: see the module docstring
PART = re.compile(r"overlay-part(\d+)\.avi")
DEFAULT_FPS = 25.0  # the overlay's frame rate when the source states none (frame folders, iterables)
FORMAT = MappingProxyType({"overlay": f"{OVERLAY_NAME} ({OVERLAY_CODEC} in AVI)",
                           "labels": "PNG per frame, class k = k, the top value (255 uint8 / 65535 uint16) = "
                                     "unassigned or background"})


class VideoJobError(MgcaError):
    """Some videos could not be segmented (each is in the summary with its error); what was done is kept."""

    exit_code = 1


@dataclass(frozen=True)
class VideoTask:
    """One video: `source` (a path, a URL, or "camera:N") and its output folder below OUT, `rel`."""

    source: str
    rel: str

    @property
    def live(self) -> bool:
        return self.source.startswith("camera:") or is_url(self.source)

    def open(self, connect_timeout: float = 10.0, retries: int = 2) -> FrameSource:
        target: Any = int(self.source.split(":", 1)[1]) if self.source.startswith("camera:") else self.source
        return open_source(target, connect_timeout=connect_timeout, retries=retries)


@dataclass(frozen=True)
class Labelled:
    """One frame and its labels (the Segmenter's: background, when decided, is label 0)."""

    index: int
    timestamp: float
    image: np.ndarray
    labels: np.ndarray
    latency: float  # seconds from the frame's capture to its labels


Labeller = Callable[[Iterable[Frame], bool], Iterator[Labelled]]  # (frames, live) -> labelled frames, in order


def predict_labeller(predict: Callable[[np.ndarray], np.ndarray]) -> Labeller:
    """A labeller of any image -> labels callable (the PyTorch predictor), one frame after the other."""

    def label(frames: Iterable[Frame], live: bool) -> Iterator[Labelled]:
        for frame in frames:
            labels = np.asarray(predict(frame.image))
            yield Labelled(frame.index, frame.timestamp, frame.image, labels, time.monotonic() - frame.captured)

    return label


def engine_labeller(segmenter: Any, classes: Sequence[str], background_threshold: float | None) -> Labeller:
    """The runtime's labeller: `Segmenter.stream` (reading, the engine and post-processing overlapping), policy
    "every" for files (no frame dropped) and "latest" for cameras and URLs (stale frames dropped: index gaps)."""
    names = list(classes)

    def label(frames: Iterable[Frame], live: bool) -> Iterator[Labelled]:
        with segmenter.stream(frames, names, policy="latest" if live else "every",
                              background_threshold=background_threshold) as stream:
            for record in stream:
                yield Labelled(record.index, record.timestamp, record.frame, record.result.labels, record.latency)

    return label


# ------------------------------------------------------------------------------------------------ listing

def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def live_task(source: str | int) -> VideoTask:
    """A camera index or stream URL: its output folder is named after it and this run's UTC time."""
    if isinstance(source, int):
        return VideoTask(f"camera:{source}", f"camera{source}-{_stamp()}")
    parts = urlsplit(source)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{parts.hostname or 'stream'}{parts.path}").strip("._-")[:60]
    return VideoTask(source, f"{name or 'stream'}-{_stamp()}")


def list_videos(inputs: Sequence[str], exclude: Path | None = None) -> list[VideoTask]:
    """Video files of the inputs (folders, globs, list files, files: `runtime.batch.list_tasks`' rules) and stream
    URLs, in order."""
    tasks: list[VideoTask] = [live_task(item) for item in inputs if is_url(item)]
    files = [item for item in inputs if not is_url(item)]
    if files:
        tasks += [VideoTask(t.source, t.rel) for t in list_tasks(files, exclude=exclude, kind=VIDEOS)]
    return tasks


def holds_videos(item: str) -> bool:
    """Whether an input names videos rather than images (mgca-segment's choice between its image and video modes): a
    stream URL, a video file, a list file of videos, or a folder or glob with videos and no images. A folder or list
    with both is a one-line BatchInputError; anything unknown is left to the image mode's errors."""
    if is_url(item):
        return True
    path = Path(item).expanduser()
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        try:
            listed = [task.source for task in list_tasks([item])]  # a list's lines are not filtered by kind
        except BatchInputError:
            return False
        videos = sum(VIDEOS.wanted(source) for source in listed)
        if videos and videos < len(listed):
            raise BatchInputError(f"{item} lists both images and videos; segment them in two runs")
        return bool(videos)
    if path.is_file():
        return VIDEOS.wanted(path)

    def found(kind: FileKind) -> bool:
        try:
            return bool(list_tasks([item], kind=kind))
        except BatchInputError:
            return False

    videos = found(VIDEOS)
    if videos and found(IMAGES):
        raise BatchInputError(f"{item} holds both images and videos; segment them in two runs (give a glob such as "
                              f"'{item.rstrip('/')}/**/*.mp4')")
    return videos


# ------------------------------------------------------------------------------------------------ outputs

@dataclass(frozen=True)
class VideoOutput:
    """The output folder of a run and how labels are stored.

    class_names: the classes, label k in the PNGs is class_names[k]; background: the labeller's label 0 is a
    background decided by a threshold (stored as the unassigned value)."""

    folder: Path
    class_names: tuple[str, ...]
    background: bool = False
    overwrite: bool = False
    producer: dict[str, Any] = field(default_factory=dict)

    @property
    def record_producer(self) -> dict[str, Any]:
        return {"classes": list(self.class_names), "background": self.background, "video": FORMAT, **self.producer}

    @property
    def shown(self) -> tuple[str, ...]:
        """The labeller's label order: "background" first when a threshold decides it."""
        return (("background",) if self.background else ()) + self.class_names

    @property
    def dtype(self) -> type:
        return np.uint8 if len(self.class_names) < 255 else np.uint16

    @property
    def unassigned(self) -> int:
        return int(np.iinfo(self.dtype).max)

    def to_png(self, labels: np.ndarray) -> np.ndarray:
        """The labeller's labels -> the PNG's values (background -> the unassigned value)."""
        labels = labels.astype(np.int64)
        if self.background:
            labels = np.where(labels == 0, self.unassigned, labels - 1)
        return labels.astype(self.dtype)

    def from_png(self, values: np.ndarray) -> np.ndarray:
        values = values.astype(np.int64)
        return np.where(values == self.unassigned, 0, values + 1) if self.background else values

    def video_folder(self, task: VideoTask) -> Path:
        return self.folder / task.rel

    def paths(self, task: VideoTask) -> list[Path]:
        folder = self.video_folder(task)
        parts = sorted(folder.glob("overlay-part*.avi")) if folder.is_dir() else []
        return [folder, folder / LABELS_DIR, folder / OVERLAY_NAME, folder / FRAMES_NAME, folder / SUMMARY_NAME,
                *parts]

    def check_targets(self, tasks: Sequence[VideoTask]) -> None:
        """Before any work: every output of every video resolves (links and `..` followed) inside OUT and onto no
        input; else a one-line OutputPathError with nothing written."""
        root = self.folder.resolve()
        inputs = [Path(t.source) for t in tasks if not t.live]
        for task in tasks:
            for path in self.paths(task):
                for source in inputs:
                    if same_file(path, source) or source.resolve().is_relative_to(path.resolve()) and path.is_dir():
                        raise OutputPathError(f"the output {path} of {task.source} is (or holds) the input {source}; "
                                              "it would be overwritten: choose an --out outside the inputs")
                if not path.resolve().is_relative_to(root):
                    raise OutputPathError(f"the output of {task.source} would be written to {path.resolve()}, outside "
                                          f"--out {self.folder} (a link inside it leads out): remove the link or "
                                          "choose another --out")


def _read_frames(path: Path, producer: str) -> dict[int, dict[str, Any]]:
    """frames.jsonl's last line per frame index made by `producer` (a torn last line is ignored)."""
    rows: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("producer") == producer and isinstance(row.get("index"), int):
                rows[row["index"]] = row
    return rows


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 6) if values else None


@dataclass
class _Progress:
    """What one run of one video did (for its summary and its row)."""

    frames: dict[int, dict[str, Any]]
    size: tuple[int, int] = (0, 0)
    new: int = 0
    seconds: float = 0.0
    source_fps: float | None = None


class _Overlay:
    """The run's overlay part: opened at the first frame (its size), released on every way out."""

    def __init__(self, folder: Path, fps: float, output: VideoOutput):
        self.folder, self.fps, self.output = folder, fps, output
        numbers = [int(m.group(1)) for p in folder.glob("overlay-part*.avi") if (m := PART.fullmatch(p.name))]
        self.path = folder / f"overlay-part{max(numbers, default=-1) + 1}.avi"
        self.palette = class_palette(len(output.shown))
        self.writer = None

    def write(self, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        import cv2

        if self.writer is None:
            height, width = image.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*OVERLAY_CODEC),
                                          self.fps, (width, height))
            if not self.writer.isOpened():
                raise OutputPathError(f"the overlay video {self.path} cannot be written; check the folder")
        picture = blend(image, labels, self.palette, background_index=0 if self.output.background else None)
        bgr = np.ascontiguousarray(picture[..., ::-1])
        self.writer.write(bgr)
        return bgr

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def segment_video(task: VideoTask, labeller: Labeller, output: VideoOutput, record: OutputRecord, *,
                  show: Callable[[np.ndarray], bool] | None = None, progress: bool = True,
                  connect_timeout: float = 10.0, retries: int = 2) -> dict[str, Any]:
    """Segment one video into OUT/<rel>/, resuming after its frames done; its summary row. A source that cannot be
    opened or read on (any MgcaError) is an error row, the frames done before kept; an output that cannot be
    written stops the run (BatchWriteError). Ctrl-C ends a live source normally and interrupts a file (its
    outputs so far kept and closed, so they play and resume)."""
    start = time.perf_counter()
    folder = output.video_folder(task)
    producer = record.fingerprint
    prior = {} if output.overwrite or task.live else _read_frames(folder / FRAMES_NAME, producer)
    done = 0
    while done in prior and (folder / LABELS_DIR / f"{done:06d}.png").is_file():
        done += 1
    state = _Progress({i: prior[i] for i in range(done)})
    try:
        source = task.open(connect_timeout, retries)
    except MgcaError as err:
        return _video_row(task, output, state, "error", one_line(err), time.perf_counter() - start)
    try:
        (folder / LABELS_DIR).mkdir(parents=True, exist_ok=True)
        remove_temporaries(folder / LABELS_DIR, recursive=False)
    except OSError as err:
        source.close()
        raise _write_failure(f"the output folder {folder}", err) from None
    state.source_fps = source.fps
    overlay = _Overlay(folder, source.fps or DEFAULT_FPS, output)
    status, error, complete = "ok", "", False
    total = source.frame_count if not task.live else None
    bar = tqdm(total=total, initial=min(done, total or done), desc=task.rel, unit="frame", disable=not progress,
               file=sys.stderr)
    try:
        with source, open(folder / FRAMES_NAME, "a", encoding="utf-8") as log:
            frames = iter(source)
            pending = _replay(frames, done, folder, output, overlay, state)
            if pending is not None:
                loop = time.perf_counter()
                try:
                    for item in labeller(itertools.chain([pending], frames), task.live):
                        bgr = _store(item, folder, output, overlay, log, producer, state)
                        bar.update()
                        if show is not None and not show(bgr):
                            break
                except KeyboardInterrupt:
                    if not task.live:
                        raise
                finally:
                    state.seconds = time.perf_counter() - loop
            complete = True
    except MgcaError as err:
        if isinstance(err, BatchWriteError):
            raise
        status, error = "error", one_line(err)
    except OSError as err:
        raise _write_failure(f"the outputs of {task.source} in {folder}", err) from None
    finally:
        bar.close()
        overlay.close()
        # a live source is never read again: whatever ended it (Ctrl-C, a stalled stream), its outputs are final
        _finish_video(task, output, folder, overlay, state, complete or task.live, producer)
    return _video_row(task, output, state, status, error, time.perf_counter() - start)


def _replay(frames: Iterator[Frame], done: int, folder: Path, output: VideoOutput, overlay: _Overlay,
            state: _Progress) -> Frame | None:
    """Re-render the frames an earlier run did from their label PNGs into this run's overlay part (no inference);
    the first frame still to do, or None when the source ends."""
    for frame in frames:
        if frame.index >= done:
            return frame
        with Image.open(folder / LABELS_DIR / f"{frame.index:06d}.png") as picture:
            labels = output.from_png(np.asarray(picture))
        if labels.shape != frame.image.shape[:2]:
            raise OutputPathError(f"{folder / LABELS_DIR / f'{frame.index:06d}.png'} does not match frame "
                                  f"{frame.index} of {folder.name}'s video (another video?); pass --overwrite")
        overlay.write(frame.image, labels)
        state.size = frame.image.shape[:2]
    return None


def _store(item: Labelled, folder: Path, output: VideoOutput, overlay: _Overlay, log: Any, producer: str,
           state: _Progress) -> np.ndarray:
    """One labelled frame's outputs, in the order that makes a kill safe: PNG (atomic), video frame, log line."""
    write_png(folder / LABELS_DIR / f"{item.index:06d}.png", Image.fromarray(output.to_png(item.labels)))
    bgr = overlay.write(item.image, item.labels)
    counts = np.bincount(item.labels.ravel().astype(np.int64), minlength=len(output.shown))[:len(output.shown)]
    areas = {name: round(float(c) / max(1, item.labels.size), 6) for name, c in zip(output.shown, counts, strict=True)}
    row = {"index": item.index, "timestamp": round(item.timestamp, 6), "latency": round(item.latency, 6),
           "areas": areas, "producer": producer}
    log.write(json.dumps(row) + "\n")
    log.flush()
    state.frames[item.index] = row
    state.size = item.labels.shape[:2]
    state.new += 1
    return bgr


def _finish_video(task: VideoTask, output: VideoOutput, folder: Path, overlay: _Overlay, state: _Progress,
                  complete: bool, producer: str) -> None:
    """After the run (also an interrupted one): the summary; when `complete` (or final: a live source), frames.jsonl
    rewritten in order with one line per frame, and the run's part renamed to overlay.avi (earlier runs' parts
    removed)."""
    if not overlay.path.exists() and not state.frames:
        return
    if complete and overlay.path.exists():
        lines = "".join(json.dumps(state.frames[i]) + "\n" for i in sorted(state.frames))
        atomic_write_text(folder / FRAMES_NAME, lines)
        os.replace(overlay.path, folder / OVERLAY_NAME)
        for part in folder.glob("overlay-part*.avi"):
            if PART.fullmatch(part.name):
                part.unlink(missing_ok=True)
    summary = _summary(task, output, state, complete, overlay)
    with contextlib.suppress(OSError):  # never hide the error that ended the run
        atomic_write_text(folder / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")


def _stats(state: _Progress) -> dict[str, Any]:
    indices = sorted(state.frames)
    latencies = [float(state.frames[i]["latency"]) for i in indices]
    dropped = (indices[-1] + 1 - len(indices)) if indices else 0  # frames 0.. a live policy skipped: the gaps
    return {"frames": len(indices), "dropped": dropped,
            "fps": round(state.new / state.seconds, 3) if state.new and state.seconds > 0 else None,
            "latency_p50": _percentile(latencies, 50), "latency_p95": _percentile(latencies, 95)}


def _summary(task: VideoTask, output: VideoOutput, state: _Progress, complete: bool,
             overlay: _Overlay) -> dict[str, Any]:
    return {"source": task.source, **_stats(state), "height": state.size[0], "width": state.size[1],
            "source_fps": state.source_fps, "complete": complete,
            "overlay": OVERLAY_NAME if complete else overlay.path.name, "overlay_codec": f"{OVERLAY_CODEC} in AVI",
            "labels": {"folder": LABELS_DIR, "dtype": np.dtype(output.dtype).name, "unassigned": output.unassigned,
                       "classes": list(output.class_names)}}


def _video_row(task: VideoTask, output: VideoOutput, state: _Progress, status: str, error: str,
               seconds: float) -> dict[str, Any]:
    return {"video": task.source, "folder": task.rel, "status": status, "error": error, **_stats(state),
            "height": state.size[0], "width": state.size[1], "seconds": round(seconds, 3)}


SUMMARY_COLUMNS = ("video", "folder", "status", "error", "frames", "dropped", "fps", "latency_p50", "latency_p95",
                   "height", "width", "seconds")


# ------------------------------------------------------------------------------------------------ runs

def _prepare(tasks: Sequence[VideoTask], output: VideoOutput) -> tuple[RunLog, list[VideoTask], OutputRecord]:
    check_writable_dir(output.folder, "--out")
    log = RunLog.open(output.folder / LOG_NAME, key="video")
    has_outputs = bool(log.rows) or any(output.folder.glob(f"**/{FRAMES_NAME}"))
    record = check_record(output.folder, output.record_producer, output.overwrite, has_outputs)
    todo = [task for task in tasks if not _is_done(task, output, log.rows.get(task.source), record)]
    output.check_targets(todo)
    remove_temporaries(output.folder, recursive=False)
    write_record(output.folder, record)
    return log, todo, record


def _is_done(task: VideoTask, output: VideoOutput, row: dict[str, Any] | None, record: OutputRecord) -> bool:
    if output.overwrite or task.live or row is None:
        return False
    folder = output.video_folder(task)
    return (row.get("status") == "ok" and row.get("producer") == record.fingerprint
            and (folder / OVERLAY_NAME).is_file() and (folder / FRAMES_NAME).is_file())


def _consume(rows: Iterable[dict[str, Any]], log: RunLog, record: OutputRecord) -> tuple[int, list[dict[str, Any]]]:
    done, failed = 0, []
    for row in rows:
        row = log_row(row, SUMMARY_COLUMNS, log, record.fingerprint)
        if row["status"] == "ok":
            done += 1
        else:
            failed.append(row)
            print(f"skipped {row['video']}: {row['error']}", file=sys.stderr)
    return done, failed


def _finish(tasks: Sequence[VideoTask], log: RunLog, summary: Path, done: int, skipped: int,
            failed: list[dict[str, Any]], start: float) -> BatchReport:
    rows = [{key: log.rows[t.source].get(key) for key in SUMMARY_COLUMNS} for t in tasks if t.source in log.rows]
    try:
        write_summary(summary, rows)
    except OSError as err:
        raise BatchWriteError(f"{_write_failure(f'the summary {summary}', err)}, then run the same command again to "
                              "write it (every video's outputs are written)") from None
    return BatchReport(done, skipped, failed, summary, time.perf_counter() - start, "videos")


def run_videos(tasks: Sequence[VideoTask], labeller: Labeller, output: VideoOutput, summary: Path | None = None, *,
               show: Callable[[np.ndarray], bool] | None = None, progress: bool = True,
               connect_timeout: float = 10.0, retries: int = 2) -> BatchReport:
    """Segment every video not done yet, one after the other in this process."""
    start = time.perf_counter()
    summary = summary or output.folder / "summary.csv"
    with output_lock(output.folder):
        log, todo, record = _prepare(tasks, output)
        rows = (segment_video(task, labeller, output, record, show=show, progress=progress,
                              connect_timeout=connect_timeout, retries=retries) for task in todo)
        done, failed = _consume(rows, log, record)
        return _finish(tasks, log, summary, done, len(tasks) - len(todo), failed, start)


class VideoActor:
    """A Ray Data actor: one `runtime.Segmenter` (the bundle loaded once), one whole video per row."""

    def __init__(self, bundle: str, segmenter_args: dict[str, Any], classes: Sequence[str],
                 background_threshold: float | None, output: VideoOutput, record: OutputRecord):
        from .segmenter import Segmenter

        self.labeller = engine_labeller(Segmenter(bundle, **segmenter_args), classes, background_threshold)
        self.output, self.record = output, record

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [segment_video(VideoTask(str(source), str(rel)), self.labeller, self.output, self.record,
                              progress=False) for source, rel in zip(batch["source"], batch["rel"], strict=True)]
        return {key: np.asarray([row[key] for row in rows], dtype=object) for key in SUMMARY_COLUMNS}


def run_videos_ray(tasks: Sequence[VideoTask], bundle: str, segmenter_args: dict[str, Any], classes: Sequence[str],
                   background_threshold: float | None, output: VideoOutput, options: RayOptions | None = None,
                   summary: Path | None = None) -> BatchReport:
    """The same job as `run_videos` with one Ray Data task per video, over an actor pool of Segmenters."""
    options = options or RayOptions()
    try:
        import ray
        import ray.data
    except ImportError:
        raise MgcaError("--ray needs Ray Data: pip install 'mgca[ray]'") from None
    if any(task.live for task in tasks):
        raise MgcaError("--ray segments video files; a camera or stream URL runs in this process (drop --ray)")
    with output_lock(output.folder):
        return _run_videos_ray(tasks, bundle, segmenter_args, classes, background_threshold, output, options, summary,
                               ray)


def _run_videos_ray(tasks: Sequence[VideoTask], bundle: str, segmenter_args: dict[str, Any], classes: Sequence[str],
                    background_threshold: float | None, output: VideoOutput, options: RayOptions, summary: Path | None,
                    ray: Any) -> BatchReport:
    start = time.perf_counter()
    summary = summary or output.folder / "summary.csv"
    log, todo, record = _prepare(tasks, output)
    start_ray(ray, options)
    ray.data.DataContext.get_current().enable_progress_bars = False
    actors = options.actors or max(1, int(ray.available_resources().get("CPU", 1) // max(options.num_cpus, 1e-3)))
    actors = max(1, min(actors, len(todo)))
    args = {**segmenter_args, "num_threads": max(1, int(options.num_cpus))}
    rows: Iterable[dict[str, Any]] = ()
    if todo:
        dataset = ray.data.from_items([{"source": t.source, "rel": t.rel} for t in todo], override_num_blocks=len(todo))
        labelled = dataset.map_batches(VideoActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
                                       num_cpus=options.num_cpus, num_gpus=options.num_gpus or None,
                                       fn_constructor_args=(bundle, args, list(classes), background_threshold, output,
                                                            record))
        rows = labelled.iter_rows()
    done, failed = _consume(rows, log, record)
    return _finish(tasks, log, summary, done, len(tasks) - len(todo), failed, start)


# ------------------------------------------------------------------------------------------------ live window

def check_gui() -> None:
    """A one-line error unless OpenCV can open a window here (the base install's opencv-python-headless cannot)."""
    import cv2

    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if gui is None or gui.group(1).upper() == "NONE":
        raise MgcaError("--show needs an OpenCV with a GUI (pip install opencv-python in place of "
                        "opencv-python-headless) and a display; without --show the overlay video is written to --out")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise MgcaError("--show needs a display (DISPLAY is not set); without --show the overlay video is written to "
                        "--out")


def window(title: str = "mgca-segment") -> Callable[[np.ndarray], bool]:
    """A live window showing each overlay frame; False (stop) once the user presses q or Esc."""
    import cv2

    def show(bgr: np.ndarray) -> bool:
        cv2.imshow(title, bgr)
        return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    return show


__all__ = ["FRAMES_NAME", "LOG_NAME", "OVERLAY_CODEC", "OVERLAY_NAME", "SUMMARY_NAME", "VIDEOS", "Labelled",
           "Labeller", "VideoActor", "VideoJobError", "VideoOutput", "VideoTask", "check_gui",
           "engine_labeller", "holds_videos", "list_videos", "live_task", "predict_labeller", "run_videos",
           "run_videos_ray", "segment_video", "window"]
