"""What `mgca-demo` does with one request, without Gradio (mgca/cli/demo.py is the page around it), so it is
tested without a browser and runs in the lean install on any bundle.

SAM's predictor pattern: the engine runs once per image (and engine, and preprocessing); the window embeddings are
kept (`Segmenter.encode`) and every later vocabulary, background value, unit count, PAMR or background rule on that
image is answered from them (`Segmenter.decode`), with exactly `Segmenter.segment`'s labels.

Memory is bounded: at most `cached_segmenters` Segmenters (one engine each: a unit count, PAMR or rule of its own
needs its own Segmenter) and `cached_images` encoded images are kept, least recently used first out, and images
above `max_pixels` are refused before the engine sees them.
"""
from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .bundle import Bundle, load_bundle
from .contract import MODEL_KEYS
from .engines import tensorrt_available
from .errors import RuntimeInputError, VocabularyError
from .openvino_engine import cpu_capabilities
from .overlay import legend_entries, render_overlay
from .segmenter import Encoded, Segmenter

DEMO_CACHE_HINT = ("pick names from the bundle's vocabulary, or make a text cache of your own classes with "
                   "`mgca-export text --checkpoint CKPT --vocab classes.txt --out my.npz` (needs mgca[train]) and "
                   "start `mgca-demo --text-cache my.npz`; for classes this model never learnt (the embedded model "
                   "knows only coloured shapes), make a bundle from real CLIP weights: `mgca-weights ViT-B-16 "
                   "--out weights/`, then `mgca-export --clip ViT-B-16 --weights weights/ViT-B-16.pt --no-decoder "
                   "--vocab classes.txt --out bundle/` and `mgca-demo --engine bundle/`")
DEFAULT_MAX_PIXELS = 16_000_000


@dataclass(frozen=True)
class Options:
    """What a user tunes on the page; None keeps the bundle manifest's setting."""

    engine: str = "onnxruntime fp32"  # "<backend> <precision>", one of `engine_choices(bundle)`
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
    """The engines this bundle can run here, as "<backend> <precision>": its model files, TensorRT only where
    TensorRT and a GPU are usable, OpenVINO only where installed (bf16 only where the CPU computes it natively)."""
    capabilities = cpu_capabilities()  # () without OpenVINO
    runs = {"tensorrt": lambda p: tensorrt_available(), "onnxruntime": lambda p: True,
            "openvino": lambda p: bool(capabilities) and (p != "bf16" or "BF16" in capabilities)}
    usable = []
    for (backend, precision), key in MODEL_KEYS.items():
        path = bundle.models.get(key)
        if path is not None and path.is_file() and runs[backend](precision):
            usable.append(f"{backend} {precision}")
    return tuple(usable)


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
                 cached_images: int = 8):
        self.bundle = load_bundle(bundle_dir)
        self.engines = engine_choices(self.bundle)
        if not self.engines:
            raise RuntimeInputError(f"bundle {self.bundle.path} has no model this machine can run; re-export it")
        self.text_cache = text_cache
        self.device = device
        self.num_threads = num_threads
        self.max_pixels = int(max_pixels)
        self.cached_segmenters = max(1, cached_segmenters)
        self.cached_images = max(1, cached_images)
        self._segmenters: OrderedDict[tuple, Segmenter] = OrderedDict()
        self._encoded: OrderedDict[tuple, Encoded] = OrderedDict()
        self._lock = threading.Lock()
        self.default = self.segmenter(Options(engine=self.engines[0]))

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self.default.class_names

    def segmenter(self, options: Options) -> Segmenter:
        """The Segmenter of these options (built once, then kept while recently used)."""
        if options.engine not in self.engines:
            raise RuntimeInputError(f"engine {options.engine!r} is not in this bundle; choose one of "
                                    f"{', '.join(self.engines)}")
        backend, precision = options.engine.split()
        key = (options.engine, options.units, options.pamr, options.bg_rule)
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

    def run(self, image: np.ndarray, classes: str, options: Options) -> Outcome:
        """Segment `image` (RGB uint8) for the classes typed in `classes`: labels equal `Segmenter.segment`'s."""
        names = parse_classes(classes)
        seg = self.segmenter(options)
        missing = [name for name in names if name not in seg.class_names]
        if missing:
            shown = ", ".join(repr(n) for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise VocabularyError(f"{shown} not in the vocabulary ({len(seg.class_names)} classes)", DEMO_CACHE_HINT)
        seg.check_classes(names)  # repeats
        self.check_size(image.shape[1], image.shape[0])
        start = time.perf_counter()
        encoded, ran = self._encode(seg, image)
        result = seg.decode(encoded, names, background_threshold=options.background)
        seconds = time.perf_counter() - start
        background = 0 if options.background is not None else None
        overlay = render_overlay(image, result.labels, result.class_names, background_index=background)
        shares = tuple((result.class_names[k], share) for k, share in legend_entries(result.labels,
                                                                                     result.class_names))
        return Outcome(overlay, result.labels, result.class_names, shares, seconds, ran)


__all__ = ["Demo", "Options", "Outcome", "engine_choices", "parse_classes", "DEMO_CACHE_HINT", "DEFAULT_MAX_PIXELS"]
