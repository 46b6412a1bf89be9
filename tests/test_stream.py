"""The stream API (runtime/stream.py): labels equal `segment()` frame by frame, the policies' drops and queue bounds
under a slow stand-in engine, the push form, classes changed mid-stream, errors in each stage, and shutdown.

No timed assertions: the stand-in engine's delay is counted in frames of a simulated camera (each engine run lets
the camera capture K more frames), so "latency stays bounded" is a count of frames behind the camera clock.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from runtime import Segmenter
from runtime.errors import BackendError, MgcaError, RuntimeInputError, VocabularyError
from runtime.frames import Frame

from .support import blocky_image

CLASSES_A = ["cat", "road", "sky"]
CLASSES_B = ["dog", "car"]


def frames(n: int, seed: int = 0, height: int = 72, width: int = 96) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [blocky_image(rng, height, width) for _ in range(n)]


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mgca-stream-") and t.is_alive()]


class CountingEngine:
    """The Segmenter's engine, counting its runs and calling `before_run` first (a camera tick, an error)."""

    def __init__(self, engine, before_run=None):
        self.engine, self.before_run, self.runs = engine, before_run, 0
        self.input_shape, self.output_shape = engine.input_shape, engine.output_shape

    def run(self, batch, batch_size=None):
        self.runs += 1
        if self.before_run is not None:
            self.before_run()
        return self.engine.run(batch, batch_size)

    def describe(self):
        return self.engine.describe()


class TickingCamera:
    """A live camera whose clock is the engine: K frames exist at the start and every engine run lets K more be
    captured (an engine K frame periods slow). `clock` is how many frames the camera has captured so far."""

    def __init__(self, images: list[np.ndarray], k: int):
        self.images, self.k, self.clock = images, k, k
        self._cond = threading.Condition()

    def tick(self) -> None:
        with self._cond:
            self.clock += self.k
            self._cond.notify_all()

    def __iter__(self):
        for index, image in enumerate(self.images):
            with self._cond:  # a live source: frame `index` exists once the clock has passed it
                assert self._cond.wait_for(lambda i=index: self.clock > i, timeout=60), "the camera clock stopped"
            yield image


@pytest.fixture
def own_segmenter(bundle):
    """A Segmenter of its own, so a test may swap its engine."""
    return Segmenter(bundle, backend="onnxruntime", device="cpu")


def test_stream_labels_equal_segment_frame_by_frame(segmenter):
    images = frames(9)
    with segmenter.stream(iter(images), CLASSES_A, policy="every", temporal="off") as stream:
        records = list(stream)
    assert [r.index for r in records] == list(range(len(images)))
    for record, image in zip(records, images, strict=True):
        expected = segmenter.segment(image, CLASSES_A)
        np.testing.assert_array_equal(record.result.labels, expected.labels)
        assert record.result.class_names == expected.class_names
        assert np.shares_memory(record.frame, image) and record.latency >= 0  # the caller's buffer, no copy
    stats = stream.stats()
    assert stats["frames"] == stats["read"] == len(images) and stats["dropped"] == 0 and stats["policy"] == "every"
    assert stats["latency_p50"] <= stats["latency_p95"] <= stats["latency_max"]
    assert not stream_threads()


def test_stream_takes_frames_with_their_own_index_and_clock(segmenter):
    images = frames(3)
    given = [Frame(10 + i, 0.5 * i, image, 0.0) for i, image in enumerate(images)]
    records = list(segmenter.stream(given, ["cat"], background_threshold=0.5, temporal="off"))  # auto: every
    assert [(r.index, r.timestamp) for r in records] == [(10, 0.0), (11, 0.5), (12, 1.0)]
    expected = segmenter.segment(images[2], ["cat"], background_threshold=0.5)
    np.testing.assert_array_equal(records[2].result.labels, expected.labels)
    assert records[2].result.class_names == ("background", "cat")


def test_a_video_file_streams_with_the_labels_of_its_decoded_frames(segmenter, tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 72))
    for image in frames(6, seed=6):
        writer.write(image[:, :, ::-1])
    writer.release()
    with segmenter.stream(path, CLASSES_A, temporal="off") as stream:  # a file: auto is every
        records = list(stream)
    assert stream.policy == "every" and [r.index for r in records] == list(range(6))
    assert [r.timestamp for r in records] == pytest.approx([i / 10 for i in range(6)])
    for record in records:
        assert record.frame.shape == (72, 96, 3) and record.frame.dtype == np.uint8
        np.testing.assert_array_equal(record.result.labels, segmenter.segment(record.frame, CLASSES_A).labels)
    assert not stream_threads()


def test_temporal_mode_keeps_one_state_per_stream(segmenter):
    """With a temporal mode the stream's labels are decode's with one state carried through the frames in order."""
    images = frames(6, seed=7)
    records = list(segmenter.stream(images, CLASSES_A, policy="every", temporal="ema"))
    state = segmenter.temporal_state("ema")
    for record, image in zip(records, images, strict=True):
        expected = segmenter.decode(segmenter.encode(image), CLASSES_A, state=state)
        np.testing.assert_array_equal(record.result.labels, expected.labels)


def test_latest_drops_stale_frames_and_stays_behind_the_camera_by_a_bounded_count(own_segmenter):
    """A camera K frames per engine run: latest labels the newest frames and its lag stays under a bound; every,
    on the same camera, labels all and falls further behind with each frame (the backlog latest prevents)."""
    k, n = 4, 40
    lags = {}
    for policy in ("latest", "every"):
        camera = TickingCamera(frames(n, seed=2, height=40, width=48), k)
        own_segmenter.engine = CountingEngine(own_segmenter.engine, camera.tick)
        got = []
        with own_segmenter.stream(camera, CLASSES_A, policy=policy) as stream:
            for record in stream:
                got.append(record.index)
                lags.setdefault(policy, []).append(camera.clock - 1 - record.index)
        stats = stream.stats()
        own_segmenter.engine = own_segmenter.engine.engine
        assert got == sorted(set(got)) and got[-1] == n - 1  # in order, and the last frame is always labelled
        assert stats["read"] == n and stats["frames"] == len(got)
        assert stats["frames"] + stats["dropped"] == n
        for queue, depth in stats["queue_depths"].items():
            assert 1 <= depth <= stats["queue_limits"][queue], (queue, stats)
        if policy == "latest":
            assert stats["dropped"] >= n // 2, stats  # about K - 1 of every K frames
            assert stats["queue_limits"]["frames"] == 1 and stats["queue_limits"]["encoded"] == 1
        else:
            assert stats["dropped"] == 0 and got == list(range(n))
    # latest: never more than a few engine runs' worth of frames behind; every: a backlog growing to ~(K-1) x n
    assert max(lags["latest"]) <= 4 * k, lags["latest"]
    assert lags["every"][-1] > 2 * max(lags["latest"]) and lags["every"][-1] >= (k - 1) * n // 2, lags["every"]


def test_push_stream_every_get_and_end(segmenter):
    images = frames(5, seed=3)
    push = segmenter.push_stream(CLASSES_A, policy="every", temporal="off")
    feeder = threading.Thread(target=lambda: ([push.put(image) for image in images], push.end()))
    feeder.start()  # put blocks while the queues are full: feed from another thread, as a subscriber would
    records = list(push)
    feeder.join()
    assert [r.index for r in records] == list(range(5))
    for record, image in zip(records, images, strict=True):
        np.testing.assert_array_equal(record.result.labels, segmenter.segment(image, CLASSES_A).labels)
    assert push.get(timeout=5) is None  # ended and drained
    with pytest.raises(RuntimeInputError, match="ended or closed"):
        push.put(images[0])
    push.close()
    assert not stream_threads()


def test_push_stream_latest_with_callback_counts_what_it_drops(own_segmenter):
    gate = threading.Event()
    own_segmenter.engine = CountingEngine(own_segmenter.engine, lambda: gate.wait(60))  # held until all are put
    delivered = []
    images = frames(12, seed=4, height=40, width=48)
    with own_segmenter.push_stream(CLASSES_B, callback=delivered.append) as push:
        accepted = [push.put(image, timestamp=float(i)) for i, image in enumerate(images)]  # never blocks
        gate.set()
        push.end(wait=True)
        stats = push.stats()
    assert accepted.count(False) == stats["dropped_by_queue"]["frames"] >= 12 - 3  # one in the engine, one waiting
    assert [r.index for r in delivered][-1] == 11 and len(delivered) == stats["frames"]
    assert stats["frames"] + stats["dropped"] == 12 and stats["dropped_by_queue"]["results"] == 0
    last = delivered[-1]
    assert last.timestamp == 11.0
    np.testing.assert_array_equal(last.result.labels, own_segmenter.segment(images[11], CLASSES_B).labels)
    assert not stream_threads()


def test_classes_and_background_change_mid_stream_without_another_engine_run(own_segmenter):
    own_segmenter.engine = counting = CountingEngine(own_segmenter.engine)
    images = frames(12, seed=5)
    seen = []
    with own_segmenter.stream(images, CLASSES_A, policy="every", temporal="off") as stream:
        for record in stream:
            seen.append(record)
            if record.index == 1:
                stream.set_classes(CLASSES_B)
                stream.set_background_threshold(0.5)
                with pytest.raises(VocabularyError):
                    stream.set_classes(["not a class"])  # refused at once; the stream goes on with CLASSES_B
    names = [r.result.class_names for r in seen]
    switch = names.index(("background", *CLASSES_B))
    # from the frame after the call on, at most the frames already decoded (two queued results + one) come before
    assert 2 <= switch <= 5 and set(names[:switch]) == {tuple(CLASSES_A)}
    assert set(names[switch:]) == {("background", *CLASSES_B)}
    assert counting.runs == len(images)  # one engine run per frame: the change cost no encode
    for record in seen:
        classes = [n for n in record.result.class_names if n != "background"]
        threshold = 0.5 if "background" in record.result.class_names else None
        expected = own_segmenter.segment(images[record.index], classes, background_threshold=threshold)
        np.testing.assert_array_equal(record.result.labels, expected.labels)


def test_a_bad_frame_reaches_the_consumer_as_its_one_line_error(segmenter):
    images = frames(3)
    bad = images[:2] + [images[2].astype(np.float32)] + images
    got = []
    with pytest.raises(MgcaError, match=r"^frame 2 of .* has dtype float32") as caught:
        for record in segmenter.stream(bad, CLASSES_A):
            got.append(record.index)
    assert "\n" not in str(caught.value) and got == list(range(len(got))) and len(got) <= 2
    assert not stream_threads()


def test_errors_in_the_engine_the_source_and_the_callback_reach_the_consumer(own_segmenter):
    failure = BackendError("engine lost its device; restart it")

    def fail():
        raise failure

    own_segmenter.engine = CountingEngine(own_segmenter.engine, fail)
    with pytest.raises(BackendError) as caught, own_segmenter.stream(frames(4), CLASSES_A) as stream:
        list(stream)
    assert caught.value is failure  # the original exception object, not a wrapper
    own_segmenter.engine = own_segmenter.engine.engine

    def broken_source():
        yield frames(1)[0]
        raise ZeroDivisionError("a bug in the caller's generator")

    with pytest.raises(ZeroDivisionError, match="caller's generator"):
        list(own_segmenter.stream(broken_source(), CLASSES_A))

    def bad_callback(record):
        raise ValueError("publisher gone")

    push = own_segmenter.push_stream(CLASSES_A, callback=bad_callback)
    push.put(frames(1)[0])
    with pytest.raises(ValueError, match="publisher gone"):
        push.get(timeout=60)
    with pytest.raises(ValueError, match="publisher gone"):
        push.put(frames(1)[0])  # the caller's next put learns it too
    push.close()
    assert not stream_threads()


def test_bad_arguments_are_refused_before_anything_starts(segmenter):
    with pytest.raises(RuntimeInputError, match="policy must be one of"):
        segmenter.stream(frames(1), policy="newest")
    with pytest.raises(RuntimeInputError, match="queue_size must be a positive integer"):
        segmenter.stream(frames(1), queue_size=0)
    with pytest.raises(VocabularyError):
        segmenter.stream(frames(1), ["no such class"])
    with pytest.raises(RuntimeInputError, match="background_threshold"):
        segmenter.push_stream(background_threshold=2.0)
    with pytest.raises(MgcaError, match="one image is no stream"):
        segmenter.stream(frames(1)[0])
    with pytest.raises(MgcaError, match="fps must be a positive number"):
        segmenter.stream(frames(1), fps=-1)
    with pytest.raises(MgcaError, match="float is no video source"):
        segmenter.stream(3.5)
    with pytest.raises(MgcaError, match="does not exist"):
        segmenter.stream("no/such/clip.mp4")
    push = segmenter.push_stream(CLASSES_A)
    with pytest.raises(MgcaError, match="frame 0 put into the stream has dtype float64"):
        push.put(np.zeros((8, 8, 3)))
    push.close()
    assert not stream_threads()


def test_breaking_out_or_closing_early_stops_every_thread_and_closes_the_source(segmenter):
    closed = []

    def endless():
        image = frames(1)[0]
        try:
            while True:
                yield image
        finally:
            closed.append(True)

    for policy in ("every", "latest"):
        closed.clear()
        for record in segmenter.stream(endless(), CLASSES_A, policy=policy):
            if record.index >= 2:
                break  # the loop's generator is dropped: the stream closes itself
        assert closed == [True] and not stream_threads(), policy

    closed.clear()
    stream = segmenter.stream(endless(), CLASSES_A)
    with stream:
        next(iter(stream))  # the queues fill up behind the consumer and the reader blocks: close must wake it
    assert closed == [True] and not stream.running and not stream_threads()
    with pytest.raises(RuntimeInputError, match="iterated once"):
        next(iter(stream))

    class Source:
        def __iter__(self):
            return endless()

        def close(self):
            closed.append("source")

    closed.clear()
    segmenter.stream(Source()).close()  # never iterated: the source is closed all the same
    assert closed == ["source"]
