"""`Segmenter`: exported bundle + vocabulary -> label maps, in numpy/OpenCV/onnxruntime/faiss (no torch).

Pipeline per docs/inference-contract.md: check image -> resize (mmseg: short side, long-side cap) -> normalise ->
windows, each crop padded alone (all windows of all images of a call in one engine batch) -> stitch +
L2-normalise -> adaptive semantic units -> unit/pixel cosine scores -> PAMR (optional) -> background rule ->
bilinear upsample, crop, resize to the input -> argmax.

No global state: everything a Segmenter decides (assignment method and its timings, thread cap, colour
order, FAISS GPU resources) lives on the instance, and no process-wide knob (OpenCV/BLAS/OpenMP thread
counts, environment) is changed, so Segmenters with different settings coexist in one process.

Thread safety: after construction a Segmenter holds no mutable per-call state. The onnxruntime session's
`run` is thread-safe, TensorRT gets one context per thread, FAISS indexes are built per call, and the
vocabulary is an immutable object swapped atomically by `set_vocabulary`, so any number of threads may
call `segment` at once and get the same results as serial calls.
"""
from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .bundle import Bundle, load_bundle
from .contract import BACKGROUND_RANGE, SETTING_SPECS, InferenceSettings, model_key
from .engine_choice import EngineChoice, EngineFacts, choose_engine
from .engines import OrtEngine, TensorRTEngine, ort_cuda_listed, parse_device, tensorrt_available
from .errors import BackendError, BundleError, RuntimeInputError, SettingsError, VocabularyError
from .files import same_file
from .openvino_engine import OpenVinoEngine, cpu_capabilities, openvino_available
from .postprocess import image_scores, refine, scores_to_labels, stitch
from .preprocess import Prepared, check_color_order, check_image, prepare
from .temporal import TemporalState, check_mode, smooth_scores
from .text_cache import MAKE_CACHE_HINT, TextCache, check_vocabulary, load_text_cache, make_text_cache
from .units import ASSIGNMENT_METHODS, faiss, faiss_gpu_available, make_assigner, measure_assigners

if TYPE_CHECKING:
    from .stream import PushStream, Stream, StreamRecord

FAISS_MARGIN = 1.5


@dataclass(frozen=True)
class Result:
    """One image's segmentation.

    labels: H x W int32 at the input resolution; `class_names[labels[y, x]]` names each pixel.
    class_names: the classes used, in label order ("background" first when a threshold was given).
    scores: K x H x W float32 cosine scores of the (foreground) classes, only when asked for.
    """

    labels: np.ndarray
    class_names: tuple[str, ...]
    scores: np.ndarray | None = None


@dataclass(frozen=True)
class Encoded:
    """One image after the engine (`Segmenter.encode`): its preprocessing and window embeddings, kept so that other
    vocabularies and background values cost no engine run. `key` says which engine and preprocessing made it."""

    prepared: Prepared
    windows: np.ndarray
    key: tuple[Any, ...]


class Segmenter:
    """Open-vocabulary segmentation with an exported MGCA bundle.

    >>> seg = Segmenter("bundle/")                        # backend/device picked automatically
    >>> result = seg.segment(rgb_uint8, classes=["road", "car", "sky"])
    >>> result.labels.shape == rgb_uint8.shape[:2]
    >>> seg.segment(cv2.imread("frame.png"), color_order="bgr")   # OpenCV frames, no conversion needed

    Args:
        bundle_dir: folder written by `mgca-export` (manifest.json, model.onnx, ...).
        backend: "auto", "onnxruntime", "openvino" or "tensorrt". auto follows `runtime.engine_choice` (a TensorRT
            engine when a GPU can run it; on the CPU OpenVINO bf16 where the CPU computes bf16 natively, else
            onnxruntime fp32); describe()["engine_reason"] says why.
        device: "auto", "cpu", "cuda" or "cuda:N"; describe()["provider"] says what actually runs.
        precision: None / "auto" (the backend's default, see above), "fp32", "bf16" (OpenVINO), "int8" or "fp16"
            (TensorRT). OpenVINO's compiled model is cached across processes when $MGCA_OPENVINO_CACHE names a
            folder.
        text_cache: vocabulary file (hash-checked against the bundle); default: the bundle's own.
        assignment: meta-point assignment, "auto" (measured by this Segmenter at construction), "numpy",
            "faiss" or "faiss-gpu"; all give identical labels.
        settings: inference settings in place of the manifest's, as a mapping ({"units": 0, "pamr": 10}) or an
            InferenceSettings; kept apart from the arguments above, so a dict of overrides never collides with
            them. Names and ranges are runtime.contract.SETTING_SPECS's (docs/inference-contract.md, "Settings");
            the window is the graph's and cannot change.
        **overrides: the same settings as keywords (`Segmenter(bundle, units=0, bg_rule="tcl")`); None = the
            manifest's.
        max_batch: most windows per engine call (all windows of a call's images are batched up to this).
        num_threads: cap on this Segmenter's CPU threads: onnxruntime intra/inter-op threads, FAISS' OpenMP
            team (per call, calling thread only) and concurrent post-processing; None = library defaults.
            OpenCV's and numpy's BLAS pools are process-wide and left alone (see runtime/README.md).
        concurrent_runs: most onnxruntime engine runs in flight at once, the other callers queue (None: 1 on CPU,
            where one run uses every core and each extra one adds its own activation memory; unbounded on CUDA).
        color_order: default channel order of images given to `segment`: "rgb" or "bgr" (OpenCV frames).
    """

    def __init__(self, bundle_dir: str | Path, backend: str = "auto", device: str = "auto", *,
                 precision: str | None = None, text_cache: str | Path | TextCache | None = None,
                 assignment: str = "auto", settings: InferenceSettings | Mapping[str, Any] | None = None,
                 max_batch: int = 16, num_threads: int | None = None, concurrent_runs: int | None = None,
                 color_order: str = "rgb", **overrides: Any):
        self.bundle: Bundle = load_bundle(bundle_dir)
        self.settings: InferenceSettings = _pick_settings(self.bundle, settings, overrides)
        if max_batch < 1:
            raise RuntimeInputError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = int(max_batch)
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                        or num_threads < 1):
            raise RuntimeInputError("num_threads must be a positive integer or None (library defaults), "
                                    f"got {num_threads!r}")
        self.num_threads = num_threads
        self.color_order = check_color_order(color_order)
        self._mean = np.asarray(self.bundle.mean, dtype=np.float32)
        self._std = np.asarray(self.bundle.std, dtype=np.float32)
        choice = self._pick_backend(backend, precision, device)
        self.backend, self.precision, self.engine_reason = choice.backend, choice.precision, choice.reason

        def build(path: Path, data: bytes) -> OrtEngine | OpenVinoEngine | TensorRTEngine:
            if self.backend == "tensorrt":
                return TensorRTEngine(path, self.bundle.input_name, self.bundle.output_name, device,
                                      engine_bytes=data)
            if self.backend == "openvino":
                return OpenVinoEngine(path, self.bundle.input_name, self.bundle.output_name, device,
                                      precision=self.precision, num_threads=num_threads, model_bytes=data,
                                      concurrent_runs=concurrent_runs)
            return OrtEngine(path, self.bundle.input_name, self.bundle.output_name, device, num_threads=num_threads,
                             model_bytes=data, concurrent_runs=concurrent_runs)

        self.engine: OrtEngine | OpenVinoEngine | TensorRTEngine = self.bundle.open_model(
            model_key(self.backend, self.precision, self.bundle.available_models()), build)
        self._check_engine_geometry()
        self.assignment, self.assignment_reason, self.assignment_timings = self._pick_assignment(assignment)
        self._assign = make_assigner(self.assignment if self.assignment != "none" else "numpy", num_threads)
        # Post-processing (PAMR, upsample, argmax) is CPU-bound numpy: at most one call per core (per allowed
        # thread) runs it at once and the rest queue, so concurrent callers share the cores instead of
        # oversubscribing them. Its memory is small: labels are made in tiles (postprocess.upsampled_tiles),
        # 4 x H x W bytes of labels plus a strip of at most STRIP_BYTES per call, or 4 x K x H x W more with
        # return_scores. The peak under concurrent callers is the engine's activations, bounded by the engine:
        # one onnxruntime run at a time on CPU (`concurrent_runs`).
        self.post_slots = max(1, min(os.cpu_count() or 1, num_threads or (os.cpu_count() or 1)))
        self._post_gate = threading.BoundedSemaphore(self.post_slots)
        self._vocab_lock = threading.Lock()
        self._vocab: TextCache | None = None
        if text_cache is not None:
            self.set_vocabulary(text_cache)
        elif self.bundle.text_cache is not None:
            self.set_vocabulary(self.bundle.text_cache)

    # ----------------------------------------------------------------------------- setup
    def _pick_backend(self, backend: str, precision: str | None, device: str) -> EngineChoice:
        """(backend, precision, why) by `runtime.engine_choice.choose_engine` over this machine and bundle."""
        kind, _ = parse_device(device)
        models = self.bundle.available_models()
        wants_trt = backend in ("auto", "tensorrt") and kind != "cpu" and any(k.startswith("trt") for k in models)
        ov = openvino_available() if backend in ("auto", "openvino") else False
        facts = EngineFacts(models=models, device=kind,
                            tensorrt_usable=wants_trt and backend == "auto" and tensorrt_available(),
                            onnxruntime_cuda=backend == "auto" and kind == "auto" and ort_cuda_listed(),
                            openvino_installed=ov, cpu_capabilities=cpu_capabilities() if ov else ())
        return choose_engine(backend, precision, facts)

    def _check_engine_geometry(self) -> None:
        """The graph's fixed window and embedding size must be the manifest's: refused here, not at segment()."""
        window, grid = self.bundle.inference.window, self.bundle.inference.window // self.bundle.output_stride
        expected_in = (None, 3, window, window)
        expected_out = (None, self.bundle.embed_dim, grid, grid)
        for what, shape, expected in (("input", self.engine.input_shape, expected_in),
                                      ("output", self.engine.output_shape, expected_out)):
            if len(shape) != 4 or any(s is not None and e is not None and s != e
                                      for s, e in zip(shape, expected, strict=True)):
                shown = " x ".join("N" if s is None else str(s) for s in shape)
                raise BundleError(f"bundle {self.bundle.path}: {self.engine.model_path.name} has {what} {shown}, but "
                                  f"the manifest says inference.window {window} and embed_dim {self.bundle.embed_dim}"
                                  f" ({' x '.join('N' if e is None else str(e) for e in expected)}); the manifest "
                                  "was edited or belongs to another export: re-export the bundle")

    def _pick_assignment(self, assignment: str) -> tuple[str, str, dict[str, float]]:
        settings = self.settings
        if settings.units == 0:
            return "none", "units=0: every pixel is its own unit, no assignment", {}
        candidates = ["numpy", *(["faiss"] if faiss is not None else []),
                      *(["faiss-gpu"] if faiss_gpu_available() else [])]
        if assignment != "auto":
            if assignment not in ASSIGNMENT_METHODS:
                raise RuntimeInputError(f"unknown assignment {assignment!r}; choose 'auto', 'numpy', "
                                        "'faiss' or 'faiss-gpu'")
            if assignment not in candidates:
                raise BackendError(f"assignment {assignment!r} is not available here (have {candidates}); install "
                                   "faiss-cpu / faiss-gpu or use 'numpy'")
            return assignment, "chosen by the caller", {}
        if len(candidates) == 1:
            return "numpy", "faiss is not installed", {}
        side = settings.window if settings.unit_scope == "window" else settings.short_side
        side //= self.bundle.output_stride
        pixels = side * side
        # units >= pixels would mean pixel units: measure a map where they are not
        pixels = max(pixels, 4 * settings.units)
        # measured by this Segmenter, under its own thread cap: a few ms, and no cache shared with other instances
        timings = measure_assigners(pixels, self.bundle.embed_dim, settings.units, candidates,
                                    num_threads=self.num_threads)
        fastest = min(timings, key=timings.get)
        # FAISS must win clearly: its OpenMP pool is erratic on shared cores and under concurrent callers
        # (benchmarks/runtime.py measured 1.1-65x slower than numpy there), a close win does not survive that.
        best = fastest if timings[fastest] * FAISS_MARGIN < timings["numpy"] else "numpy"
        shown = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in sorted(timings.items(), key=lambda kv: kv[1]))
        reason = (f"measured at construction on a typical map ({pixels} px x {settings.units} units x "
                  f"{self.bundle.embed_dim} dims): "
                  f"{shown}; FAISS is used only when {FAISS_MARGIN:g}x faster than numpy; labels are "
                  "identical either way")
        return best, reason, timings

    # ----------------------------------------------------------------------------- vocabulary
    def set_vocabulary(self, vocabulary: str | Path | TextCache | tuple[Sequence[str], np.ndarray]) -> None:
        """Use a text cache file, a TextCache, or (names, K x C embeddings); all go through one check
        (`check_vocabulary`: distinct names, finite embeddings, the bundle's embedding size and CLIP text tower,
        which bare arrays cannot name and are taken on trust for)."""
        expected = dict(expected_text_sha256=self.bundle.text_sha256, expected_embed_dim=self.bundle.embed_dim,
                        bundle_label=f"bundle {self.bundle.path}", expected_arch=self.bundle.arch,
                        expected_context_length=self.bundle.manifest["backbone"].get("context_length"))
        if isinstance(vocabulary, TextCache):
            cache = check_vocabulary(vocabulary, **expected)
        elif isinstance(vocabulary, tuple):
            if len(vocabulary) != 2:
                raise VocabularyError("a vocabulary tuple is (class names, K x C embeddings), got "
                                      f"{len(vocabulary)} items")
            cache = check_vocabulary(make_text_cache(vocabulary[1], vocabulary[0]), **expected)
        else:
            own = self.bundle.text_cache
            if own is not None and same_file(Path(vocabulary).expanduser(), own):
                self.bundle.verify(own)  # the bundle's own cache, passed by path: hash-checked like the model
            cache = load_text_cache(vocabulary, **expected)
        with self._vocab_lock:
            self._vocab = cache

    @property
    def vocabulary(self) -> TextCache | None:
        return self._vocab

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._vocab.class_names if self._vocab is not None else ()

    def check_classes(self, classes: Sequence[str] | None = None) -> tuple[str, ...]:
        """The class names `segment(..., classes)` would use, or the VocabularyError it would raise."""
        return self._classes(classes)[1]

    def _classes(self, classes: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
        vocab = self._vocab
        if vocab is None:
            raise VocabularyError(f"bundle {self.bundle.path} has no text cache and none was given", MAKE_CACHE_HINT)
        return vocab.select(classes)

    # ----------------------------------------------------------------------------- inference
    def _images(self, images: Any) -> tuple[list[np.ndarray], bool]:
        if isinstance(images, (list, tuple)):
            if not images:
                raise RuntimeInputError("got an empty list of images")
            for i, img in enumerate(images):
                if not _array_like(img):
                    raise RuntimeInputError(f"image {i} of the list is a {type(img).__name__}, not an image; a list "
                                            "holds images (numpy arrays H x W x 3 uint8): pass one image as the "
                                            "array itself, not img.tolist()")
            return [check_image(img, f"image {i}") for i, img in enumerate(images)], True
        if isinstance(images, np.ndarray) and images.ndim == 4:
            if images.shape[0] == 0:
                raise RuntimeInputError(f"got an empty batch of images (shape {images.shape})")
            return [check_image(img, f"image {i}") for i, img in enumerate(images)], True
        return [check_image(images)], False

    def _embed_windows(self, prepared: list[Prepared]) -> list[np.ndarray]:
        """All windows of all images through the engine in as few calls as max_batch allows."""
        crops = prepared[0].crops if len(prepared) == 1 else np.concatenate([p.crops for p in prepared])
        emb = self.engine.run(crops, self.max_batch)
        expected = (self.bundle.embed_dim, self.settings.window // self.bundle.output_stride)
        if emb.ndim != 4 or emb.shape[1] != expected[0] or emb.shape[2] != expected[1] or emb.shape[3] != expected[1]:
            raise BackendError(f"model output has shape {emb.shape}, the manifest promises N x {expected[0]} x "
                               f"{expected[1]} x {expected[1]}; re-export the bundle")
        splits = np.cumsum([len(p.boxes) for p in prepared])[:-1]
        return np.split(emb, splits)

    def _prepare(self, image: np.ndarray, color_order: str) -> Prepared:
        return prepare(image, self.settings, self.bundle.output_stride, self._mean, self._std, color_order)

    def embed(self, image: np.ndarray, color_order: str | None = None) -> np.ndarray:
        """Stitched, L2-normalised pixel embeddings C x gh x gw of one image (before units; gh x gw is the grid
        of runtime.contract.window_layout, about H'/os x W'/os)."""
        encoded = self.encode(image, color_order)
        return stitch(encoded.windows, encoded.prepared, self.bundle.output_stride)

    def encoding_key(self) -> tuple[Any, ...]:
        """What window embeddings depend on: the bundle, the engine and the preprocessing settings (units, PAMR
        and the background rule come after the engine)."""
        s = self.settings
        return (str(self.bundle.path), self.backend, self.precision, s.short_side, s.long_side, s.window, s.stride,
                s.padding)

    def prepare(self, image: np.ndarray, color_order: str | None = None) -> Prepared:
        """Check, resize, normalise and cut one image into windows: the CPU work before the engine, apart so that a
        pipeline (runtime.stream) prepares the next frame while the engine runs this one."""
        order = self.color_order if color_order is None else check_color_order(color_order)
        return self._prepare(check_image(image), order)

    def encode(self, image: np.ndarray | Prepared, color_order: str | None = None) -> Encoded:
        """Run the engine on one image once (SAM's `set_image`); `decode` then labels it for any classes and
        background value without the engine, as `segment` would. `image` may be this Segmenter's `prepare(...)`."""
        prep = image if isinstance(image, Prepared) else self.prepare(image, color_order)
        return Encoded(prep, self._embed_windows([prep])[0], self.encoding_key())

    def decode(self, encoded: Encoded, classes: Sequence[str] | None = None, *, return_scores: bool = False,
               background_threshold: float | None = None, state: TemporalState | None = None) -> Result:
        """`segment(image, classes, ...)`'s Result for an image `encode`d by this Segmenter, or by one with the same
        bundle, engine and preprocessing (its own units, PAMR and background rule apply).

        state: a stream's `temporal_state()`, passed with every frame in order: the frame is labelled with what the
        state remembers of the frames before (runtime.temporal). None, or a state whose mode is "off", labels the
        frame alone, exactly as `segment` would."""
        if encoded.key != self.encoding_key():
            raise RuntimeInputError("this image was encoded with another bundle, engine or preprocessing "
                                    f"({encoded.key[1:]} vs {self.encoding_key()[1:]}); encode it with this Segmenter")
        text, names = self._classes(classes)
        threshold = check_background_threshold(background_threshold)
        if state is None or state.mode == "off":
            return self._result(encoded.prepared, encoded.windows, text, names, threshold, return_scores)
        if not isinstance(state, TemporalState):
            raise RuntimeInputError(f"state must be a TemporalState (Segmenter.temporal_state()), got "
                                    f"{type(state).__name__}")
        with state.lock:
            state.begin((encoded.prepared.resized_hw, encoded.prepared.grid_hw, names, self.settings.units))
            result = self._result(encoded.prepared, encoded.windows, text, names, threshold, return_scores, state)
            state.frames += 1
            return result

    def temporal_state(self, mode: str | None = None) -> TemporalState:
        """A new stream's memory for `decode(..., state=)`: the settings' `temporal` mode, or `mode` ("off", "ema",
        "units", "both"). One per stream; `reset()` it at a cut."""
        mode = self.settings.temporal if mode is None else check_mode(mode)
        if mode in ("units", "both") and self.settings.unit_scope == "window":
            raise SettingsError(f"temporal {mode!r} carries the image's meta-points over, which unit_scope 'window' "
                                "does not have; use temporal 'ema' or unit_scope 'image'")
        return TemporalState(mode)

    def _result(self, prep: Prepared, windows: np.ndarray, text: np.ndarray, names: tuple[str, ...],
                background_threshold: float | None, return_scores: bool,
                state: TemporalState | None = None) -> Result:
        """One image's window embeddings -> its Result (units, scores, PAMR, temporal smoothing, background rule,
        labels)."""
        settings, os_ = self.settings, self.bundle.output_stride
        scores, image_cos = image_scores(windows, prep, text, settings, os_, self._assign, state)
        with self._post_gate:
            scores = refine(scores, prep, settings, os_)
            if state is not None and state.smooths:
                scores = smooth_scores(scores, prep.image, state, os_, self._std)
            labels, full = scores_to_labels(scores, prep, background_threshold, return_scores, output_stride=os_,
                                            bg_rule=settings.bg_rule, image_cos=image_cos)
        label_names = ("background", *names) if background_threshold is not None else names
        return Result(labels, label_names, full)

    def segment(self, images: Any, classes: Sequence[str] | None = None, *, return_scores: bool = False,
                background_threshold: float | None = None, color_order: str | None = None) -> Result | list[Result]:
        """Label map(s) for a uint8 image H x W x 3 (or a list / N x H x W x 3 batch of them).

        The caller's buffer is read in place (C-contiguous or strided, writeable or read-only): it is neither
        copied nor modified; the first new array is the resized (or float-converted) image.
        classes: names from the vocabulary (None: all of it), label i is classes[i].
        color_order: "rgb" or "bgr" (OpenCV frames) for this call; None = the constructor's default.
        background_threshold: if set, label 0 is "background" and the classes shift to 1..K (VOC/Context/
        COCO-Object evaluation), decided by the settings' bg_rule: "groupvit" (default) and "softmax" take it as
        the threshold (GroupViT's 0.95 VOC / 0.35 Context / 0.95 COCO-Object), "tcl" as its constant background
        channel (0.5, or 0.4 with PAMR); `runtime.contract.default_background` gives a rule's value.
        return_scores: K x H x W class maps: cosines, or with background the groupvit scores / tcl masks.
        """
        text, names = self._classes(classes)
        background_threshold = check_background_threshold(background_threshold)
        order = self.color_order if color_order is None else check_color_order(color_order)
        arrays, batched = self._images(images)
        prepared = [self._prepare(img, order) for img in arrays]
        windows = self._embed_windows(prepared)
        results = [self._result(prep, win, text, names, background_threshold, return_scores)
                   for prep, win in zip(prepared, windows, strict=True)]
        return results if batched else results[0]

    __call__ = segment

    def stream(self, source: Any, classes: Sequence[str] | None = None, *, policy: str = "auto",
               background_threshold: float | None = None, queue_size: int = 2, temporal: str | None = None,
               **source_options: Any) -> Stream:
        """Label a video file, camera, URL, frame folder or iterable of frames, one `StreamRecord` per frame, reading,
        the engine and post-processing overlapping on threads (runtime/stream.py).

        >>> with seg.stream("clip.mp4", ["road", "car"]) as frames:
        ...     for rec in frames:          # rec.index, rec.timestamp, rec.frame, rec.result, rec.latency
        ...         frames.set_classes(["person"])   # from the next frame on, no engine run repeated

        policy: "every" (no frame dropped, in order), "latest" (live: stale frames dropped and counted, latency
            about one frame's processing time) or "auto" (latest for cameras and URLs, else every).
        queue_size: the bound of each queue between stages (latest keeps one frame waiting, the newest).
        temporal: the stream's temporal mode (runtime.temporal; None: the settings' `temporal`, "ema" by default).
        source_options: `runtime.video_sources.open_source`'s (connect_timeout, retries, fps, live).
        """
        from .stream import Stream

        return Stream(self, source, classes, policy=policy, background_threshold=background_threshold,
                      queue_size=queue_size, temporal=temporal, **source_options)

    def push_stream(self, classes: Sequence[str] | None = None, *, policy: str = "latest",
                    callback: Callable[[StreamRecord], Any] | None = None, background_threshold: float | None = None,
                    queue_size: int = 2, temporal: str | None = None) -> PushStream:
        """The stream for callback-driven apps (ROS2, GStreamer appsink): `put(rgb)` frames as they arrive, take
        records from `get()`, by iterating, or through `callback` (called on the stream's post-processing thread).

        >>> live = seg.push_stream(["person"], callback=publish)
        >>> live.put(rgb_uint8)             # in the subscriber's callback; False when a waiting frame was dropped
        >>> live.close()
        """
        from .stream import PushStream

        return PushStream(self, classes, policy=policy, callback=callback, background_threshold=background_threshold,
                          queue_size=queue_size, temporal=temporal)

    def describe(self) -> dict[str, Any]:
        """What runs: backend, provider actually used, model file, dense mode, settings and assignment choice."""
        s = self.settings
        info = {
            "bundle": str(self.bundle.path),
            "arch": self.bundle.arch,
            "dense_mode": (self.bundle.manifest.get("backbone") or {}).get("dense_mode"),
            "backend": self.backend,
            "precision": self.precision,
            "engine_reason": self.engine_reason,
            **self.engine.describe(),
            "embed_dim": self.bundle.embed_dim,
            "output_stride": self.bundle.output_stride,
            **{name: list(value) if isinstance(value, tuple) else value for name, value in s.to_dict().items()},
            "assignment": self.assignment,
            "assignment_reason": self.assignment_reason,
            "max_batch": self.max_batch,
            "num_threads": self.num_threads,
            "color_order": self.color_order,
            "concurrent_postprocessing": self.post_slots,
            "vocabulary": {"classes": len(self.class_names),
                           "path": str(self._vocab.path) if self._vocab is not None and self._vocab.path else None},
            "cpu_count": os.cpu_count(),
        }
        return info

    def __repr__(self) -> str:
        d = self.describe()
        return (f"Segmenter({d['bundle']!r}, backend={d['backend']}, provider={d['provider']}, model={d['model']}, "
                f"dense_mode={d['dense_mode']}, window={d['window']}/{d['stride']}, "
                f"units={d['units']}/{d['unit_scope']}, bg_rule={d['bg_rule']}, pamr={d['pamr']}, "
                f"assignment={d['assignment']})")


# Segmenter's own arguments (engine choices and the like), which are never inference settings
_OWN_ARGUMENTS = frozenset(inspect.signature(Segmenter).parameters) - {"overrides"}


def _pick_settings(bundle: Bundle, settings: InferenceSettings | Mapping[str, Any] | None,
                   overrides: dict[str, Any]) -> InferenceSettings:
    """The bundle's settings with the caller's in their place, each checked against the declaration."""
    if isinstance(settings, InferenceSettings):  # (an InferenceConfig's extras are not the runtime's)
        settings = {name: getattr(settings, name) for name in SETTING_SPECS}
    given = dict(settings or {})
    own = [name for name in given if name in _OWN_ARGUMENTS]
    if own:
        raise SettingsError(f"{own[0]} is an argument of Segmenter itself, not an inference setting: pass "
                            f"Segmenter(bundle, {own[0]}=...) outside `settings`")
    twice = sorted(given.keys() & overrides.keys())
    if twice:
        raise SettingsError(f"{twice[0]} is given twice, in settings= and as a keyword argument; give it once")
    given = {name: value for name, value in {**given, **overrides}.items() if value is not None}
    window = bundle.inference.window  # the graph's: checked first, before the rules that depend on it
    if given.get("window", window) != window:
        raise SettingsError(f"window {given['window']!r} differs from the window {window} the bundle was exported "
                            f"with (its graph's fixed input); re-export with mgca-export --window {given['window']!r} "
                            "for another window")
    if not given:
        return bundle.inference
    return bundle.inference.with_overrides(given).validate(bundle.output_stride)


def _array_like(value: Any) -> bool:
    """An array, or an object that hands numpy its pixels (a PIL image): not a nested list of numbers."""
    return isinstance(value, np.ndarray) or hasattr(value, "__array_interface__") or hasattr(value, "__array__")


def check_background_threshold(value: Any) -> float | None:
    """None, or a real number in [0, 1] as a float; anything else (a string, NaN, 1.5) is a RuntimeInputError."""
    if value is None:
        return None
    low, high = BACKGROUND_RANGE
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not low <= float(value) <= high:
        raise RuntimeInputError(f"background_threshold must be a number in [{low:g}, {high:g}] (or None for no "
                                f"background), got {value!r}")
    return float(value)


__all__ = ["Segmenter", "Result", "Encoded", "check_background_threshold"]
