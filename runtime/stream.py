"""Video and live streams through a Segmenter: frames in, one `StreamRecord` per frame out, the stages overlapping.

    with seg.stream("clip.mp4", classes=["road", "car"]) as stream:
        for rec in stream:              # rec.index, rec.timestamp, rec.frame, rec.result, rec.latency
            ...
    live = seg.push_stream(["person"], callback=publish)    # a ROS2 / GStreamer callback calls live.put(rgb)

Three stages run at once, each on its own thread and joined by bounded queues: reading and resizing the next
frame, the engine (`Segmenter.encode`) and post-processing (`Segmenter.decode`: units, PAMR, background,
upsampling). OpenCV, the engines (onnxruntime, OpenVINO, TensorRT) and most of numpy release the GIL, so where
the engine is the slowest stage it is busy nearly all the time (benchmarks/stream.py measures it). Because the
engine's output is kept apart from the classes (encode / decode), classes and the background threshold change
between frames at no engine cost. Sources are whatever `runtime.video_sources.open_source` opens: video files,
cameras, URLs, frame folders and globs, iterables of arrays or `Frame`s.

Policies:
  every:  nothing is dropped and results come in source order. A full queue blocks the stage before it, down
          to the reader, which then stops reading: memory is bounded by the queue sizes.
  latest: for live sources. The reader keeps the source's pace whatever the engine does and only the newest
          unprocessed frame waits (an older one is dropped and counted). The engine takes it once the frame
          before is delivered, so a taken frame waits nowhere, and results nobody reads are dropped oldest
          first. Latency stays about one frame's processing time plus the wait for the next frame, and memory
          stays flat.
  auto:   latest for live sources (cameras, URLs), every for the rest.

Shutdown: `close()`, leaving a `with` block, or breaking out of the `for` loop stops the threads and closes the
source. An error in any stage (a corrupt frame, a vocabulary error, a bug) stops the stream, and the consumer
gets the original exception, after the records finished before it.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import RuntimeInputError
from .frames import Frame
from .video_sources import open_source, to_rgb8

if TYPE_CHECKING:
    from .segmenter import Result, Segmenter

POLICIES = ("auto", "every", "latest")
LATENCY_WINDOW = 8192  # the stats' latency percentiles cover this many recent results: memory stays flat
JOIN_TIMEOUT_S = 30.0  # longest close() waits for a stage (one engine run); a stage stuck longer is left as a daemon


@dataclass(frozen=True)
class StreamRecord:
    """One frame's result.

    index, timestamp: the frame's position and time in its source (gaps in index are dropped frames).
    frame: the H x W x 3 uint8 RGB frame that was labelled.
    result: the Segmenter's Result, as `segment(frame, classes, ...)` gives it (temporal off).
    latency: seconds from the frame's capture to its result.
    """

    index: int
    timestamp: float
    frame: np.ndarray
    result: Result
    latency: float


class _End:
    """Marks a channel with nothing left and no more to come."""


END = _End()


class _Channel:
    """A bounded FIFO between two stages: a full one blocks the producer, or (drop_oldest) makes room by dropping
    its oldest item. `close()` lets the consumer drain what is left; `abort()` discards it and wakes everyone.
    Counts what it dropped and the deepest it has been (the stream's stats)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.deepest = 0
        self.dropped = 0
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any, drop_oldest: bool = False) -> int:
        """Append `item`; returns how many older items were dropped for it (0 or 1), -1 when the channel is closed."""
        with self._cond:
            dropped = 0
            while len(self._items) >= self.capacity and not self._closed:
                if drop_oldest:
                    self._items.popleft()
                    dropped += 1
                else:
                    self._cond.wait()
            if self._closed:
                return -1
            self._items.append(item)
            self.dropped += dropped
            self.deepest = max(self.deepest, len(self._items))
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; END once closed and drained. Raises TimeoutError after `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                raise TimeoutError(f"no stream record within {timeout} s")
            if not self._items:
                return END
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()


def check_policy(policy: str, live: bool) -> str:
    if policy not in POLICIES:
        raise RuntimeInputError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    return ("latest" if live else "every") if policy == "auto" else policy


def check_queue_size(queue_size: Any) -> int:
    if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
        raise RuntimeInputError(f"queue_size must be a positive integer, got {queue_size!r}")
    return queue_size


class _Pipeline:
    """The three stages and their queues, shared by the pull form (`Stream`: a reader thread feeds `intake`) and
    the push form (`PushStream`: the caller's `put` is the intake)."""

    def __init__(self, segmenter: Segmenter, policy: str, classes: Sequence[str] | None,
                 background_threshold: float | None, queue_size: int, temporal: str | None = None,
                 callback: Callable[[StreamRecord], Any] | None = None):
        from .segmenter import check_background_threshold

        self.segmenter, self.policy, self.callback = segmenter, policy, callback
        self.temporal = segmenter.temporal_state(temporal)  # this stream's memory of its frames ("off": none)
        self._check_threshold = check_background_threshold
        self._query = self._checked_query(classes, background_threshold)
        latest = policy == "latest"
        # latest: one waiting frame (the newest) and one finished encoding, so the engine always takes the newest
        self.frames = _Channel(1 if latest else queue_size)
        self.encoded = _Channel(1 if latest else queue_size)
        self.results = _Channel(queue_size)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._read = 0
        self._done = 0
        self._first: float | None = None
        self._last: float | None = None
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        # latest: the frame taken by the engine and not yet delivered (at most one, see _engine_stage)
        self._flow = threading.Condition()
        self._in_flight = 0

    # ------------------------------------------------------------------ query (changeable between frames)
    def _checked_query(self, classes: Sequence[str] | None, threshold: Any) -> tuple[Any, float | None]:
        self.segmenter.check_classes(classes)  # a VocabularyError here, in the caller's thread
        return (None if classes is None else tuple(classes), self._check_threshold(threshold))

    def set_classes(self, classes: Sequence[str] | None) -> None:
        self._query = self._checked_query(classes, self._query[1])

    def set_background_threshold(self, threshold: float | None) -> None:
        self._query = self._checked_query(self._query[0], threshold)

    # ------------------------------------------------------------------ stages
    def start(self, reader: Callable[[], None] | None = None) -> None:
        stages = [("engine", self._engine_stage), ("post", self._post_stage)]
        if reader is not None:
            stages.insert(0, ("reader", reader))
        for name, body in stages:
            thread = threading.Thread(target=self._guard, args=(body,), name=f"mgca-stream-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _guard(self, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, who re-raises it
            self.fail(err)

    def fail(self, err: BaseException) -> None:
        """Stop every stage; the consumer gets the records finished so far, then `err`."""
        with self._lock:
            if self._error is None and not self._stop.is_set():
                self._error = err
        self._stop.set()
        self.frames.abort()
        self.encoded.abort()
        self.results.close()
        with self._flow:
            self._flow.notify_all()

    def intake(self, frame: Frame) -> bool:
        """Take one frame from the source: False when a waiting frame was dropped for it (latest)."""
        if self._stop.is_set():
            return True
        with self._lock:
            self._read += 1
            self._first = frame.captured if self._first is None else self._first
        if self.policy == "latest":  # prepared by the engine stage: no resize spent on frames that get dropped
            return self.frames.put(frame, drop_oldest=True) == 0
        self.frames.put((frame, self.segmenter.prepare(frame.image, "rgb")))
        return True

    def end_of_input(self) -> None:
        self.frames.close()

    def _engine_stage(self) -> None:
        seg, latest = self.segmenter, self.policy == "latest"
        while not self._stop.is_set():
            if latest:
                # one frame in flight: the engine takes the newest frame once the previous one is delivered. On a
                # CPU the engine and post-processing share the cores, and letting the engine start early (when the
                # post stage would be done as it finished) made the tiny model's p95 latency 3.6x one frame's time
                # in series for no more frames labelled (benchmarks/stream.py); at one in flight it is that time
                # plus the wait for the next frame.
                with self._flow:
                    self._flow.wait_for(lambda: self._in_flight == 0 or self._stop.is_set())
            item = self.frames.get()
            if item is END:
                break
            if latest:
                with self._flow:
                    self._in_flight += 1
                frame, prepared = item, seg.prepare(item.image, "rgb")  # only frames that will be labelled
            else:
                frame, prepared = item
            self.encoded.put((frame, seg.encode(prepared)))
        self.encoded.close()

    def _post_stage(self) -> None:
        seg, latest = self.segmenter, self.policy == "latest"
        while not self._stop.is_set():
            item = self.encoded.get()
            if item is END:
                break
            try:
                self._post(seg, latest, *item)
            finally:
                with self._flow:
                    self._in_flight = max(0, self._in_flight - 1)
                    self._flow.notify_all()
        self.results.close()

    def _post(self, seg: Segmenter, latest: bool, frame: Frame, encoded: Any) -> None:
        classes, threshold = self._query
        result = seg.decode(encoded, classes, background_threshold=threshold, state=self.temporal)
        now = time.monotonic()
        record = StreamRecord(frame.index, frame.timestamp, frame.image, result, now - frame.captured)
        with self._lock:
            self._done += 1
            self._last = now
            self._latencies.append(record.latency)
        if self.callback is not None:
            self.callback(record)
        else:
            self.results.put(record, drop_oldest=latest)

    # ------------------------------------------------------------------ consumer side
    def next_record(self, timeout: float | None = None) -> StreamRecord | None:
        """The next record; None when the stream has ended; the stage's error when it failed."""
        item = self.results.get(timeout)
        if item is END:
            if self._error is not None:
                raise self._error
            return None
        return item

    def stop(self) -> None:
        """Stop now: discard frames in flight, wake every stage and wait for the threads."""
        self._stop.set()
        for channel in (self.frames, self.encoded, self.results):
            channel.abort()
        with self._flow:
            self._flow.notify_all()
        me = threading.current_thread()
        for thread in self._threads:
            if thread is not me:
                thread.join(JOIN_TIMEOUT_S)

    def wait(self) -> None:
        """Wait for the stages to finish the frames already taken (after `end_of_input`)."""
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def stats(self) -> dict[str, Any]:
        with self._lock:
            latencies = np.asarray(self._latencies, dtype=np.float64)
            done, read = self._done, self._read
            elapsed = (self._last - self._first) if self._first is not None and self._last is not None else 0.0
        dropped = {"frames": self.frames.dropped, "results": self.results.dropped}
        return {
            "policy": self.policy,
            "frames": done,
            "read": read,
            "dropped": sum(dropped.values()),
            "dropped_by_queue": dropped,
            "fps": done / elapsed if elapsed > 0 else 0.0,
            "latency_p50": float(np.percentile(latencies, 50)) if latencies.size else None,
            "latency_p95": float(np.percentile(latencies, 95)) if latencies.size else None,
            "latency_max": float(latencies.max()) if latencies.size else None,
            "queue_depths": {"frames": self.frames.deepest, "encoded": self.encoded.deepest,
                             "results": self.results.deepest},
            "queue_limits": {"frames": self.frames.capacity, "encoded": self.encoded.capacity,
                             "results": self.results.capacity},
        }


class Stream:
    """Records of a frame source, one per processed frame (`Segmenter.stream` makes it). Iterate it once; use it as
    a context manager or `close()` it (breaking out of the loop closes it too). The stages start at the first
    iteration."""

    def __init__(self, segmenter: Segmenter, source: Any, classes: Sequence[str] | None = None, *,
                 policy: str = "auto", background_threshold: float | None = None, queue_size: int = 2,
                 temporal: str | None = None, **source_options: Any):
        queue_size = check_queue_size(queue_size)
        if policy not in POLICIES:  # before the source opens: a bad argument should not open a camera
            check_policy(policy, False)
        self.source = open_source(source, **source_options)
        try:
            self.live = bool(self.source.live)
            self.policy = check_policy(policy, self.live)
            self._pipe = _Pipeline(segmenter, self.policy, classes, background_threshold, queue_size, temporal)
        except BaseException:
            self.source.close()
            raise
        self._started = False
        self._closed = False
        self._source_closed = threading.Event()

    def _read(self) -> None:
        try:
            for frame in self.source:
                if self._pipe._stop.is_set():
                    break
                self._pipe.intake(frame)
        finally:
            self._close_source()
        self._pipe.end_of_input()

    def _close_source(self) -> None:
        if not self._source_closed.is_set():
            self._source_closed.set()
            self.source.close()

    def __iter__(self) -> Iterator[StreamRecord]:
        if self._started or self._closed:
            raise RuntimeInputError("a stream is iterated once; open a new one with Segmenter.stream(...)")
        self._started = True
        self._pipe.start(self._read)
        try:
            while (record := self._pipe.next_record()) is not None:
                yield record
        finally:
            self.close()

    def set_classes(self, classes: Sequence[str] | None) -> None:
        """Classes from the next frame on (checked now; no engine run is repeated)."""
        self._pipe.set_classes(classes)

    def set_background_threshold(self, threshold: float | None) -> None:
        """Background threshold (None: none) from the next frame on."""
        self._pipe.set_background_threshold(threshold)

    def stats(self) -> dict[str, Any]:
        """frames (results made), read, dropped (frames never labelled + results never read), fps, latency_p50 /
        latency_p95 / latency_max (seconds, over the last LATENCY_WINDOW results), deepest queues and their
        limits."""
        return {**self._pipe.stats(), "source": self.source.description}

    @property
    def running(self) -> bool:
        """Whether any of the stream's threads is still alive."""
        return self._pipe.running

    def close(self) -> None:
        """Stop the stages, wait for them and close the source. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pipe.stop()
        reader_alive = any(t.is_alive() and t.name == "mgca-stream-reader" for t in self._pipe._threads)
        if not reader_alive:  # the reader closes the source itself; never started or finished: close it here
            self._close_source()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PushStream:
    """The stream for callback-driven apps (a ROS2 subscriber, a GStreamer appsink): `put` frames in as they come,
    take records from `get`, by iterating, or through `callback` (called on the post-processing thread; a slow
    callback slows the stream). `end()` says no more frames will come; `close()` stops at once."""

    def __init__(self, segmenter: Segmenter, classes: Sequence[str] | None = None, *, policy: str = "latest",
                 callback: Callable[[StreamRecord], Any] | None = None, background_threshold: float | None = None,
                 queue_size: int = 2, temporal: str | None = None):
        self.policy = check_policy(policy, live=True)  # auto: frames pushed by a callback come live
        self._pipe = _Pipeline(segmenter, self.policy, classes, background_threshold, check_queue_size(queue_size),
                               temporal, callback)
        self._index = itertools.count()
        self._start = time.monotonic()
        self._ended = False
        self._put_lock = threading.Lock()
        self._pipe.start()

    def put(self, image: np.ndarray | Frame, timestamp: float | None = None) -> bool:
        """Hand in one H x W x 3 uint8 RGB frame (grey, RGBA and 16-bit are converted as sources convert them), or a
        Frame. latest: never blocks, and returns False when a waiting frame was dropped for this one; every: blocks
        while the queue is full, returns True. Raises the stage's error if the stream failed."""
        self._pipe.raise_error()
        if self._ended:
            raise RuntimeInputError("put() on a stream that was ended or closed; open a new push_stream()")
        now = time.monotonic()
        with self._put_lock:
            index = next(self._index)
        if isinstance(image, Frame):
            index, timestamp, now, image = image.index, image.timestamp, image.captured, image.image
        rgb = to_rgb8(image, f"frame {index} put into the stream")  # as a source converts: grey, RGBA, 16-bit
        return self._pipe.intake(Frame(index, now - self._start if timestamp is None else float(timestamp), rgb, now))

    def get(self, timeout: float | None = None) -> StreamRecord | None:
        """The next record (oldest first); None once the stream has ended and every record was taken. Raises
        TimeoutError after `timeout` seconds without one, and the stage's error if the stream failed."""
        return self._pipe.next_record(timeout)

    def __iter__(self) -> Iterator[StreamRecord]:
        while (record := self._pipe.next_record()) is not None:
            yield record

    def set_classes(self, classes: Sequence[str] | None) -> None:
        """Classes from the next frame on (checked now; no engine run is repeated)."""
        self._pipe.set_classes(classes)

    def set_background_threshold(self, threshold: float | None) -> None:
        """Background threshold (None: none) from the next frame on."""
        self._pipe.set_background_threshold(threshold)

    def stats(self) -> dict[str, Any]:
        """As `Stream.stats`."""
        return self._pipe.stats()

    @property
    def running(self) -> bool:
        return self._pipe.running

    def end(self, wait: bool = False) -> None:
        """No more frames: those already put are still labelled and delivered; `wait` waits for that (with a
        callback, or while another thread reads the records)."""
        self._ended = True
        self._pipe.end_of_input()
        if wait:
            self._pipe.wait()

    def close(self) -> None:
        """Stop now: frames in flight are discarded and the threads end. Idempotent."""
        self._ended = True
        self._pipe.stop()

    def __enter__(self) -> PushStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["StreamRecord", "Stream", "PushStream", "POLICIES", "LATENCY_WINDOW"]
