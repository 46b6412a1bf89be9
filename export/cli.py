"""`mgca-export`: checkpoint -> self-describing bundle directory; `mgca-export text`: vocabulary -> text cache.

    mgca-export --checkpoint CKPT --out DIR [--int8] [--calib-images DIR] [--trt fp16|int8]
                [--vocab FILE] [--templates tcl] [--window N] [--parity-images DIR] ...
    mgca-export --clip ViT-B-16 --weights weights/ViT-B-16.pt --no-decoder --vocab classes.txt --out DIR
                # training-free: CLIP weights alone, the measured best training-free recipe (TRAINING_FREE_RECIPE)
    mgca-export text --checkpoint CKPT --vocab classes.txt [--templates tcl] --out text_cache.npz
    mgca-export text --checkpoint CKPT --dataset voc21 --out voc21_text.npz   # a benchmark's classes

The bundle always holds model.onnx (fp32, parity-checked against PyTorch: the export fails when
the relative error exceeds --parity-tol) and manifest.json; model.int8.onnx with --int8,
--calib-images or --trt int8; TensorRT engines with --trt; text_cache.npz with --vocab.
Exit status: 0 done; 1 the export ran but failed its parity check or a TensorRT build failed;
2 bad input or a missing optional dependency (a one-line message on stderr).
This module only parses arguments: the export itself is `export.pipeline.export_bundle`.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from mgca.cli.args import DENSE_MODE_NAMES, add_settings_args, add_trust_flag, positive_int, settings_overrides
from mgca.prompts import DEFAULT_TEMPLATE_SET
from runtime.backbone_notice import warn_backbone
from runtime.bundle import is_bundle_file
from runtime.errors import MgcaError, run_cli
from runtime.files import check_writable_file
from runtime.staging import check_staging_target

if TYPE_CHECKING:
    from .pipeline import ExportOptions

PROG = "mgca-export"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UsageError(MgcaError, ValueError):
    """Bad combination of arguments."""


class StorageError(MgcaError):
    """The disk filled up (or became unwritable) while the export wrote its files."""


# A bundle with no trained decoder (--no-decoder) takes what the miniature's ladder measured best among the frozen
# rows (docs/results.md, "The ladder on the current default"; export/README.md): SC-CLIP features, 36 units and no
# PAMR (objects, 36 units: scclip 22.13, with PAMR 20.05; tcl 8.50, sclip 11.63, naclip 6.29, clearclip 4.36).
# Flags given on the command line take precedence.
TRAINING_FREE_RECIPE = MappingProxyType({"dense_mode": "scclip", "units": 36, "pamr": 0})


def export_parser() -> argparse.ArgumentParser:
    from .pipeline import CALIBRATION_METHODS, TRT_PRECISIONS

    parser = _Parser(prog=PROG, description="Export an MGCA checkpoint to a bundle directory (ONNX, int8 QDQ ONNX, "
                     "TensorRT engines, text cache, manifest.json). "
                     "`mgca-export text --help` for the text cache alone.")
    add_model_source(parser)
    parser.add_argument("--no-decoder", action="store_true",
                        help="export frozen CLIP features with no trained decoder (needed with --clip; with "
                             "--checkpoint: its CLIP only), in the measured best training-free recipe: "
                             + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in TRAINING_FREE_RECIPE.items())
                             + " unless given (export/README.md says why)")
    parser.add_argument("--out", required=True,
                        help="bundle directory to write (created; a previous bundle there is replaced once the new "
                             "one is complete and checked; other files in it stay)")
    parser.add_argument("--clip-weights", help="where the CLIP weights file of the checkpoint lives now (if moved)")
    add_trust_flag(parser)
    add_settings_args(parser, "inference settings (the manifest's inference block)",
                      "these defaults, but --short-side is the window and --stride half of it")
    parser.add_argument("--dense-mode", choices=DENSE_MODE_NAMES,
                        help="rebuild the CLIP backbone in this training-free mode before export (default: the "
                             "checkpoint's); the manifest's backbone.dense_mode records it")
    parser.add_argument("--no-optimize", action="store_true",
                        help="skip onnxscript graph optimisation/constant folding")
    parser.add_argument("--int8", action="store_true",
                        help="also write model.int8.onnx (QDQ static int8, onnxruntime/TensorRT) and, where nncf and "
                             "openvino are installed, model.int8.nncf.onnx (NNCF int8, OpenVINO)")
    parser.add_argument("--nncf", action=argparse.BooleanOptionalAction, default=None,
                        help="with --int8: write NNCF's int8 graph for OpenVINO (default: when nncf is installed; "
                             "--nncf fails without it, --no-nncf skips it)")
    parser.add_argument("--calib-images",
                        help="folder of calibration images (implies --int8; default: synthetic images, with a warning)")
    parser.add_argument("--calib-limit", type=positive_int, default=32,
                        help="at most this many calibration images (default 32)")
    parser.add_argument("--calib-method", choices=CALIBRATION_METHODS, default="minmax")
    parser.add_argument("--eval-images", help="labelled set for the int8 mIoU report: images folder")
    parser.add_argument("--eval-labels",
                        help="labelled set: folder of same-stem PNG labels (class ids in --vocab order, 255 = ignore)")
    parser.add_argument("--trt", action="append", choices=TRT_PRECISIONS, default=[],
                        help="build a TensorRT engine (repeatable; needs tensorrt and an NVIDIA GPU)")
    parser.add_argument("--trt-max-batch", type=positive_int, default=16,
                        help="optimisation profile max batch (default 16)")
    parser.add_argument("--trt-opt-batch", type=positive_int, help="optimisation profile opt batch (default max/2)")
    parser.add_argument("--trt-workspace-gib", type=float, default=4.0,
                        help="builder workspace limit in GiB (default 4)")
    parser.add_argument("--timing-cache",
                        help="TensorRT timing cache file, loaded if present and saved after the build")
    parser.add_argument("--vocab",
                        help="class names, one per line: writes text_cache.npz and uses them for the parity labels")
    parser.add_argument("--templates", default=DEFAULT_TEMPLATE_SET,
                        help="prompt template set (tcl, single, plain, none) or a file of templates")
    parser.add_argument("--parity-images",
                        help="folder of real images for the parity check (default: synthetic images)")
    parser.add_argument("--parity-tol", type=float, default=1e-4, help="max fp32 relative error (default 1e-4)")
    parser.add_argument("--parity-windows", type=positive_int, default=8, help="windows per parity set (default 8)")
    parser.add_argument("--threads", type=int, default=0,
                        help="onnxruntime intra-op threads for the checks (0 = all cores)")
    return parser


def text_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=f"{PROG} text", description="Write a text-embedding cache (.npz) for a fixed vocabulary.")
    add_model_source(parser)
    vocabulary = parser.add_mutually_exclusive_group(required=True)
    vocabulary.add_argument("--vocab", help="class names, one per line ('#' comments and blank lines skipped)")
    vocabulary.add_argument("--dataset", help="a benchmark's class names (voc21, context60, coco_object, ade20k, "
                                              "cityscapes, ...), for `mgca-eval --engine ... --text-cache`")
    parser.add_argument("--templates", default=None,
                        help="prompt template set (tcl, single, plain, none) or a file of templates "
                        "(default: the --dataset's protocol, else tcl)")
    parser.add_argument("--out", required=True, help="output .npz file")
    parser.add_argument("--clip-weights", help="where the CLIP weights file of the checkpoint lives now (if moved)")
    add_trust_flag(parser)
    return parser


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """Where the model comes from: a trained checkpoint, or CLIP weights alone (--clip, --weights)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="decoder checkpoint written by python -m mgca.train")
    source.add_argument("--clip", metavar="ARCH", help="CLIP architecture (open_clip name, e.g. ViT-B-16) of a "
                        "training-free export from CLIP weights alone (with --weights and --no-decoder)")
    parser.add_argument("--weights", metavar="FILE", help="with --clip: local CLIP weights (mgca-weights writes "
                        "them; OpenAI .pt or open_clip .pt/.safetensors)")


def _say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def _load(args: argparse.Namespace):
    """(model, config): the checkpoint's, or with --clip a frozen CLIP with no decoder. Prints the backbone's
    notice (a tiny or random CLIP)."""
    from mgca.config import BackboneConfig, Config, DecoderConfig

    no_decoder = getattr(args, "no_decoder", False)
    dense_mode = getattr(args, "dense_mode", None)
    if args.weights and not args.clip:
        raise UsageError("--weights goes with --clip (CLIP weights alone); a checkpoint's CLIP file that moved is "
                         "--clip-weights")
    if args.clip:
        if hasattr(args, "no_decoder") and not no_decoder:
            raise UsageError(f"--clip {args.clip} exports CLIP features with no trained decoder: add --no-decoder "
                             "(a trained decoder comes with --checkpoint)")
        from mgca.model import build_model

        cfg = Config(backbone=BackboneConfig(arch=args.clip, checkpoint=args.weights, dense_mode=dense_mode or "tcl",
                                             trust_torchscript=args.trust_torchscript),
                     decoder=DecoderConfig(kind="none"))
        model = build_model(cfg.backbone, cfg.decoder).eval()
    else:
        from mgca.checkpoint import load_model

        model, cfg = load_model(args.checkpoint, clip_weights=args.clip_weights, dense_mode=dense_mode,
                                with_decoder=not no_decoder, trust_torchscript=args.trust_torchscript)
        if no_decoder:
            cfg.decoder = DecoderConfig(kind="none")
    warn_backbone(model.backbone.identity.to_dict(), PROG)
    return model, cfg


def _dataset_classes(name: str) -> list[str]:
    """The names a benchmark embeds (background is a threshold, never a class embedding)."""
    from mgca.evalsets import get_spec

    return list(get_spec(name).prompt_classes)


def run_text(args: argparse.Namespace) -> int:
    from mgca.prompts import read_class_file

    from .text_cache import build_text_cache, resolve_templates

    classes = read_class_file(args.vocab, "vocabulary file") if args.vocab else None
    names = list(classes.names) if classes else _dataset_classes(args.dataset)
    if args.templates is None:  # the prompts mgca-eval uses for this dataset
        from mgca.evalsets import get_spec

        args.templates = get_spec(args.dataset).protocol.templates if args.dataset else DEFAULT_TEMPLATE_SET
    label, templates = resolve_templates(args.templates)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise UsageError(f"--out {out} must be a .npz file")
    if is_bundle_file(out):
        raise UsageError(f"--out {out} is a file of the bundle in {out.parent}: its manifest would no longer match; "
                         "re-export the bundle with --vocab, or write the cache elsewhere and pass it with "
                         "--text-cache")
    check_writable_file(out, "--out", inputs=tuple(a for a in (args.vocab, args.templates) if a))
    model, _ = _load(args)
    start = time.perf_counter()
    path = build_text_cache(model, names, args.templates, out, classes.prompts if classes else None)
    identity = model.backbone.identity
    _say(f"wrote {path}: {len(names)} classes x {len(templates)} templates ({label}), dim {model.embed_dim}, "
         f"backbone {identity.arch} text_sha256 {identity.text_sha256[:12]} ({time.perf_counter() - start:.1f} s)")
    return 0


def export_options(args: argparse.Namespace) -> ExportOptions:
    """The parsed flags as ExportOptions (the vocabulary file read into class names), checked."""
    from mgca.prompts import read_class_file

    from .pipeline import ExportOptions

    same_name = {f.name for f in dataclasses.fields(ExportOptions)} - {"inference", "optimize", "vocab",
                                                                       "vocab_prompts"}
    classes = read_class_file(args.vocab, "vocabulary file") if args.vocab else None
    settings = settings_overrides(args)
    if args.no_decoder:  # the training-free recipe where the user gave no value
        recipe = {k: v for k, v in TRAINING_FREE_RECIPE.items() if k != "dense_mode"}
        settings = {**recipe, **settings}
        args.dense_mode = args.dense_mode or TRAINING_FREE_RECIPE["dense_mode"]
    return ExportOptions(settings, **{name: getattr(args, name) for name in same_name},
                         optimize=not args.no_optimize,
                         vocab=list(classes.names) if classes else None,
                         vocab_prompts=classes.prompts if classes else None).check()


def run_export(args: argparse.Namespace) -> int:
    from .pipeline import export_bundle

    options = export_options(args)  # fails fast, before the model is loaded
    check_staging_target(args.out, "--out")
    model, cfg = _load(args)
    if args.no_decoder:
        _say(f"no decoder: frozen {model.backbone.arch} features in dense mode {model.backbone.dense_mode} "
             f"(the training-free recipe: {', '.join(f'{k} {v}' for k, v in TRAINING_FREE_RECIPE.items())}, "
             "flags given take precedence)")
    elif args.dense_mode:
        _say(f"backbone rebuilt in dense mode {args.dense_mode} (--dense-mode); the decoder is the checkpoint's, "
             "trained on the features of the mode it was trained with")
    export_bundle(model, args.out, options, config=cfg, log=_say)
    return 0


# Where the disk (or quota) ran out or the folder became unwritable while the bundle or cache was written.
_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


def _run(argv: list[str]) -> int:
    is_text = bool(argv) and argv[0] == "text"
    args = (text_parser() if is_text else export_parser()).parse_args(argv[1:] if is_text else argv)
    try:
        return run_text(args) if is_text else run_export(args)
    except OSError as err:
        if err.errno not in _STORAGE_ERRORS:
            raise
        kept = ("an earlier bundle there is kept as it was" if not is_text else "an earlier file there is kept")
        raise StorageError(f"writing {args.out} failed ({err.strerror or err}); {kept}: free some space (or make the "
                           "folder writable) and run the same command again") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 done, 1 the export ran but failed a check (parity, TensorRT build), 2 bad input, 130 Ctrl-C.
    The heavy modules (torch, onnx) are imported inside `run_cli`, so Ctrl-C at any moment ends in one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli(PROG, lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
