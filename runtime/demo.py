"""What `mgca-demo` does with one request, without Gradio (mgca/cli/demo.py is the page around it), so it is
tested without a browser and runs in the lean install on any bundle.

SAM's predictor pattern: the engine runs once per image (and engine, and preprocessing); the window embeddings are
kept (`Segmenter.encode`) and every later vocabulary, background value, unit count, PAMR or background rule on that
image is answered from them (`Segmenter.decode`), with exactly `Segmenter.segment`'s labels.

Video and webcam go through the stream API (runtime/stream.py): a clip through `Segmenter.stream` (policy every:
each frame labelled as `segment` labels it, in order), a webcam session through `Segmenter.push_stream` (policy
latest: the newest frame labelled, the rest dropped).

Memory is bounded: at most `cached_segmenters` Segmenters (one engine each: a unit count, PAMR or rule of its own
needs its own Segmenter), `cached_images` encoded images and `cached_live` webcam streams are kept, least recently
used first out, and images, clips and webcam frames above `max_pixels` are refused before the engine sees them.
"""
from __future__ import annotations

import hashlib
import itertools
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .bundle import Bundle, load_bundle
from .contract import MODEL_KEYS, SETTING_SPECS, InferenceSettings, model_key
from .engines import tensorrt_available
from .errors import RuntimeInputError, SettingsError, VocabularyError
from .openvino_engine import cpu_capabilities
from .overlay import blend, class_palette, legend_entries, render_overlay
from .segmenter import Encoded, Result, Segmenter
from .stream import StreamRecord
from .video_sources import open_source

DEMO_CACHE_HINT = ("pick names from the bundle's vocabulary, or make a text cache of your own classes with "
                   "`mgca-export text --checkpoint CKPT --vocab classes.txt --out my.npz` (needs mgca[train]) and "
                   "start `mgca-demo --text-cache my.npz`; for classes this model never learnt (the embedded model "
                   "knows only coloured shapes), make a bundle from real CLIP weights: `mgca-weights ViT-B-16 "
                   "--out weights/`, then `mgca-export --clip ViT-B-16 --weights weights/ViT-B-16.pt --no-decoder "
                   "--vocab classes.txt --out bundle/` and `mgca-demo --engine bundle/`")
DEFAULT_MAX_PIXELS = 16_000_000
VIDEO_CODEC = "VP80"  # VP8 in WebM: OpenCV's PyPI build writes it and every browser plays it (no ffmpeg needed)
VIDEO_SUFFIX = ".webm"
VIDEO_FPS = 25.0  # the overlay video's rate when the clip does not state its own
LIVE_WAIT_S = 10.0  # longest a webcam request waits for a labelled frame (the engine's time for one, normally)
PAGE_SETTINGS = ("units", "pamr", "bg_rule")  # the settings a user tunes per request (the rest are the export's)


@dataclass(frozen=True)
class Options:
    """What a user tunes on the page; None keeps the bundle manifest's setting."""

    engine: str | None = None  # "<backend> <precision>", one of `engine_choices(bundle)`; None: what auto picks
    units: int | None = None
    pamr: int | None = None
    bg_rule: str | None = None
    background: float | None = None  # a background class decided by this value (the rule's threshold); None: none


@dataclass(frozen=True)
class Outcome:
    """One answer: the overlay with its legend, the label map, each class's share of the image and the time."""

    overlay: Image.Image
    labels: np.ndarray
    class_names: tuple[str, ...]
    shares: tuple[tuple[str, float], ...]
    seconds: float
    engine_ran: bool  # False: the image's cached window embeddings were reused


def engine_choices(bundle: Bundle) -> tuple[str, ...]:
    """The engines this bundle can run here, as "<backend> <precision>": each (backend, precision) of the contract
    whose model file (`runtime.contract.model_key`: OpenVINO int8 runs the QDQ graph when no NNCF graph was kept)
    is in the bundle, TensorRT only where TensorRT and a GPU are usable, OpenVINO only where installed (bf16 only
    where the CPU computes it natively)."""
    capabilities = cpu_capabilities()  # () without OpenVINO
    runs = {"tensorrt": lambda p: tensorrt_available(), "onnxruntime": lambda p: True,
            "openvino": lambda p: bool(capabilities) and (p != "bf16" or "BF16" in capabilities)}
    available = bundle.available_models()
    return tuple(f"{backend} {precision}" for backend, precision in MODEL_KEYS
                 if model_key(backend, precision, available) in available and runs[backend](precision))


@dataclass(frozen=True)
class VideoOutcome:
    """A labelled clip: the overlay video, its frame count, each class's share over all frames, the stream's stats."""

    path: Path
    frames: int
    class_names: tuple[str, ...]
    shares: tuple[tuple[str, float], ...]
    stats: dict[str, Any]


@dataclass(frozen=True)
class Control:
    """One setting as the page offers it, all read from the contract (`runtime.contract.SETTING_SPECS`): its name,
    help, range or choices, and the bundle's value as the default. The page writes no number of its own."""

    name: str
    help: str
    default: Any
    minimum: int | None
    maximum: int | None
    choices: tuple[str, ...]

    @property
    def label(self) -> str:
        shown = " / ".join(self.choices) if self.choices else f"{self.minimum}..{self.maximum}"
        return f"{self.name} ({shown})"


def page_controls(settings: InferenceSettings) -> tuple[Control, ...]:
    """The controls of PAGE_SETTINGS, defaulting to `settings` (the bundle's manifest)."""
    out = []
    for name in PAGE_SETTINGS:
        spec = SETTING_SPECS[name]
        numeric = not spec.choices
        out.append(Control(name, spec.help, getattr(settings, name), spec.minimum if numeric else None,
                           spec.maximum if numeric else None, spec.choices))
    return tuple(out)


def setting_value(name: str, value: Any) -> Any:
    """A page field's value as the setting `name` (a number field gives a float, or None when left empty), checked
    against its declaration: a one-line error naming the setting and its range, never a TypeError."""
    spec = SETTING_SPECS[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SettingsError(f"{name} is empty: type {spec.describe()} ({spec.help})")
    if not spec.choices and isinstance(value, float):
        if not value.is_integer():
            raise SettingsError(f"{name} must be {spec.describe()}, got {value!r}")
        value = int(value)
    return spec.check(name, value)


def parse_classes(text: str) -> tuple[str, ...]:
    """'cat, grass' or one name a line -> names; none at all is a one-line error saying what to type."""
    names = tuple(name.strip() for name in re.split(r"[,\n]", text or "") if name.strip())
    if not names:
        raise RuntimeInputError("no classes given: type class names separated by commas (e.g. 'cat, grass, sky') or "
                                "pick them from the vocabulary")
    return names


class Demo:
    """One bundle served to many users: Segmenters and encoded images cached, bounded, shared between threads."""

    def __init__(self, bundle_dir: str | Path, *, text_cache: str | Path | None = None, device: str = "auto",
                 num_threads: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, cached_segmenters: int = 2,
                 cached_images: int = 8, cached_live: int = 4):
        self.bundle = load_bundle(bundle_dir)
        self.engines = engine_choices(self.bundle)
        if not self.engines:
            raise RuntimeInputError(f"bundle {self.bundle.path} has no model this machine can run; re-export it")
        self.text_cache = text_cache
        self.device = device
        self.num_threads = num_threads
        if not max_pixels >= 1:  # NaN too
            raise RuntimeInputError(f"max_pixels must be at least 1, got {max_pixels!r}")
        self.max_pixels = int(max_pixels)
        self.cached_segmenters = max(1, cached_segmenters)
        self.cached_images = max(1, cached_images)
        self._segmenters: OrderedDict[tuple, Segmenter] = OrderedDict()
        self._encoded: OrderedDict[tuple, Encoded] = OrderedDict()
        self.cached_live = max(1, cached_live)
        self._live: OrderedDict[str, LiveStream] = OrderedDict()
        self._lock = threading.Lock()
        # the default engine is what `auto` picks for this bundle and device (runtime.engine_choice), built first
        auto = Segmenter(self.bundle.path, "auto", device, text_cache=text_cache, num_threads=num_threads)
        self.default_engine = f"{auto.backend} {auto.precision}"
        if self.default_engine not in self.engines:  # auto's rule and engine_choices' agree; this keeps both usable
            self.engines = (self.default_engine, *self.engines)
        self.default = auto
        self._segmenters[self._key(Options())] = auto

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self.default.class_names

    def segmenter(self, options: Options) -> Segmenter:
        """The Segmenter of these options (built once, then kept while recently used)."""
        engine = options.engine or self.default_engine
        if engine not in self.engines:
            raise RuntimeInputError(f"engine {engine!r} is not in this bundle; choose one of "
                                    f"{', '.join(self.engines)}")
        backend, precision = engine.split()
        key = self._key(options)
        with self._lock:  # one build per key, even when several users ask for it at once
            seg = self._segmenters.get(key)
            if seg is None:
                seg = Segmenter(self.bundle.path, backend, self.device, precision=precision,
                                text_cache=self.text_cache, units=options.units, pamr=options.pamr,
                                bg_rule=options.bg_rule, num_threads=self.num_threads)
                self._segmenters[key] = seg
                while len(self._segmenters) > self.cached_segmenters:
                    self._segmenters.popitem(last=False)
            self._segmenters.move_to_end(key)
            return seg

    def _key(self, options: Options) -> tuple:
        """What makes a Segmenter: the engine and the page's settings as they take effect (None: the manifest's),
        so the page's defaults reuse the default Segmenter."""
        manifest = self.bundle.inference
        units = manifest.units if options.units is None else options.units
        pamr = manifest.pamr if options.pamr is None else options.pamr
        bg_rule = manifest.bg_rule if options.bg_rule is None else options.bg_rule
        return options.engine or self.default_engine, units, pamr, bg_rule

    def check_size(self, width: int, height: int) -> None:
        """A one-line error when an image of this size is too large for this demo's memory bound (checked on the
        file's header too, before it is decoded)."""
        if height * width > self.max_pixels:
            raise RuntimeInputError(f"the image is {width} x {height} ({height * width / 1e6:.1f} MP); this demo "
                                    f"takes at most {self.max_pixels / 1e6:.1f} MP: downscale it, or start "
                                    "mgca-demo with a larger --max-megapixels")

    def _encode(self, seg: Segmenter, image: np.ndarray) -> tuple[Encoded, bool]:
        """The image's window embeddings for this engine and preprocessing: cached, or run now (True)."""
        digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()
        key = (digest, image.shape, seg.encoding_key())
        with self._lock:
            found = self._encoded.get(key)
            if found is not None:
                self._encoded.move_to_end(key)
                return found, False
        encoded = seg.encode(image)  # outside the lock: other users' cached answers need not wait for the engine
        with self._lock:
            self._encoded[key] = encoded
            while len(self._encoded) > self.cached_images:
                self._encoded.popitem(last=False)
        return encoded, True

    def _checked(self, classes: str, options: Options) -> tuple[Segmenter, tuple[str, ...]]:
        """The Segmenter of `options` and the typed class names, each name checked against its vocabulary."""
        names = parse_classes(classes)
        seg = self.segmenter(options)
        missing = [name for name in names if name not in seg.class_names]
        if missing:
            shown = ", ".join(repr(n) for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise VocabularyError(f"{shown} not in the vocabulary ({len(seg.class_names)} classes)", DEMO_CACHE_HINT)
        seg.check_classes(names)  # repeats
        return seg, names

    def run(self, image: np.ndarray, classes: str, options: Options) -> Outcome:
        """Segment `image` (RGB uint8) for the classes typed in `classes`: labels equal `Segmenter.segment`'s."""
        seg, names = self._checked(classes, options)
        self.check_size(image.shape[1], image.shape[0])
        start = time.perf_counter()
        encoded, ran = self._encode(seg, image)
        result = seg.decode(encoded, names, background_threshold=options.background)
        seconds = time.perf_counter() - start
        return self._outcome(image, result, seconds, ran, options)

    @staticmethod
    def _outcome(image: np.ndarray, result: Result, seconds: float, ran: bool, options: Options) -> Outcome:
        background = 0 if options.background is not None else None
        overlay = render_overlay(image, result.labels, result.class_names, background_index=background)
        shares = tuple((result.class_names[k], share) for k, share in legend_entries(result.labels,
                                                                                     result.class_names))
        return Outcome(overlay, result.labels, result.class_names, shares, seconds, ran)

    # ---- video and webcam: Segmenter.stream / push_stream (runtime/stream.py) -----------------------------------

    def label_video(self, source: str | Path, classes: str, options: Options, out: str | Path,
                    progress: Callable[[int, int | None], None] | None = None) -> VideoOutcome:
        """The overlay video of a clip, every frame labelled in order (`Segmenter.stream`, policy "every": labels
        equal `segment`'s frame by frame), written as VIDEO_CODEC (OpenCV writes it, browsers play it).
        `progress(done, total)` after each frame (total None when the file does not say)."""
        seg, names = self._checked(classes, options)
        out = Path(out)
        counts: np.ndarray | None = None
        writer = None
        background = 0 if options.background is not None else None
        try:
            with open_source(str(source)) as frames:
                total, fps = frames.frame_count, frames.fps or VIDEO_FPS
                remaining = iter(frames)
                first = next(remaining, None)
                if first is None:
                    raise RuntimeInputError(f"{Path(source).name} holds no frames; upload another clip")
                self.check_size(first.image.shape[1], first.image.shape[0])  # before the engine sees a frame
                with seg.stream(itertools.chain([first], remaining), names, policy="every",
                                background_threshold=options.background) as stream:
                    for done, record in enumerate(stream, 1):
                        if writer is None:
                            writer = video_writer(out, fps, record.frame.shape[1], record.frame.shape[0])
                        labels, class_names = record.result.labels, record.result.class_names
                        picture = blend(record.frame, labels, class_palette(len(class_names)),
                                        background_index=background)
                        writer.write(picture[:, :, ::-1])  # OpenCV writes BGR
                        frame_counts = np.bincount(labels.ravel(), minlength=len(class_names))[:len(class_names)]
                        counts = frame_counts if counts is None else counts + frame_counts
                        if progress is not None:
                            progress(done, total)
                    stats = stream.stats()
        finally:
            if writer is not None:
                writer.release()
        if counts is None:
            raise RuntimeInputError(f"{Path(source).name} holds no frames; upload another clip")
        total_pixels = max(1, int(counts.sum()))
        shares = tuple((name, float(c) / total_pixels) for name, c in zip(class_names, counts, strict=True))
        return VideoOutcome(out, int(stats["frames"]), tuple(class_names), shares, stats)

    def live(self, key: str, classes: str, options: Options) -> LiveStream:
        """The webcam stream of one page session (`key`): a push stream with policy "latest", made again when the
        engine or a setting changes, its classes and background set for the next frame when only they change.
        At most `cached_live` sessions are kept, least recently used first out (their streams closed)."""
        seg, names = self._checked(classes, options)
        with self._lock:
            live = self._live.get(key)
            if live is not None and live.segmenter is not seg:
                live.close()
                live = None
            if live is None:
                live = LiveStream(seg, names, options.background)
                self._live[key] = live
                while len(self._live) > self.cached_live:
                    self._live.popitem(last=False)[1].close()
            self._live.move_to_end(key)
        live.update(names, options.background)
        return live

    def close_live(self, key: str) -> None:
        """The session left the page: its stream's threads end."""
        with self._lock:
            live = self._live.pop(key, None)
        if live is not None:
            live.close()


class LiveStream:
    """One webcam session: frames pushed as the browser sends them, the newest one labelled, the rest dropped
    (`Segmenter.push_stream(policy="latest")`)."""

    def __init__(self, segmenter: Segmenter, classes: tuple[str, ...], background: float | None):
        self.segmenter = segmenter
        self.classes, self.background = classes, background
        self.stream = segmenter.push_stream(classes, policy="latest", background_threshold=background)
        self.sent = 0  # frames the browser sent
        self._lock = threading.Lock()

    def update(self, classes: tuple[str, ...], background: float | None) -> None:
        if classes != self.classes:
            self.stream.set_classes(classes)
            self.classes = classes
        if background != self.background:
            self.stream.set_background_threshold(background)
            self.background = background

    def label(self, frame: np.ndarray, wait: float = LIVE_WAIT_S) -> StreamRecord | None:
        """Push `frame`, then the newest record made (waiting up to `wait` seconds for one; None if none came: the
        page keeps its last picture). Records older than the newest are dropped."""
        with self._lock:
            self.sent += 1
        self.stream.put(frame)
        newest = None
        try:
            newest = self.stream.get(timeout=wait)
            while True:
                newest = self.stream.get(timeout=0)
        except TimeoutError:
            pass
        return newest

    def stats(self) -> dict[str, Any]:
        return {**self.stream.stats(), "sent": self.sent}

    def close(self) -> None:
        self.stream.close()


def video_writer(path: Path, fps: float, width: int, height: int) -> Any:
    """An OpenCV writer of VIDEO_CODEC at `path`; a one-line error when this OpenCV build cannot write it."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_CODEC), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeInputError(f"this OpenCV build cannot write {VIDEO_CODEC} video to {path.name}; install "
                                "opencv-python-headless from PyPI, whose FFmpeg has it")
    return writer


__all__ = ["Demo", "Options", "Outcome", "VideoOutcome", "LiveStream", "Control", "video_writer", "engine_choices",
           "page_controls", "setting_value", "parse_classes", "DEMO_CACHE_HINT", "DEFAULT_MAX_PIXELS", "PAGE_SETTINGS",
           "VIDEO_CODEC", "VIDEO_SUFFIX"]
