"""Where a stream's frames come from: a video file, a camera, an RTSP/HTTP URL, a folder or glob of frame images, or
any iterable of arrays (a ROS2 callback's queue, a GStreamer appsink), all behind one `FrameSource`.

    with open_source("clip.mp4") as source:            # or 0 (a camera), "rtsp://...", "frames/*.png", a generator
        for frame in source:                           # runtime.frames.Frame: index, timestamp, RGB image, captured
            ...

Every source hands on H x W x 3 uint8 RGB frames of one size: grey frames are made RGB, 16-bit ones scaled to 8 bits
as `runtime.image_files` scales 16-bit images (round(v / 257)), and a frame whose size differs from the first is a
one-line error naming it (a stream that changes resolution would silently change the labels' geometry). Files,
cameras and URLs are read by OpenCV's VideoCapture, the one video library of the base install; a network stream gets a
bounded connect and read timeout and a bounded number of reconnects, then a one-line error, never a hang. Every
problem the user can fix (no such file, a damaged or unsupported video, a missing camera, an unreachable URL) is a
`VideoSourceError` that says what and how. Torch-free.
"""
from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MgcaError, one_line
from .files import files_below
from .frames import Frame
from .image_files import is_image_name, read_rgb

# Files OpenCV's FFmpeg backend reads as video, lower case (what a folder of videos is made of).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".y4m",
                  ".mjpeg", ".3gp")
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
GLOB_CHARS = "*?["


class VideoSourceError(MgcaError, ValueError):
    """A video, camera, URL or frame sequence cannot be opened or read on; the message names it and the fix."""


def is_video_name(name: str | Path) -> bool:
    """A video file by its suffix, hidden files excluded."""
    path = Path(name)
    return path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")


def is_url(text: Any) -> bool:
    return isinstance(text, str) and text.lower().startswith(URL_SCHEMES)


def to_rgb8(image: Any, what: str) -> np.ndarray:
    """`image` as H x W x 3 uint8: grey (H x W or H x W x 1) repeated to RGB, RGBA's alpha dropped, uint16 scaled by
    1/257; anything else a one-line VideoSourceError naming `what` (e.g. "frame 12 of clip.mp4")."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[..., :3] if array.shape[2] != 1 else array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise VideoSourceError(f"{what} has shape {array.shape}; frames must be H x W x 3 (RGB), H x W (grey) or "
                               "H x W x 4")
    if array.dtype == np.uint16:
        return np.rint(array.astype(np.float32) / 257.0).astype(np.uint8)
    if array.dtype != np.uint8:
        raise VideoSourceError(f"{what} has dtype {array.dtype}; frames must be uint8 or uint16: convert them first")
    return np.ascontiguousarray(array)


class FrameSource:
    """Frames of one source, in order, each checked and converted (`to_rgb8`), all of the first frame's size.

    live: a camera or network stream (frames arrive in real time; a slow consumer should keep only the newest).
    fps: the source's frame rate when it states one; frame_count: its length when known (folders, iterables with a
    len) or the video header's frame count (an upper bound: some AVIs count empty "repeat" chunks as frames).
    Iterate once; `close()` (or the `with` block) releases the device or file, also from another thread."""

    live: bool = False
    fps: float | None = None
    frame_count: int | None = None
    description: str = ""

    def __init__(self) -> None:
        self._size: tuple[int, int] | None = None
        self._closed = False
        self._started: float | None = None

    # what subclasses provide: the raw frames (image in RGB or grey, the source's timestamp or None, the source's
    # index or None for "the next one")
    def _frames(self) -> Iterator[tuple[Any, float | None, int | None]]:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def __iter__(self) -> Iterator[Frame]:
        if self._started is not None:
            raise VideoSourceError(f"{self.description} is already being read; open the source again to re-read it")
        self._started = time.monotonic()
        try:
            index = -1
            for raw, stamp, given in self._frames():
                if self._closed:
                    return
                captured = time.monotonic()
                index = index + 1 if given is None else int(given)
                image = self._check(raw, index)
                timestamp = stamp if stamp is not None else (
                    index / self.fps if self.fps else captured - self._started)
                yield Frame(index, float(timestamp), image, captured)
        finally:
            self.close()

    def _check(self, raw: Any, index: int) -> np.ndarray:
        image = to_rgb8(raw, f"frame {index} of {self.description}")
        size = image.shape[:2]
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise VideoSourceError(f"frame {index} of {self.description} is {size[1]}x{size[0]}, the frames before "
                                   f"{self._size[1]}x{self._size[0]}: a stream must keep one resolution; split it "
                                   "where it changes (or resize the frames) and segment the parts")
        return image

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r}, live={self.live}, fps={self.fps}, " \
               f"frame_count={self.frame_count})"


# ------------------------------------------------------------------------------------------------ OpenCV captures

def _cv2():
    import cv2

    return cv2


class CaptureSource(FrameSource):
    """A video file, camera or network stream read by OpenCV's VideoCapture (BGR frames handed on as RGB).

    A file ends where its frames end; when the last frame's time is well before the end its header states, the file
    is truncated or damaged, which is an error after the frames that could be read (they were good). Times, not
    counts: a header's frame count also counts the empty "repeat the last frame" chunks that some AVI encoders
    write (OpenCV's own sample tree.avi: 444 chunks, 68 frames), so a count would call a whole file truncated.
    A live stream whose read fails is reconnected up to `retries` times, each bounded by `timeout` seconds, then a
    one-line error."""

    def __init__(self, target: str | int, kind: str, timeout: float, retries: int):
        super().__init__()
        self.target, self.kind, self.timeout, self.retries = target, kind, float(timeout), int(retries)
        self.live = kind in ("camera", "url")
        self.description = {"camera": f"camera {target}", "url": f"stream {target}"}.get(kind, str(target))
        self._lock = threading.Lock()
        self._capture = self._open()
        fps = float(self._capture.get(_cv2().CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else None
        count = int(self._capture.get(_cv2().CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and kind == "file" else None

    def _open(self, tries: int | None = None):
        """The capture, opened; a URL gets `tries` attempts (default: the first and `retries` more)."""
        cv2 = _cv2()
        if self.kind == "file":
            capture = cv2.VideoCapture(str(self.target))
            if not capture.isOpened():
                raise VideoSourceError(f"{self.target} cannot be opened as a video (not a video, damaged, truncated, "
                                       "or a codec this OpenCV cannot decode); re-encode it, e.g. ffmpeg -i IN -c:v "
                                       "libx264 OUT.mp4, or check the file")
            return capture
        if self.kind == "camera":
            capture = cv2.VideoCapture(int(self.target))
            if not capture.isOpened():
                raise VideoSourceError(f"camera {self.target} does not exist or cannot be opened (no /dev/video"
                                       f"{self.target}, in use, or no permission); list the cameras (v4l2-ctl "
                                       "--list-devices) and pass another index")
            return capture
        milliseconds = max(1, int(self.timeout * 1000))
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds, cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds]
        tries = self.retries + 1 if tries is None else tries
        for _ in range(tries):
            if self._closed:
                break
            capture = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
            if capture.isOpened():
                return capture
            capture.release()
        raise VideoSourceError(f"stream {self.target} could not be opened (no stream within {self.timeout:g} s, "
                               f"{tries} tries): check the URL, that the camera or server is up and reachable, or "
                               "raise connect_timeout")

    def _read(self) -> np.ndarray | None:
        with self._lock:
            if self._closed or self._capture is None:
                return None
            ok, image = self._capture.read()
        return image if ok and image is not None else None

    def _frames(self) -> Iterator[tuple[Any, float | None, int | None]]:
        cv2 = _cv2()
        index, reconnects, last = 0, 0, 0.0
        while not self._closed:
            image = self._read()
            if image is None:
                if self._closed:
                    return
                if self.kind == "file":
                    self._end_of_file(index, last)
                    return
                if reconnects >= self.retries:
                    what = "stopped sending frames" if index else "sent no frame"
                    raise VideoSourceError(f"{self.description} {what} (after frame {index - 1 if index else 'none'}; "
                                           f"{reconnects} reconnects, {self.timeout:g} s each); check the camera or "
                                           "server, or raise the timeout")
                reconnects += 1
                self._reconnect()
                continue
            reconnects = 0
            stamp = None
            if self.kind == "file":
                stamp = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if self.fps:  # some containers give no position: the frame's place at the stated rate
                    stamp = stamp if stamp > 0 or index == 0 else index / self.fps
                last = stamp
            yield _bgr_to_rgb(image), stamp, None
            index += 1

    def _end_of_file(self, read: int, last: float) -> None:
        if read == 0:
            raise VideoSourceError(f"{self.target} holds no frame that can be decoded (zero frames, damaged, or a "
                                   "codec this OpenCV cannot decode); re-encode it, e.g. ffmpeg -i IN -c:v libx264 "
                                   "OUT.mp4")
        if self.frame_count is None or not self.fps:
            return
        end = (self.frame_count - 1) / self.fps  # the last frame's time by the header
        if last < end - max(2.0 / self.fps, 0.5):
            raise VideoSourceError(f"{self.target} ends at {last:.2f} s (frame {read - 1}) though its header says "
                                   f"{end:.2f} s: it is truncated or damaged from there on; the {read} frames before "
                                   "were read; re-copy or re-encode the file")

    def _reconnect(self) -> None:
        with self._lock:
            if self._capture is not None:
                self._capture.release()
            self._capture = None
        capture = None
        try:
            capture = self._open(tries=1)
        except VideoSourceError:
            return  # counted as a failed read by the caller
        with self._lock:
            if self._closed:
                capture.release()
            else:
                self._capture = capture

    def _release(self) -> None:
        with self._lock:
            if self._capture is not None:
                self._capture.release()
                self._capture = None


def _bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 3:
        return image[..., ::-1]
    if image.ndim == 3 and image.shape[2] == 4:
        return image[..., 2::-1]
    return image  # grey: made RGB by the check


# ------------------------------------------------------------------------------------------------ frames in Python

class FolderSource(FrameSource):
    """Frame images (a folder's, sorted by path, or a glob's), read upright as `runtime.image_files` reads images."""

    def __init__(self, files: list[Path], description: str, fps: float | None):
        super().__init__()
        self.files, self.description, self.fps, self.frame_count = files, description, fps, len(files)

    def _frames(self) -> Iterator[tuple[Any, float | None, int | None]]:
        for path in self.files:
            yield read_rgb(path), None, None


class IterableSource(FrameSource):
    """Arrays (RGB, grey or 16-bit) or `Frame`s from any Python iterable; a Frame keeps its own index and timestamp
    (a caller that skips or resumes frames keeps their numbers)."""

    def __init__(self, frames: Iterable[Any], fps: float | None, live: bool):
        super().__init__()
        self.frames, self.fps, self.live = frames, fps, live
        self.frame_count = len(frames) if hasattr(frames, "__len__") else None
        self.description = f"frames from {type(frames).__name__}"

    def _frames(self) -> Iterator[tuple[Any, float | None, int | None]]:
        for item in self.frames:
            yield (item.image, item.timestamp, item.index) if isinstance(item, Frame) else (item, None, None)

    def _release(self) -> None:
        close = getattr(self.frames, "close", None)  # a generator: its finally blocks run now
        if callable(close):
            close()


# ------------------------------------------------------------------------------------------------ the one way in

def open_source(source: Any, *, connect_timeout: float = 10.0, retries: int = 2, fps: float | None = None,
                live: bool = False) -> FrameSource:
    """The `FrameSource` of `source`:

    - an int: a camera index (OpenCV's VideoCapture(index));
    - an rtsp/rtmp/http(s)/udp/tcp/srt URL: a network stream, `connect_timeout` seconds to open and per read, up
      to `retries` reconnects, then a one-line error;
    - a path: a video file (one OpenCV decodes), a folder of frame images (sorted, recursively), one image, or a glob
      of frame images ("frames/*.png");
    - an already open FrameSource: itself;
    - any other iterable of H x W x 3 (or grey, or 16-bit) arrays or `Frame`s: a ROS2 or GStreamer queue.

    `fps` gives frame folders and iterables a clock (timestamp = index / fps; else the seconds since the first frame
    was read); `live` marks an iterable as a real-time source. Bad input is a one-line VideoSourceError."""
    if isinstance(source, FrameSource):
        return source
    if not (isinstance(connect_timeout, (int, float)) and connect_timeout > 0):
        raise VideoSourceError(f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
    if not (isinstance(retries, int) and retries >= 0):
        raise VideoSourceError(f"retries must be a whole number >= 0, got {retries!r}")
    if fps is not None and not (isinstance(fps, (int, float)) and fps > 0):
        raise VideoSourceError(f"fps must be a positive number, got {fps!r}")
    if isinstance(source, (bool, np.bool_)):
        raise VideoSourceError(f"{source!r} is no video source; pass a camera index, a path, a URL or frames")
    if isinstance(source, (int, np.integer)):
        if source < 0:
            raise VideoSourceError(f"camera index must be >= 0, got {source}")
        return CaptureSource(int(source), "camera", connect_timeout, retries)
    if is_url(source):
        return CaptureSource(source, "url", connect_timeout, retries)
    if isinstance(source, (str, os.PathLike)):
        return _open_path(os.fspath(source), fps)
    if isinstance(source, (bytes, str)) or (isinstance(source, np.ndarray) and source.ndim < 4):
        raise VideoSourceError("one image is no stream; pass a list of frames, or segment it with Segmenter.segment")
    if isinstance(source, Iterable):
        return IterableSource(source, fps, live)
    raise VideoSourceError(f"{type(source).__name__} is no video source; pass a camera index, a path, a URL, or an "
                           "iterable of frames")


def _open_path(text: str, fps: float | None) -> FrameSource:
    path = Path(text).expanduser()
    if any(c in text for c in GLOB_CHARS) and not path.exists():
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
        frames = [p for p in files if p.is_file() and is_image_name(p)]
        if not frames:
            raise VideoSourceError(f"the glob {text} matches no frame images; check the pattern")
        return FolderSource(frames, text, fps)
    if path.is_dir():
        frames = [p for p in files_below(path) if is_image_name(p)]
        if not frames:
            videos = sum(is_video_name(p) for p in files_below(path))
            hint = (f" (it holds {videos} videos: open each of them)" if videos else "")
            raise VideoSourceError(f"the folder {path} holds no frame images{hint}; give a video, a folder of frames "
                                   "or a glob")
        return FolderSource(frames, str(path), fps)
    if not path.exists():
        raise VideoSourceError(f"{path} does not exist; check the path (a camera is an int index, a stream a URL)")
    if not path.is_file():
        raise VideoSourceError(f"{path} is not a file or folder; give a video, a folder of frames or a glob")
    if not os.access(path, os.R_OK):
        raise VideoSourceError(f"{path} cannot be read (no permission); make it readable (chmod u+r {path})")
    if is_image_name(path):
        return FolderSource([path], str(path), fps)
    try:
        return CaptureSource(str(path), "file", 10.0, 0)
    except VideoSourceError:
        raise
    except Exception as err:  # noqa: BLE001 - OpenCV's own errors (cv2.error) say little: named, one line
        raise VideoSourceError(f"{path} cannot be opened as a video ({type(err).__name__}: {one_line(err)[:160]})") \
            from None


__all__ = ["CaptureSource", "FolderSource", "FrameSource", "IterableSource", "URL_SCHEMES", "VIDEO_SUFFIXES",
           "VideoSourceError", "is_url", "is_video_name", "open_source", "to_rgb8"]
