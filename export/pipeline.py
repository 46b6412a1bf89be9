"""`export_bundle(model, out, options)`: a trained model -> a bundle directory, callable from Python.

    from export import ExportOptions, export_bundle
    from mgca.checkpoint import load_model

    model, config = load_model("runs/mgca/last.pt")
    result = export_bundle(model, "bundle/", ExportOptions(vocab=["road", "car", "sky"], int8=True), config=config)

Steps: fp32 ONNX graph -> parity against PyTorch (the export fails when the relative error exceeds
`parity_tol`) -> text cache of `vocab` -> int8 QDQ graph (with `int8`, `calib_images` or a TensorRT int8
engine) -> TensorRT engines -> manifest, written last. `mgca-export` (`export.cli`) only parses arguments
into an `ExportOptions`. The bundle's format (file names, manifest fields) belongs to `runtime.bundle`;
this module computes what goes in.
"""
from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.quantize import CALIBRATION_METHODS
from mgca.prompts import DEFAULT_TEMPLATE_SET, template_average
from runtime.contract import (
    DEFAULT_SETTINGS,
    MANIFEST_FILE,
    MODEL_FILES,
    SETTING_SPECS,
    TEXT_CACHE_FILE,
    InferenceSettings,
)
from runtime.errors import MgcaError

TRT_PRECISIONS = ("fp16", "int8")


class ExportOptionsError(MgcaError, ValueError):
    """A bad combination of export options; the message says which and how to fix it."""


@dataclass
class _ExportFields:
    """ExportOptions' fields; `ExportOptions` adds the constructor that takes the settings flat too."""

    # the manifest's inference settings the caller gives (names, ranges: runtime.contract.SETTING_SPECS); the rest
    # follow the window (`window`, default 448, is the graph's fixed input): short side = window, stride = half of it
    # (InferenceSettings.for_window), every other setting its contract default
    inference: Mapping[str, Any] = field(default_factory=dict)
    optimize: bool = True  # onnxscript graph optimisation and constant folding
    # vocabulary: class names for text_cache.npz and the parity labels (None: no cache, random class vectors)
    vocab: Sequence[str] | None = None
    vocab_prompts: Sequence[str | None] | None = None  # per class its own prompt (class file `name: prompt`) or None
    templates: str | Sequence[str] = DEFAULT_TEMPLATE_SET  # a template set's name, a template file, or templates
    # int8 QDQ graph
    int8: bool = False
    calib_images: str | Path | None = None  # folder of calibration images (implies int8; default: synthetic images)
    calib_limit: int = 32
    calib_method: str = "minmax"
    eval_images: str | Path | None = None  # labelled set for the int8 mIoU report: images ...
    eval_labels: str | Path | None = None  # ... and same-stem PNG labels (class ids in vocab order, 255 = ignore)
    # NNCF int8 graph for OpenVINO, beside the QDQ one: None = when nncf and openvino are installed
    nncf: bool | None = None
    # TensorRT engines (a GPU and tensorrt needed)
    trt: Sequence[str] = ()
    trt_max_batch: int = 16
    trt_opt_batch: int | None = None
    trt_workspace_gib: float = 4.0
    timing_cache: str | Path | None = None
    # parity of the fp32 graph with PyTorch
    parity_images: str | Path | None = None  # folder of real images (default: synthetic ones)
    parity_tol: float = 1e-4
    parity_windows: int = 8
    threads: int = 0  # onnxruntime intra-op threads for the checks (0 = all cores)


class ExportOptions(_ExportFields):
    """What to export and how; every field has the CLI flag of the same name (`mgca-export --help`).

    The inference settings nest in `inference`, and may be given flat as well:
    `ExportOptions(window=64, units=4, int8=True)` is `ExportOptions(inference={"window": 64, "units": 4}, int8=True)`.
    """

    def __init__(self, inference: Mapping[str, Any] | None = None, **options: Any):
        flat = {name: options.pop(name) for name in SETTING_SPECS if name in options}
        twice = sorted(flat.keys() & dict(inference or {}).keys())
        if twice:
            raise ExportOptionsError(f"{twice[0]} is given twice, in inference= and on its own; give it once")
        super().__init__(inference={**(inference or {}), **flat}, **options)

    @property
    def wants_int8(self) -> bool:
        return self.int8 or bool(self.calib_images) or "int8" in self.trt or bool(self.nncf)

    def settings(self, output_stride: int, patch_size: int | None = None) -> InferenceSettings:
        """The validated inference settings for a model of this output stride (and patch size)."""
        given = dict(self.inference)
        window = given.pop("window", None)
        window = DEFAULT_SETTINGS.window if window is None else window
        return InferenceSettings.for_window(window, output_stride, **given).validate(output_stride, patch_size)

    def check(self) -> ExportOptions:
        """Everything that can be checked before the slow steps (and before a model is loaded)."""
        from .tensorrt_build import require_tensorrt

        DEFAULT_SETTINGS.with_overrides(self.inference)  # each name declared and each value in its range, now
        if any(p not in TRT_PRECISIONS for p in self.trt):
            raise ExportOptionsError(f"trt precisions must be among {TRT_PRECISIONS}, got {list(self.trt)}")
        if self.trt:
            require_tensorrt()
        if bool(self.eval_images) != bool(self.eval_labels):
            raise ExportOptionsError("eval_images (--eval-images) and eval_labels (--eval-labels) go together")
        if self.eval_labels and not self.vocab:
            raise ExportOptionsError("eval_labels (--eval-labels) needs a vocabulary (--vocab): label ids "
                                     "index its classes")
        if not (isinstance(self.parity_tol, (int, float)) and math.isfinite(self.parity_tol) and self.parity_tol > 0):
            raise ExportOptionsError(f"parity_tol (--parity-tol) must be a positive number, got {self.parity_tol}")
        if self.calib_method not in CALIBRATION_METHODS:
            raise ExportOptionsError(f"calib_method must be one of {CALIBRATION_METHODS}, got {self.calib_method!r}")
        for name in ("calib_images", "parity_images", "eval_images"):
            folder = getattr(self, name)
            if folder and not Path(folder).is_dir():
                raise ExportOptionsError(f"{name} (--{name.replace('_', '-')}) {folder} is not a directory")
        if self.vocab is not None:
            self.resolved_templates()
        return self

    def resolved_templates(self) -> tuple[str | None, tuple[str, ...]]:
        """(label, templates): a set name or file through `export.text_cache.resolve_templates`, a list as it is."""
        from .text_cache import resolve_templates

        if isinstance(self.templates, str):
            return resolve_templates(self.templates)
        return None, tuple(self.templates)


@dataclass
class ExportResult:
    """What `export_bundle` wrote: the bundle directory, its manifest (as written) and the fp32 parity report."""

    path: Path
    manifest: dict[str, Any]
    parity: Any  # export.parity.ParityReport
    seconds: float
    files: dict[str, str] = field(default_factory=dict)  # manifest `models` key / "text_cache" -> file name


def versions() -> dict[str, str]:
    """The tool versions that made the bundle (informational)."""
    out = {"python": platform.python_version()}
    for module in ("torch", "onnx", "onnxruntime", "onnxscript", "open_clip"):
        try:
            mod = __import__(module)
            out[module] = str(getattr(mod, "__version__", "?"))
        except Exception:  # informational only
            continue
    try:
        from importlib.metadata import version

        out["mgca"] = version("mgca")
    except Exception:  # not installed as a distribution (source checkout)
        pass
    return out


def export_bundle(model, out: str | Path, options: ExportOptions | None = None, *, config=None,
                  log: Callable[[str], None] | None = None) -> ExportResult:
    """Export `model` (an `mgca.model.MGCA`, e.g. from `mgca.checkpoint.load_model`) to the bundle directory `out`.

    `config` (the checkpoint's `mgca.config.Config`) is recorded in the manifest; `log` receives one line per
    step (default: silent). The bundle is built beside `out` and replaces the bundle files there only once complete
    and checked (`runtime.bundle.staged_bundle`), so on any failure a bundle already in `out` is left as it was.
    Raises ParityError (fp32 parity failed: nothing is shipped), ExportError, TensorRTBuildError, or a one-line
    ValueError subclass for bad options or input.
    """
    from runtime.bundle import staged_bundle

    say = log or (lambda message: None)
    options = (options or ExportOptions()).check()
    started = time.perf_counter()
    settings = options.settings(int(model.output_stride), int(model.backbone.patch_size))
    final = Path(out).expanduser().resolve()
    with staged_bundle(out) as staging:  # the old bundle stays until this one is complete and checked
        report, files = _write_bundle(model, staging, options, settings, config,
                                      lambda line: say(line.replace(str(staging), str(final))))
        check_complete(staging)
    seconds = time.perf_counter() - started
    path = final / MANIFEST_FILE
    say(f"wrote {path}; bundle {final} done in {seconds:.1f} s")
    return ExportResult(final, json.loads(path.read_text()), report, seconds, files)


def check_complete(root: Path) -> None:
    """The new bundle loads and every file its manifest names matches its sha256, before it replaces the old one."""
    from runtime.bundle import load_bundle

    bundle = load_bundle(root)
    for path in [*bundle.models.values(), bundle.text_cache]:
        if path is not None:
            bundle.verify(path)


def _write_bundle(model, root: Path, options: ExportOptions, settings: InferenceSettings, config,
                  say: Callable[[str], None]) -> tuple[Any, dict[str, str]]:
    """Every file of the bundle, manifest last, into the (staging) folder `root`: (fp32 parity report, files)."""
    from calibration.reader import ImageFolderCalibrationReader, Preprocess, read_images, synthetic_images
    from runtime.bundle import manifest_dict, write_manifest
    from runtime.engines import OrtEngine
    from runtime.text_cache import write_text_cache

    from .onnx_export import OPSET, decoder_sha256, export_onnx
    from .parity import check_parity, parity_windows, random_class_embeddings, run_torch
    from .text_cache import text_embeddings

    os_ = int(model.output_stride)
    backbone = model.backbone
    window = settings.window
    models: dict[str, str | None] = dict.fromkeys(MODEL_FILES)

    t = time.perf_counter()
    onnx_path = export_onnx(model, root / MODEL_FILES["onnx"], window=window, optimize=options.optimize)
    models["onnx"] = onnx_path.name
    grid = window // os_
    say(f"exported {onnx_path} ({onnx_path.stat().st_size / 2**20:.1f} MiB, opset {OPSET}, input image "
        f"N x 3 x {window} x {window}, output embeddings N x {model.embed_dim} x {grid} x {grid}; onnx.checker ok) "
        f"in {time.perf_counter() - t:.1f} s")

    text_cache = None
    names = list(options.vocab) if options.vocab is not None else None
    if names is not None:
        template_label, templates = options.resolved_templates()
        average = template_average(template_label)
        class_emb = text_embeddings(backbone, names, templates, average, options.vocab_prompts)
        cache = write_text_cache(root / TEXT_CACHE_FILE, class_emb, names, templates, backbone.identity.to_dict(),
                                 template_label, average)
        text_cache = cache.name
        say(f"wrote {cache}: {len(names)} classes x {len(templates)} templates ({template_label})")
    else:
        class_emb = random_class_embeddings(20, int(model.embed_dim))

    preprocess = Preprocess(settings, tuple(backbone.mean), tuple(backbone.std), os_)
    parity_images = read_images(options.parity_images, 8)[0] if options.parity_images else None
    sets = parity_windows(preprocess, parity_images, max_windows=options.parity_windows)
    reference = {name: run_torch(model, w) for name, w in sets.items()}
    fp32 = OrtEngine(onnx_path, device="cpu", num_threads=options.threads or None)
    report = check_parity(model, onnx_path, sets, class_emb, "fp32", options.parity_tol, engine=fp32,
                          reference=reference)
    say(report.summary() + f" [sets: {', '.join(sets)}]")
    parity = {"max_abs_err": report.max_abs_err, "rel_err": report.rel_err, "min_cosine": report.min_cosine,
              "label_agreement": report.label_agreement, "num_windows": report.num_windows,
              "tolerance": options.parity_tol,
              "classes": "vocabulary" if names else "random unit vectors", "sets": report.per_set}
    extra: dict[str, Any] = {}
    # every window of the parity sets and PyTorch's embeddings of them: what the reduced precisions are held to
    all_windows, fp32_embeddings = np.concatenate(list(sets.values())), np.concatenate([reference[n] for n in sets])
    bf16 = openvino_bf16_parity(onnx_path, all_windows, fp32_embeddings, class_emb, options)
    if bf16 is not None:
        parity["openvino_bf16"] = bf16
        say(f"OpenVINO bf16 vs fp32 (this CPU): label agreement {bf16['label_agreement']:.2%}, mean cosine "
            f"{bf16['mean_cosine']:.5f}")

    if options.wants_int8:
        from calibration.quantize import evaluate_int8, label_windows, quantize_int8, read_labelled_set

        if options.calib_images:
            source, calib_desc = options.calib_images, str(Path(options.calib_images).resolve())
        else:
            say("warning: no calibration images given (--calib-images): calibrating int8 on synthetic images; give a "
                "folder of real images from the target domain for a usable int8 model")
            source, calib_desc = synthetic_images(options.calib_limit, (window * 3 // 4, window), seed=1), "synthetic"
        reader = ImageFolderCalibrationReader(source, preprocess, limit=options.calib_limit)
        t = time.perf_counter()
        result = quantize_int8(onnx_path, root / MODEL_FILES["onnx_int8"], reader, method=options.calib_method)
        models["onnx_int8"] = result.path.name
        int8 = OrtEngine(result.path, device="cpu", num_threads=options.threads or None)
        evaluation = evaluate_int8(fp32, int8, all_windows, class_emb, fp32_embeddings=fp32_embeddings)
        if options.eval_images:
            images, labels = read_labelled_set(options.eval_images, options.eval_labels, limit=64)
            eval_windows = np.concatenate([preprocess.windows(im) for im in images])
            eval_labels = np.concatenate([label_windows(lb, preprocess) for lb in labels])
            labelled = evaluate_int8(fp32, int8, eval_windows, class_emb, labels=eval_labels)
            keys = ("num_windows", "miou_fp32", "miou_int8", "miou_drop", "label_agreement")
            evaluation["labelled_set"] = {k: labelled[k] for k in keys}
        parity["int8"] = evaluation
        extra["calibration"] = {"images": calib_desc, "num_images": reader.num_images,
                                "num_windows": len(reader.windows),
                                "method": result.method, "per_channel": True, "symmetric": True,
                                "quantized_ops": "Conv, MatMul/Gemm with constant weights",
                                "excluded_nodes": result.excluded_nodes}
        line = (f"wrote {result.path} ({result.path.stat().st_size / 2**20:.1f} MiB, {result.method} calibration on "
                f"{len(reader.windows)} windows of {reader.num_images} images, {time.perf_counter() - t:.1f} s): "
                f"int8 vs fp32 label agreement {evaluation['label_agreement']:.2%}, "
                f"mIoU vs fp32 {evaluation['miou_vs_fp32']:.3f}, mean cosine {evaluation['mean_cosine']:.4f}")
        if "labelled_set" in evaluation:
            ls = evaluation["labelled_set"]
            line += (f"; labelled set mIoU fp32 {ls['miou_fp32']:.4f} int8 {ls['miou_int8']:.4f} "
                     f"(drop {ls['miou_drop']:+.4f})")
        say(line)
        if options.nncf is not False:
            extra["nncf"] = export_nncf_int8(onnx_path, root, reader.windows, options, all_windows, fp32_embeddings,
                                             class_emb, models, parity, say)

    engines = {}
    for precision in dict.fromkeys(options.trt):
        from .tensorrt_build import build_engine

        source_onnx = onnx_path if precision == "fp16" else root / MODEL_FILES["onnx_int8"]
        key = f"trt_{precision}"
        engine = build_engine(source_onnx, root / MODEL_FILES[key], precision, window,
                              max_batch=options.trt_max_batch, opt_batch=options.trt_opt_batch,
                              workspace_gib=options.trt_workspace_gib, timing_cache=options.timing_cache)
        models[key] = engine.path.name
        engines[precision] = engine.to_dict()
        say(f"built {engine.path} (TensorRT {engine.tensorrt_version}, batch {engine.min_batch}/{engine.opt_batch}/"
            f"{engine.max_batch}, {engine.fp32_layers} layers pinned to fp32) in {engine.seconds:.1f} s")
    if engines:
        extra["tensorrt"] = engines

    manifest = manifest_dict(
        embed_dim=int(backbone.embed_dim), patch_size=int(backbone.patch_size), output_stride=os_,
        mean=tuple(backbone.mean), std=tuple(backbone.std), settings=settings, backbone=backbone.identity.to_dict(),
        models=models, text_cache=text_cache, decoder_sha256=decoder_sha256(model),
        decoder=asdict(config.decoder) if config is not None else None, parity=parity, **extra,
        exporter={"tool": "mgca-export", "opset": OPSET, **versions()})
    write_manifest(root, manifest)
    return report, {key: name for key, name in {**models, "text_cache": text_cache}.items() if name}


def openvino_bf16_parity(onnx_path: Path, windows: np.ndarray, fp32_embeddings: np.ndarray, class_emb: np.ndarray,
                         options: ExportOptions) -> dict[str, Any] | None:
    """OpenVINO bf16's agreement with the PyTorch fp32 reference on the parity windows, where this CPU runs bf16
    natively (what `backend="auto"` would pick here); None without openvino or native bf16. Informational: bf16
    rounding differs between CPUs, so the runtime machine's own figure may differ slightly."""
    from calibration.quantize import evaluate_int8
    from runtime.openvino_engine import OpenVinoEngine, cpu_capabilities

    if "BF16" not in cpu_capabilities():
        return None
    engine = OpenVinoEngine(onnx_path, device="cpu", precision="bf16", num_threads=options.threads or None)
    result = evaluate_int8(None, engine, windows, class_emb, fp32_embeddings=fp32_embeddings)
    return {key: result[key] for key in ("num_windows", "label_agreement", "miou_vs_fp32", "mean_cosine",
                                         "max_abs_err")}


def export_nncf_int8(onnx_path: Path, root: Path, calib_windows: np.ndarray, options: ExportOptions,
                     windows: np.ndarray, fp32_embeddings: np.ndarray, class_emb: np.ndarray,
                     models: dict[str, str | None], parity: dict[str, Any],
                     say: Callable[[str], None]) -> dict[str, Any] | None:
    """NNCF's int8 graph for OpenVINO, kept only where it is nearer fp32 than the QDQ graph that OpenVINO would run
    otherwise (both run by OpenVINO on the parity windows: higher mean cosine to the fp32 embeddings wins). Which
    graph wins depends on the model and the calibration images (measured both ways: docs/engines.md), so it is
    decided per export. `parity["openvino_int8"]` holds the kept graph's agreement; None (with a note) when
    nncf/openvino are missing and not demanded."""
    from calibration.nncf_quantize import NNCF_HINT, nncf_available, quantize_nncf
    from calibration.quantize import evaluate_int8
    from runtime.openvino_engine import OpenVinoEngine

    if not nncf_available():
        if options.nncf:
            raise ExportOptionsError(f"--nncf needs nncf and openvino; {NNCF_HINT}")
        say(f"note: no NNCF int8 graph for OpenVINO (nncf/openvino not installed: {NNCF_HINT})")
        return None
    t = time.perf_counter()
    result = quantize_nncf(onnx_path, root / MODEL_FILES["onnx_int8_nncf"], calib_windows)
    threads = options.threads or None
    scores = {}
    for key in ("onnx_int8_nncf", "onnx_int8"):
        engine = OpenVinoEngine(root / MODEL_FILES[key], device="cpu", precision="int8", num_threads=threads)
        scores[key] = evaluate_int8(None, engine, windows, class_emb, fp32_embeddings=fp32_embeddings)
    nncf, qdq = scores["onnx_int8_nncf"], scores["onnx_int8"]
    kept = nncf["mean_cosine"] > qdq["mean_cosine"]
    if kept:
        models["onnx_int8_nncf"] = result.path.name
    else:
        result.path.unlink()
    parity["openvino_int8"] = {**scores["onnx_int8_nncf" if kept else "onnx_int8"],
                               "graph": MODEL_FILES["onnx_int8_nncf" if kept else "onnx_int8"]}
    say(f"NNCF int8 ({result.num_calibration_windows} calibration windows, {time.perf_counter() - t:.1f} s) vs the QDQ "
        f"graph, both on OpenVINO: mean cosine to fp32 {nncf['mean_cosine']:.5f} vs {qdq['mean_cosine']:.5f}, "
        f"label agreement {nncf['label_agreement']:.2%} vs {qdq['label_agreement']:.2%}: "
        + (f"kept {result.path}" if kept else "not kept; OpenVINO int8 runs the QDQ graph"))
    return {"kept": kept, "windows": result.num_calibration_windows, "preset": "transformer, mixed",
            "smooth_quant": True, "fast_bias_correction": True, "seconds": round(result.seconds, 1),
            "mean_cosine": nncf["mean_cosine"], "qdq_mean_cosine_openvino": qdq["mean_cosine"],
            "label_agreement": nncf["label_agreement"], "qdq_label_agreement_openvino": qdq["label_agreement"]}


__all__ = ["ExportOptions", "ExportOptionsError", "ExportResult", "export_bundle", "versions"]
