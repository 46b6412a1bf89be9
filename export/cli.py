"""`mgca-export`: checkpoint -> self-describing bundle directory; `mgca-export text`: vocabulary -> text cache.

    mgca-export --checkpoint CKPT --out DIR [--onnx] [--int8] [--calib-images DIR] [--trt fp16|int8]
                [--vocab FILE] [--templates tcl] [--window 448] [--parity-images DIR] ...
    mgca-export text --checkpoint CKPT --vocab classes.txt [--templates tcl] --out text_cache.npz
    mgca-export text --checkpoint CKPT --dataset voc21 --out voc21_text.npz   # a benchmark's classes

The bundle always holds model.onnx (fp32, parity-checked against PyTorch: the export fails when
the relative error exceeds --parity-tol) and manifest.json; model.int8.onnx with --int8,
--calib-images or --trt int8; TensorRT engines with --trt; text_cache.npz with --vocab.
Exit status: 0 done; 1 the export ran but failed its parity check or a TensorRT build failed;
2 bad input or a missing optional dependency (a one-line message on stderr).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

PROG = "mgca-export"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UsageError(ValueError):
    """Bad combination of arguments."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def export_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Export an MGCA checkpoint to a bundle directory (ONNX, int8 QDQ ONNX, "
                     "TensorRT engines, text cache, manifest.json). `mgca-export text --help` for the text cache alone.")
    parser.add_argument("--checkpoint", required=True, help="decoder checkpoint written by python -m mgca.train")
    parser.add_argument("--out", required=True, help="bundle directory to write (created; a previous bundle there is replaced)")
    parser.add_argument("--clip-weights", help="where the CLIP weights file of the checkpoint lives now (if moved)")
    parser.add_argument("--onnx", action="store_true", help="write model.onnx (always done; accepted for clarity)")
    parser.add_argument("--window", type=_positive_int, default=448, help="fixed input window of the graph (default 448)")
    parser.add_argument("--short-side", type=_positive_int, help="manifest inference.short_side (default: the window)")
    parser.add_argument("--stride", type=_positive_int, help="manifest inference.stride (default: window / 2)")
    parser.add_argument("--units", type=int, default=36, help="manifest inference.units (default 36; 0 = pixel units)")
    parser.add_argument("--unit-scope", choices=("image", "window"), default="image")
    parser.add_argument("--no-optimize", action="store_true", help="skip onnxscript graph optimisation/constant folding")
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (QDQ static int8)")
    parser.add_argument("--calib-images", help="folder of calibration images (implies --int8; default: synthetic images, with a warning)")
    parser.add_argument("--calib-limit", type=_positive_int, default=32, help="at most this many calibration images (default 32)")
    parser.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="minmax")
    parser.add_argument("--eval-images", help="labelled set for the int8 mIoU report: images folder")
    parser.add_argument("--eval-labels", help="labelled set: folder of same-stem PNG labels (class ids in --vocab order, 255 = ignore)")
    parser.add_argument("--trt", action="append", choices=("fp16", "int8"), default=[],
                        help="build a TensorRT engine (repeatable; needs tensorrt and an NVIDIA GPU)")
    parser.add_argument("--trt-max-batch", type=_positive_int, default=16, help="optimisation profile max batch (default 16)")
    parser.add_argument("--trt-opt-batch", type=_positive_int, help="optimisation profile opt batch (default max/2)")
    parser.add_argument("--trt-workspace-gib", type=float, default=4.0, help="builder workspace limit in GiB (default 4)")
    parser.add_argument("--timing-cache", help="TensorRT timing cache file, loaded if present and saved after the build")
    parser.add_argument("--vocab", help="class names, one per line: writes text_cache.npz and uses them for the parity labels")
    parser.add_argument("--templates", default="tcl", help="prompt template set (tcl, single, plain, none) or a file of templates")
    parser.add_argument("--parity-images", help="folder of real images for the parity check (default: synthetic images)")
    parser.add_argument("--parity-tol", type=float, default=1e-4, help="max fp32 relative error (default 1e-4)")
    parser.add_argument("--parity-windows", type=_positive_int, default=8, help="windows per parity set (default 8)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads for the checks (0 = all cores)")
    return parser


def text_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=f"{PROG} text", description="Write a text-embedding cache (.npz) for a fixed vocabulary.")
    parser.add_argument("--checkpoint", required=True, help="decoder checkpoint (identifies the CLIP backbone)")
    vocabulary = parser.add_mutually_exclusive_group(required=True)
    vocabulary.add_argument("--vocab", help="class names, one per line ('#' comments and blank lines skipped)")
    vocabulary.add_argument("--dataset", help="a benchmark's class names (voc21, context60, coco_object, ade20k, cityscapes, ...), "
                                              "for `mgca-eval --engine ... --text-cache`")
    parser.add_argument("--templates", default=None, help="prompt template set (tcl, single, plain, none) or a file of templates "
                        "(default: the --dataset's protocol, else tcl)")
    parser.add_argument("--out", required=True, help="output .npz file")
    parser.add_argument("--clip-weights", help="where the CLIP weights file of the checkpoint lives now (if moved)")
    return parser


def _say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def _load(checkpoint: str, clip_weights: str | None):
    from mgca.checkpoint import load_model

    return load_model(checkpoint, clip_weights=clip_weights)


def _dataset_classes(name: str) -> list[str]:
    """The names a benchmark embeds (background is a threshold, never a class embedding)."""
    from mgca.evalsets import get_spec

    return list(get_spec(name).prompt_classes)


def run_text(args: argparse.Namespace) -> int:
    from .text_cache import build_text_cache, read_vocab, resolve_templates

    names = read_vocab(args.vocab) if args.vocab else _dataset_classes(args.dataset)
    if args.templates is None:  # the prompts mgca-eval uses for this dataset
        from mgca.evalsets import get_spec

        args.templates = get_spec(args.dataset).protocol.templates if args.dataset else "tcl"
    label, templates = resolve_templates(args.templates)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise UsageError(f"--out {out} must be a .npz file")
    model, _ = _load(args.checkpoint, args.clip_weights)
    start = time.perf_counter()
    path = build_text_cache(model, names, args.templates, out)
    identity = model.backbone.identity
    _say(f"wrote {path}: {len(names)} classes x {len(templates)} templates ({label}), dim {model.embed_dim}, "
         f"backbone {identity.arch} text_sha256 {identity.text_sha256[:12]} ({time.perf_counter() - start:.1f} s)")
    return 0


def _inference_settings(args: argparse.Namespace, output_stride: int) -> dict:
    window = args.window
    stride = args.stride or max(output_stride, (window // 2) // output_stride * output_stride)
    short_side = args.short_side or window
    if stride % output_stride or stride > window:
        raise UsageError(f"--stride {stride} must be a multiple of the output stride {output_stride} and <= --window {window}")
    if args.units < 0:
        raise UsageError(f"--units must be >= 0, got {args.units}")
    return {"short_side": short_side, "window": window, "stride": stride, "units": args.units, "unit_scope": args.unit_scope}


def run_export(args: argparse.Namespace) -> int:
    import numpy as np

    from calibration.reader import ImageFolderCalibrationReader, Preprocess, read_images, synthetic_images

    from . import bundle as bundle_mod
    from .onnx_export import ExportError, check_window, decoder_sha256, export_onnx
    from .parity import check_parity, ort_session, parity_windows, random_class_embeddings, run_torch
    from .tensorrt_build import build_engine, require_tensorrt
    from .text_cache import read_vocab, resolve_templates, text_embeddings, write_text_cache

    started = time.perf_counter()
    # Fail fast on everything that can be checked before the slow steps.
    if args.trt:
        require_tensorrt()
    if bool(args.eval_images) != bool(args.eval_labels):
        raise UsageError("--eval-images and --eval-labels go together")
    if args.eval_labels and not args.vocab:
        raise UsageError("--eval-labels needs --vocab: label ids index the vocabulary's classes")
    if args.parity_tol <= 0:
        raise UsageError(f"--parity-tol must be positive, got {args.parity_tol}")
    names = read_vocab(args.vocab) if args.vocab else None
    template_label, templates = resolve_templates(args.templates) if args.vocab else (None, ())
    for flag, folder in (("--calib-images", args.calib_images), ("--parity-images", args.parity_images), ("--eval-images", args.eval_images)):
        if folder and not Path(folder).is_dir():
            raise UsageError(f"{flag} {folder} is not a directory")
    want_int8 = args.int8 or bool(args.calib_images) or "int8" in args.trt

    model, cfg = _load(args.checkpoint, args.clip_weights)
    try:
        window = check_window(model, args.window)
    except ExportError as err:
        raise UsageError(str(err)) from None
    os_ = int(model.output_stride)
    inference = _inference_settings(args, os_)
    backbone = model.backbone
    root = bundle_mod.start_bundle(args.out)
    models: dict[str, str | None] = {"onnx": None, "onnx_int8": None, "trt_fp16": None, "trt_int8": None}

    t = time.perf_counter()
    onnx_path = export_onnx(model, root / bundle_mod.FILES["onnx"], window=window, optimize=not args.no_optimize)
    models["onnx"] = onnx_path.name
    _say(f"exported {onnx_path} ({onnx_path.stat().st_size / 2**20:.1f} MiB, opset 18, input image N x 3 x {window} x {window}, "
         f"output embeddings N x {model.embed_dim} x {window // os_} x {window // os_}; onnx.checker ok) in {time.perf_counter() - t:.1f} s")

    text_cache = None
    if names is not None:
        class_emb = text_embeddings(backbone, names, templates)
        cache = write_text_cache(root / bundle_mod.FILES["text_cache"], class_emb, names, templates,
                                 backbone.identity.to_dict(), template_label)
        text_cache = cache.name
        _say(f"wrote {cache}: {len(names)} classes x {len(templates)} templates ({template_label})")
    else:
        class_emb = random_class_embeddings(20, int(model.embed_dim))

    preprocess = Preprocess(window, tuple(backbone.mean), tuple(backbone.std), os_,
                            short_side=inference["short_side"], stride=inference["stride"])
    parity_images = read_images(args.parity_images, 8)[0] if args.parity_images else None
    sets = parity_windows(preprocess, parity_images, max_windows=args.parity_windows)
    reference = {name: run_torch(model, w) for name, w in sets.items()}
    fp32_session = ort_session(onnx_path, args.threads)
    report = check_parity(model, onnx_path, sets, class_emb, "fp32", args.parity_tol, session=fp32_session, reference=reference)
    _say(report.summary() + f" [sets: {', '.join(sets)}]")
    parity = {"max_abs_err": report.max_abs_err, "rel_err": report.rel_err, "min_cosine": report.min_cosine,
              "label_agreement": report.label_agreement, "num_windows": report.num_windows, "tolerance": args.parity_tol,
              "classes": "vocabulary" if names else "random unit vectors", "sets": report.per_set}
    extra: dict = {}

    if want_int8:
        from calibration.quantize import evaluate_int8, label_windows, quantize_int8, read_labelled_set

        if args.calib_images:
            source, calib_desc = args.calib_images, str(Path(args.calib_images).resolve())
        else:
            _say("warning: no --calib-images given: calibrating int8 on synthetic images; give a folder of real images "
                 "from the target domain for a usable int8 model")
            source, calib_desc = synthetic_images(args.calib_limit, (window * 3 // 4, window), seed=1), "synthetic"
        reader = ImageFolderCalibrationReader(source, preprocess, limit=args.calib_limit)
        t = time.perf_counter()
        result = quantize_int8(onnx_path, root / bundle_mod.FILES["onnx_int8"], reader, method=args.calib_method)
        models["onnx_int8"] = result.path.name
        int8_session = ort_session(result.path, args.threads)
        all_windows = np.concatenate(list(sets.values()))
        evaluation = evaluate_int8(fp32_session, int8_session, all_windows, class_emb,
                                   fp32_embeddings=np.concatenate([reference[n] for n in sets]))
        if args.eval_images:
            images, labels = read_labelled_set(args.eval_images, args.eval_labels, limit=64)
            eval_windows = np.concatenate([preprocess.windows(im) for im in images])
            eval_labels = np.concatenate([label_windows(lb, preprocess) for lb in labels])
            labelled = evaluate_int8(fp32_session, int8_session, eval_windows, class_emb, labels=eval_labels)
            evaluation["labelled_set"] = {k: labelled[k] for k in ("num_windows", "miou_fp32", "miou_int8", "miou_drop", "label_agreement")}
        parity["int8"] = evaluation
        extra["calibration"] = {"images": calib_desc, "num_images": reader.num_images, "num_windows": len(reader.windows),
                                "method": result.method, "per_channel": True, "symmetric": True,
                                "quantized_ops": "Conv, MatMul/Gemm with constant weights", "excluded_nodes": result.excluded_nodes}
        line = (f"wrote {result.path} ({result.path.stat().st_size / 2**20:.1f} MiB, {result.method} calibration on "
                f"{len(reader.windows)} windows of {reader.num_images} images, {time.perf_counter() - t:.1f} s): "
                f"int8 vs fp32 label agreement {evaluation['label_agreement']:.2%}, mIoU vs fp32 {evaluation['miou_vs_fp32']:.3f}, "
                f"mean cosine {evaluation['mean_cosine']:.4f}")
        if "labelled_set" in evaluation:
            ls = evaluation["labelled_set"]
            line += f"; labelled set mIoU fp32 {ls['miou_fp32']:.4f} int8 {ls['miou_int8']:.4f} (drop {ls['miou_drop']:+.4f})"
        _say(line)

    engines = {}
    for precision in dict.fromkeys(args.trt):
        source_onnx = onnx_path if precision == "fp16" else root / bundle_mod.FILES["onnx_int8"]
        key = f"trt_{precision}"
        engine = build_engine(source_onnx, root / bundle_mod.FILES[key], precision, window,
                              max_batch=args.trt_max_batch, opt_batch=args.trt_opt_batch,
                              workspace_gib=args.trt_workspace_gib, timing_cache=args.timing_cache)
        models[key] = engine.path.name
        engines[precision] = engine.to_dict()
        _say(f"built {engine.path} (TensorRT {engine.tensorrt_version}, batch {engine.min_batch}/{engine.opt_batch}/{engine.max_batch}, "
             f"{engine.fp32_layers} layers pinned to fp32) in {engine.seconds:.1f} s")
    if engines:
        extra["tensorrt"] = engines

    manifest = bundle_mod.build_manifest(model, cfg, window, inference, models, text_cache, parity,
                                         decoder_sha256(model), extra=extra, root=root)
    path = bundle_mod.write_manifest(root, manifest)
    _say(f"wrote {path}; bundle {root} done in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from calibration.reader import CalibrationError

    from .onnx_export import ExportError
    from .parity import ParityError
    from .tensorrt_build import TensorRTBuildError, TensorRTUnavailable
    from .text_cache import VocabularyFileError

    is_text = bool(argv) and argv[0] == "text"
    args = (text_parser() if is_text else export_parser()).parse_args(argv[1:] if is_text else argv)
    try:
        from mgca.checkpoint import CheckpointError
        from mgca.clip_backbone import BackboneError
        from mgca.config import ConfigError
        from mgca.evalsets import DatasetError

        bad_input = (UsageError, VocabularyFileError, CalibrationError, CheckpointError, BackboneError, ConfigError, DatasetError,
                     TensorRTUnavailable, NotADirectoryError)
        return run_text(args) if is_text else run_export(args)
    except bad_input as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except (ParityError, ExportError, TensorRTBuildError) as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
