"""runtime.video_sources: every kind of source hands on RGB uint8 frames of one size, in order; each bad input is a
one-line VideoSourceError (a damaged, truncated, empty or undecodable video, a missing camera, an unreachable or
stalled URL, a resolution change), never a hang."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from runtime.errors import MgcaError
from runtime.frames import Frame
from runtime.video_sources import VideoSourceError, is_video_name, open_source, to_rgb8

from .support import SHARED_DATA


def write_video(path: Path, frames: list[np.ndarray], fourcc: str = "FFV1", fps: float = 10.0) -> Path:
    """RGB frames -> a video file (FFV1 is lossless: the frames read back exactly)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def moving_frames(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """A red square walking over a grey-blue gradient: every frame differs, colours tell RGB from BGR."""
    rng = np.random.default_rng(0)
    frames = []
    for index in range(count):
        image = np.zeros((height, width, 3), np.uint8)
        image[..., 2] = np.linspace(40, 200, width, dtype=np.uint8)[None, :]
        image[..., 1] = rng.integers(0, 60)
        left = (index * 3) % (width - 12)
        image[10:22, left:left + 12] = (230, 20, 20)
        frames.append(image)
    return frames


def assert_one_line(err: pytest.ExceptionInfo, *words: str) -> None:
    message = str(err.value)
    assert isinstance(err.value, MgcaError) and "\n" not in message, message
    for word in words:
        assert word in message, message


def test_video_file_frames_in_order_rgb(tmp_path):
    frames = moving_frames(12)
    path = write_video(tmp_path / "clip.mkv", frames)
    with open_source(path) as source:
        assert not source.live and source.fps == pytest.approx(10.0) and source.frame_count == 12
        read = list(source)
    assert [f.index for f in read] == list(range(12))
    assert all(isinstance(f, Frame) and f.image.dtype == np.uint8 and f.image.shape == (48, 64, 3) for f in read)
    assert np.array_equal(np.stack([f.image for f in read]), np.stack(frames))  # lossless, and RGB (not BGR)
    stamps = [f.timestamp for f in read]
    assert stamps[0] == pytest.approx(0.0) and stamps[-1] == pytest.approx(1.1)
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))


def test_folder_glob_and_iterable_sources(tmp_path):
    frames = moving_frames(5)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"f{index:03d}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    for source in (tmp_path, str(tmp_path / "f*.png")):
        with open_source(source, fps=5.0) as opened:
            read = list(opened)
            assert opened.frame_count == 5 and not opened.live
        assert np.array_equal(np.stack([f.image for f in read]), np.stack(frames))
        assert [f.timestamp for f in read] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    given = [Frame(7 + i, 100.0 + i, frame, 0.0) for i, frame in enumerate(frames[:2])]
    read = list(open_source(iter(given)))
    assert [f.timestamp for f in read] == [100.0, 101.0] and [f.index for f in read] == [7, 8]
    assert np.array_equal(read[1].image, frames[1])


def test_grey_16bit_and_rgba_frames_are_converted(tmp_path):
    grey = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 256
    deep = (grey.astype(np.uint16) * 257)
    rgba = np.dstack([moving_frames(1)[0], np.full((48, 64), 9, np.uint8)])
    read = list(open_source([grey.astype(np.uint8), deep, deep[..., None], rgba]))
    for frame in read[:3]:
        assert frame.image.dtype == np.uint8 and frame.image.shape == (48, 64, 3)
        assert np.array_equal(frame.image, np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2))
    assert np.array_equal(read[3].image, rgba[..., :3])
    Image.fromarray(deep).save(tmp_path / "a.png")  # a 16-bit grey PNG frame (mode I;16)
    (frame,) = list(open_source(tmp_path))
    assert np.array_equal(frame.image[..., 0], grey.astype(np.uint8))
    with pytest.raises(VideoSourceError) as err:
        to_rgb8(np.zeros((4, 4, 3), np.float32), "frame 3 of test")
    assert_one_line(err, "frame 3 of test", "float32")


def test_resolution_change_mid_stream_names_the_frame(tmp_path):
    frames = moving_frames(3) + [np.zeros((40, 64, 3), np.uint8)]
    source = open_source(frames)
    read = []
    with pytest.raises(VideoSourceError) as err:
        for frame in source:
            read.append(frame.index)
    assert read == [0, 1, 2]
    assert_one_line(err, "frame 3", "64x40", "64x48", "one resolution")
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{index}.png")
    with pytest.raises(VideoSourceError) as err:
        list(open_source(tmp_path))
    assert_one_line(err, "frame 3")


def test_bad_video_files(tmp_path):
    good = write_video(tmp_path / "good.mkv", moving_frames(20), fourcc="MJPG")
    data = good.read_bytes()
    cases = {
        "missing.mp4": None,
        "noise.mp4": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "empty.avi": b"",
        "stub.mkv": data[:200],
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(VideoSourceError) as err:
            list(open_source(tmp_path / name))
        assert_one_line(err, name)
    # zero frames: a writer opened and closed at once
    writer = cv2.VideoWriter(str(tmp_path / "zero.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    writer.release()
    with pytest.raises(VideoSourceError) as err:
        list(open_source(tmp_path / "zero.avi"))
    assert_one_line(err, "zero.avi")
    # truncated: the frames before the cut are handed on, then the error names where the file ends
    (tmp_path / "cut.mkv").write_bytes(data[:len(data) // 2])
    read = []
    with pytest.raises(VideoSourceError) as err:
        for frame in open_source(tmp_path / "cut.mkv"):
            read.append(frame.index)
    assert 0 < len(read) < 20
    assert_one_line(err, "cut.mkv", "truncated", f"frame {read[-1]}")


def test_unsupported_codec(tmp_path):
    """An AVI whose stream names a codec no decoder knows (the MJPG tag rewritten to ZZZZ)."""
    data = write_video(tmp_path / "ok.avi", moving_frames(5), fourcc="MJPG").read_bytes()
    assert data.count(b"MJPG") >= 1
    (tmp_path / "odd.avi").write_bytes(data.replace(b"MJPG", b"ZZZZ").replace(b"mjpg", b"zzzz"))
    with pytest.raises(VideoSourceError) as err:
        list(open_source(tmp_path / "odd.avi"))
    assert_one_line(err, "odd.avi", "codec")


def test_camera_that_does_not_exist():
    with pytest.raises(VideoSourceError) as err:
        open_source(987)
    assert_one_line(err, "camera 987", "does not exist")
    with pytest.raises(VideoSourceError) as err:
        open_source(-1)
    assert_one_line(err, "camera index")


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte (a stalled camera)."""

    def __init__(self, greeting: bytes = b""):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]
        self.greeting, self.accepted, self.connections = greeting, 0, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted += 1
            self.connections.append(connection)
            if self.greeting and self.accepted == 1:
                threading.Thread(target=self._greet, args=(connection,), daemon=True).start()

    def _greet(self, connection: socket.socket) -> None:
        try:
            connection.recv(65536)  # the request
            connection.sendall(self.greeting)  # then silence: the stream stalls
        except OSError:
            pass

    def close(self) -> None:
        self.socket.close()
        for connection in self.connections:
            connection.close()


@pytest.mark.parametrize("scheme", ["http", "rtsp"])
def test_stalled_url_gives_up_after_bounded_retries(scheme):
    server = SilentServer()
    try:
        with pytest.raises(VideoSourceError) as err:
            open_source(f"{scheme}://127.0.0.1:{server.port}/stream", connect_timeout=0.5, retries=2)
    finally:
        server.close()
    assert_one_line(err, f"{scheme}://127.0.0.1:{server.port}/stream", "3 tries")
    assert server.accepted == 3  # one try and two retries, each given up on after its timeout


def mjpeg_greeting(frames: list[np.ndarray]) -> bytes:
    """An HTTP multipart MJPEG response (what IP cameras serve) with `frames`, after which the server stalls."""
    parts = [b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"]
    for frame in frames:
        jpeg = cv2.imencode(".jpg", frame[..., ::-1])[1].tobytes()
        parts.append(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
                     + b"\r\n\r\n" + jpeg + b"\r\n")
    return b"".join(parts)


def test_url_that_stalls_mid_stream_gives_up_after_bounded_reconnects():
    server = SilentServer(mjpeg_greeting(moving_frames(4)))
    read = []
    try:
        source = open_source(f"http://127.0.0.1:{server.port}/video.mjpg", connect_timeout=0.5, retries=1)
        assert source.live
        with pytest.raises(VideoSourceError) as err:
            for frame in source:
                read.append(frame.index)
    finally:
        server.close()
    assert len(read) >= 1  # frames came, then the stream fell silent
    assert_one_line(err, "stopped sending frames", "1 reconnects")
    assert server.accepted == 2  # the first connection and one reconnect


def test_bad_arguments():
    for kwargs, word in (({"connect_timeout": 0}, "connect_timeout"), ({"retries": -1}, "retries"),
                         ({"fps": -3}, "fps")):
        with pytest.raises(VideoSourceError) as err:
            open_source([np.zeros((4, 4, 3), np.uint8)], **kwargs)
        assert_one_line(err, word)
    for source in (True, 3.5, np.zeros((4, 4, 3), np.uint8)):
        with pytest.raises(VideoSourceError) as err:
            open_source(source)
        assert_one_line(err)
    assert is_video_name("a/b.MP4") and not is_video_name("a/._b.mp4") and not is_video_name("b.png")


def test_a_source_is_read_once_and_closes():
    source = open_source(moving_frames(3))
    assert len(list(source)) == 3
    with pytest.raises(VideoSourceError):
        list(source)


@pytest.mark.skipif(not (SHARED_DATA / "video" / "tree.avi").is_file(),
                    reason="../shared/data/video/tree.avi (real footage) is not beside this checkout")
def test_real_footage_reads_whole():
    """tree.avi's header counts 444 frames, 376 of them empty "repeat" chunks: its 68 real frames, no error."""
    with open_source(SHARED_DATA / "video" / "tree.avi") as source:
        frames = list(source)
    assert len(frames) == 68 and frames[0].image.shape == (240, 320, 3)
    assert frames[-1].timestamp == pytest.approx(443 / source.fps, abs=0.01)
