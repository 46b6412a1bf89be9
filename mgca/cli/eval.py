"""`mgca-eval`: zero-shot mIoU of a checkpoint (or of frozen CLIP features) on a benchmark folder.

    mgca-eval --dataset voc21 --root data/VOCdevkit/VOC2012 --checkpoint runs/mgca/last.pt [--units 0]
    mgca-eval --dataset ade20k --root data/ade_sample --decoder none --arch ViT-B-16 --clip-weights ViT-B-16.pt
    mgca-eval --dataset cityscapes --root data/cityscapes --engine bundle/ [--compare-torch runs/mgca/last.pt]
    mgca-eval --dataset folder --root my_data --classes classes.txt --checkpoint last.pt   # DIR/images + DIR/masks

The dataset loop, the metric and the report are the library's (`mgca.evaluation`), for any
`predict(image) -> labels` callable; this module parses arguments, and `make_predict_fn` is the one
place that decides which engine produces the labels.

`--engine` needs only the base install (no torch): this module, mgca.config, mgca.evalsets,
mgca.evaluation and runtime are torch-free, and every torch import sits behind the PyTorch path.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from runtime.contract import SETTING_SPECS, default_background
from runtime.errors import run_cli
from runtime.files import atomic_write_text, check_writable_file

from ..evalsets.specs import PAPER_PROTOCOL
from ..evaluation import PredictFn, compare, comparison_report, evaluate, protocol_record, report
from .args import (
    DENSE_MODE_NAMES,  # noqa: F401 - still importable from here
    add_engine_args,
    add_inference_args,
    add_model_args,
    check_engine_flags,
    check_engine_templates,
    engine_args,
    non_negative_int,
    positive_int,
    read_files,
    settings_overrides,
)


def apply_protocol(args: argparse.Namespace, protocol=None) -> argparse.Namespace:
    """Fill the inference settings (and templates) the user left unset from `protocol` (default: the paper's), for
    the PyTorch path; an engine's unset settings are its bundle's (`open_engine`)."""
    settings = (protocol or PAPER_PROTOCOL).settings(**vars(args))
    for name, value in settings.items():
        setattr(args, name, value)
    return args


def build_predictor(args: argparse.Namespace, background_threshold: float | None):
    """(SegmentationPredictor, model) from parsed model + inference args; warns on a random or synthetic-world CLIP.
    `background_threshold` is the background rule's value (None: no background)."""
    from mgca.device import resolve_device
    from mgca.inference import InferenceConfig, SegmentationPredictor
    from mgca.inference.loading import load_inference_model
    from runtime.backbone_notice import warn_backbone

    device = resolve_device(args.device)
    model = load_inference_model(args.checkpoint, args.decoder, args.arch, args.clip_weights, args.dense_mode, device,
                                 trust_torchscript=args.trust_torchscript)
    warn_backbone(model.backbone.identity.to_dict())  # a tiny or random CLIP: why a real photo comes out as nonsense
    config = InferenceConfig(background_threshold=background_threshold, templates=args.templates,
                             **settings_overrides(args))
    return SegmentationPredictor(model, config, device), model


def open_engine(args: argparse.Namespace, classes: list[str], stem: str, vocab_flag: str):
    """The Segmenter of --engine: the bundle's manifest settings with the flags given in their place, its dense
    mode and text cache checked against the flags and `classes` before any image is read; `stem`/`vocab_flag`
    name the classes in the how-to-fix hint (e.g. "voc21", "--dataset voc21")."""
    from mgca.config import ConfigError
    from runtime import Segmenter, VocabularyError
    from runtime.backbone_notice import warn_backbone

    segmenter = Segmenter(args.engine, **engine_args(args))
    exported = (segmenter.bundle.manifest.get("backbone") or {}).get("dense_mode")
    if getattr(args, "dense_mode", None) and args.dense_mode != exported:
        raise ConfigError(f"--dense-mode {args.dense_mode} cannot apply to --engine: bundle {segmenter.bundle.path} "
                          f"was exported in dense mode {exported}, which its graph fixes; drop --dense-mode, or "
                          f"export a bundle with mgca-export --dense-mode {args.dense_mode}")
    meta = segmenter.vocabulary.meta if segmenter.vocabulary is not None else {}
    check_engine_templates(args, meta.get("template_set"), args.text_cache or "of the bundle")
    try:
        segmenter.check_classes(classes)  # fail before the loop when the text cache lacks a class
    except VocabularyError as err:
        raise ConfigError(f"{err.problem}; make a cache of these classes with `mgca-export text "
                          f"--checkpoint CKPT {vocab_flag} --out {stem}_text.npz` and pass --text-cache "
                          f"{stem}_text.npz") from None
    # what runs and why, once the setup is known to be good (an error stays one line)
    print(f"runtime: {segmenter.backend} {segmenter.precision} ({segmenter.engine.model_path.name}): "
          f"{segmenter.engine_reason}", file=sys.stderr)
    warn_backbone(segmenter.bundle.manifest.get("backbone") or {})
    return segmenter


def make_engine_predict_fn(args: argparse.Namespace, spec) -> tuple[PredictFn, dict]:
    """The runtime's predict callable on an exported bundle, with the same dataset classes and threshold."""
    classes = list(spec.prompt_classes)
    vocab_flag = f"--vocab {args.classes}" if spec.name in ("folder", "folder-video") else f"--dataset {spec.name}"
    segmenter = open_engine(args, classes, spec.name, vocab_flag)
    threshold = background_value(args, spec, segmenter.settings.bg_rule, segmenter.settings.pamr)
    described = segmenter.describe()
    settings = segmenter.settings
    cache_meta = segmenter.vocabulary.meta if segmenter.vocabulary is not None else {}
    templates = {"set": cache_meta.get("template_set", "text cache"), "count": len(segmenter.vocabulary.templates),
                 "average": cache_meta.get("template_average")}
    backbone = {"arch": segmenter.bundle.arch, "source": f"bundle {segmenter.bundle.path}",
                **segmenter.bundle.manifest.get("backbone", {})}
    info = {"engine": f"runtime {described['backend']} {described['precision']} ({described['model']})",
            "device": described["provider"], "backbone": backbone,
            "decoder": "bundle", "checkpoint": None, "bundle": str(segmenter.bundle.path), "runtime": described,
            "output_stride": segmenter.bundle.output_stride,
            "inference": {**settings.to_dict(), "background_threshold": threshold, "templates": templates["set"]},
            "settings": {"from": f"bundle {segmenter.bundle.path} manifest", "overridden": settings_overrides(args)},
            "protocol": protocol_record(spec, settings.to_dict(), threshold, templates, backbone.get("dense_mode"))}

    def predict(image: np.ndarray, state=None) -> np.ndarray:
        if state is None:
            return segmenter.segment(image, classes, background_threshold=threshold).labels
        return segmenter.decode(segmenter.encode(image), classes, background_threshold=threshold, state=state).labels

    predict.temporal_state = segmenter.temporal_state  # a clip's stream memory (mgca.video_evaluation)
    return predict, info


def background_value(args: argparse.Namespace, spec, bg_rule: str, pamr: int) -> float | None:
    """The background rule's value for this dataset: --background-threshold, else the rule's default for it
    (runtime.contract.default_background); None for datasets without background."""
    if not spec.with_background:
        return None
    if args.background_threshold is not None:
        return args.background_threshold
    return default_background(bg_rule, spec.background_threshold, pamr)


def require_torch(what: str) -> None:
    """A one-line ConfigError instead of a traceback when the lean (base) install meets a PyTorch path."""
    from mgca.config import ConfigError

    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what} needs PyTorch, which this install lacks: pip install 'mgca[train]', "
                          "or evaluate an exported bundle with --engine BUNDLE") from None


def make_predict_fn(args: argparse.Namespace, spec) -> tuple[PredictFn, dict]:
    """The per-image predict callable for this run and a description of it (engines plug in here)."""
    if getattr(args, "engine", None):
        return make_engine_predict_fn(args, spec)
    require_torch("evaluating a checkpoint or CLIP features (--checkpoint / --decoder none / --compare-torch)")
    from ..prompts import get_templates, template_average

    background = background_value(args, spec, args.bg_rule, args.pamr)
    predictor, model = build_predictor(args, background)
    predictor.set_classes(spec.prompt_classes, spec.prompt_texts)
    config = predictor.config
    templates = {"set": config.templates, "count": len(get_templates(config.templates)),
                 "average": template_average(config.templates)}
    backbone = model.backbone.identity.to_dict()
    info = {"engine": "torch", "device": str(predictor.device), "backbone": backbone,
            "decoder": "none" if args.decoder == "none" else "checkpoint", "checkpoint": args.checkpoint,
            "output_stride": predictor.output_stride, "inference": config.to_dict(),
            "protocol": protocol_record(spec, config.to_dict(), config.background_threshold, templates,
                                        backbone.get("dense_mode"))}

    def predict(image: np.ndarray, state=None) -> np.ndarray:
        return predictor.predict(image, state)

    predict.temporal_state = predictor.temporal_state  # a clip's stream memory (mgca.video_evaluation)
    return predict, info


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgca-eval", description="Zero-shot semantic segmentation mIoU (MGCA).")
    parser.add_argument("--dataset", required=True,
                        help="voc21, voc20, context60, context59, coco_object, coco_stuff, ade20k, cityscapes, "
                             "synthetic, synthetic-video (clips), folder (your own labelled folder) or folder-video "
                             "(your own labelled clips: ROOT/<clip>/images + masks)")
    parser.add_argument("--root", help="dataset folder (mmseg data_root, or a sample layout; for folder: DIR holding "
                                       "images/ and masks/)")
    parser.add_argument("--layout", default="auto", help="auto, mmseg, sample or coco-instances")
    add_folder_args(parser)
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N images (clips)")
    parser.add_argument("--json", help="also write the metrics and the run's settings to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_args(parser)
    add_inference_args(parser)
    add_engine_args(parser)
    return parser


def add_folder_args(parser: argparse.ArgumentParser) -> None:
    """--dataset folder: where the images and masks are, what the classes are, how masks are read."""
    from ..evalsets.folder import BACKGROUND_MODES

    group = parser.add_argument_group("your own data (--dataset folder)")
    group.add_argument("--classes", help="class file: one class a line, in label-id order; 'name: prompt' gives a "
                                         "class its own prompt")
    group.add_argument("--images", help="images folder (instead of ROOT/images); sub-folders are matched too")
    group.add_argument("--masks", help="masks folder (instead of ROOT/masks), same names as the images")
    group.add_argument("--palette", help="RGB colour masks: file of 'name r g b' lines ('ignore r g b' for void)")
    group.add_argument("--ignore-index", type=non_negative_int, default=255,
                       help="label id of unlabelled pixels in integer masks (default 255)")
    group.add_argument("--background", choices=BACKGROUND_MODES, default="none",
                       help="none: every class is prompted; threshold: the first class is background, predicted "
                            "by the score threshold (as VOC21); ignore: the first class (id 0) is not scored "
                            "(as VOC20) (default none)")


def open_eval_dataset(args: argparse.Namespace):
    """The dataset of `--dataset`: a benchmark under --root, a labelled folder, or a folder of labelled clips."""
    from mgca.config import ConfigError
    from mgca.evalsets import FolderSource, get_spec, open_dataset, open_folder
    from mgca.evalsets.sequences import open_sequence_folder, open_sequences

    if args.dataset in ("folder", "folder-video"):
        if not args.classes:
            raise ConfigError(f"--dataset {args.dataset} needs --classes FILE: one class a line, in label-id order")
        source = FolderSource(args.classes, args.root, args.images, args.masks, args.palette, args.ignore_index,
                              args.background)
        return open_folder(source) if args.dataset == "folder" else open_sequence_folder(source)
    given = [flag for flag in ("classes", "images", "masks", "palette") if getattr(args, flag, None)]
    if given:
        raise ConfigError(f"--{given[0]} is for --dataset folder; {args.dataset} has its own classes and layout")
    if not args.root:
        raise ConfigError(f"--dataset {args.dataset} needs --root, the folder holding it")
    if get_spec(args.dataset).video:
        return open_sequences(args.dataset, args.root)
    return open_dataset(args.dataset, args.root, args.layout)


def _write_json(path: str | None, record: dict) -> None:
    if path:
        atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def run(args: argparse.Namespace) -> dict:
    """Evaluate, print the report, optionally write JSON; returns the JSON-able result."""
    check_engine_flags(args)
    if args.json:
        check_writable_file(args.json, "--json", inputs=read_files(args, args.json))  # now, not after the work
    dataset = open_eval_dataset(args)
    if not args.engine:  # an engine is scored with its bundle's settings, the flags given in their place
        apply_protocol(args, dataset.spec.protocol)
    predict, info = make_predict_fn(args, dataset.spec)
    if dataset.spec.video:
        return run_video(args, dataset, predict, info)
    if getattr(args, "compare_torch", None):
        return run_compare(args, dataset, predict, info)
    metrics, seconds = evaluate(dataset, predict, args.limit, progress=not args.no_progress)
    text, record = report(dataset, info, metrics, seconds)
    print(text)
    _write_json(args.json, record)
    return record


def run_video(args: argparse.Namespace, dataset, predict, info: dict) -> dict:
    """Clips: every frame in order through one stream state per clip (the `temporal` setting's mode), scored with
    per-frame mIoU, VC8, VC16, flicker and TC (runtime.video_metrics)."""
    from mgca.config import ConfigError

    from ..video_evaluation import evaluate_video, video_report

    if getattr(args, "compare_torch", None):
        raise ConfigError("--compare-torch compares still images; drop it for clips")
    mode = info["inference"]["temporal"]
    metrics, seconds = evaluate_video(dataset, lambda image: image, predict, predict.temporal_state, (mode,),
                                      args.limit, progress=not args.no_progress)
    text, record = video_report(dataset, info, metrics, seconds)
    print(text)
    _write_json(args.json, record)
    return record


def run_compare(args: argparse.Namespace, dataset, predict: PredictFn, info: dict) -> dict:
    """--engine BUNDLE --compare-torch CKPT: the same images through both, metrics side by side."""
    from mgca.config import ConfigError

    if not args.engine:
        raise ConfigError("--compare-torch CKPT compares an exported engine with its checkpoint; pass "
                          "--engine BUNDLE too")
    engine_settings = {name: info["inference"][name] for name in SETTING_SPECS}  # like for like: the engine's
    torch_args = argparse.Namespace(**{**vars(args), **engine_settings, "checkpoint": args.compare_torch,
                                       "decoder": "checkpoint", "engine": None})
    apply_protocol(torch_args, dataset.spec.protocol)  # the templates
    reference, torch_info = make_predict_fn(torch_args, dataset.spec)
    engine_bb, torch_bb = info["backbone"], torch_info["backbone"]
    if engine_bb.get("text_sha256") and engine_bb.get("text_sha256") != torch_bb.get("text_sha256"):
        print(f"warning: bundle {args.engine} and checkpoint {args.compare_torch} were made with "
              "different CLIP weights; "
              "the comparison is not like for like", file=sys.stderr)
    comparison = compare(dataset, predict, reference, args.limit, progress=not args.no_progress)
    text, record = comparison_report(dataset, info, torch_info, args.compare_torch, comparison)
    print(text)
    _write_json(args.json, record)
    return record


def run_main(prog: str, parser: argparse.ArgumentParser, run_args, argv: list[str] | None) -> int:
    """Parse `argv`, call `run_args(args)`; a user error (`MgcaError`) is one line on stderr and exit status 2."""
    args = parser.parse_args(argv)
    return run_cli(prog, lambda: run_args(args))


def main(argv: list[str] | None = None) -> int:
    return run_main("mgca-eval", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
