"""`mgca-segment`: open-vocabulary segmentation of one photo, or of whole folders, resumably.

    mgca-segment photo.jpg --classes "cat,grass,sky" --checkpoint runs/mgca/last.pt [--out overlay.png]
    mgca-segment photos/ --classes classes.txt --engine bundle/ --out OUT [--overlays] [--summary OUT/s.parquet]
    mgca-segment "shots/**/*.jpg" list.txt --classes classes.txt --engine bundle/ --out OUT --ray [ADDRESS]
    mgca-segment clip.mp4 videos/ --classes classes.txt --engine bundle/ --out OUT [--ray]
    mgca-segment --camera 0 --classes "person,car" --engine bundle/ --out OUT [--show]      (or an rtsp:// URL)

One photo: an overlay with a legend (and `--labels-out`). Folders, globs, list files (one image path a line) or
several inputs: OUT/labels mirrors the input tree with label PNGs, OUT/overlays with overlays when asked, and
OUT/summary.csv holds per-image class areas and timings (`runtime.batch`). Images already done are skipped unless
`--overwrite`; every file is written atomically, so an interrupted run resumes where it stopped. OUT/.mgca-output.json
records what made the outputs (`runtime.output_record`): a rerun with other settings is refused unless --overwrite.
Every output resolves inside --out and never onto an input (docs/reliability.md). `--engine` runs the
torch-free runtime (and `--ray` a Ray Data actor pool of it); `--checkpoint` / `--decoder none` run PyTorch.
Videos, folders of videos, cameras and stream URLs go to OUT/<video>/ (overlay.avi, labels/, frames.jsonl,
summary.json), resumable at frame granularity (`runtime.video_job`); `--ray` runs one task per video.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtime.errors import MgcaError

from .args import add_engine_args, add_inference_args, add_model_args, engine_args, positive_int, read_files
from .eval import apply_protocol, build_predictor, open_engine, run_main

if TYPE_CHECKING:
    from runtime.batch import PredictFn


class SomeImagesFailed(MgcaError):
    """The run finished, but some images could not be segmented (each is in the summary with its error)."""

    exit_code = 1


def parse_classes(text: str):
    """A class file (`mgca.prompts.read_class_file`: names, `name: prompt`) or 'cat, grass ,sky' -> ClassList;
    duplicates and empties are an error, not a guess."""
    from mgca.config import ConfigError
    from mgca.prompts import ClassList, read_class_file
    from runtime.files import is_existing_file

    if is_existing_file(text):  # a long inline list is no path: never handed to the OS
        return read_class_file(text)
    names = [name.strip() for name in text.split(",")]
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"--classes must be a class file or distinct, comma-separated names like 'cat,grass,sky', "
                          f"got {text!r}")
    return ClassList(tuple(names), (None,) * len(names))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgca-segment",
                                     description="Open-vocabulary segmentation of images and folders (MGCA).")
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="an image, a folder (searched recursively), a glob in quotes, a text file listing images, "
                             "or a pyarrow filesystem URI (with --ray); a video, a folder of videos, or an "
                             "rtsp/http(s) stream URL; several may be given")
    parser.add_argument("--classes", required=True,
                        help="comma-separated class names ('cat,grass,sky') or a class file (one a line, "
                             "'name: prompt' for a prompt of its own)")
    parser.add_argument("--out", help="one photo: the overlay PNG (default ./<image name>_segmented.png); folders: "
                                      "the output folder (labels/, overlays/, summary.csv)")
    parser.add_argument("--labels-out", help="one photo: also write the label map as a PNG of class indices")
    batch = parser.add_argument_group("folders")
    batch.add_argument("--overlays", action="store_true", help="also write OUT/overlays/... colour overlays")
    batch.add_argument("--summary", help="summary table, .csv or .parquet (default OUT/summary.csv)")
    batch.add_argument("--overwrite", action="store_true",
                       help="redo every image, also with other settings than the outputs in --out were made with; an "
                            "old output is only replaced by its new one (one that fails now keeps it, marked failed "
                            "in the summary)")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    video = parser.add_argument_group("videos, cameras and streams (outputs: OUT/<video>/overlay.avi, labels/, "
                                      "frames.jsonl, summary.json)")
    video.add_argument("--camera", type=int, metavar="N", help="segment camera N live (newest frame first, stale ones "
                                                               "dropped) until Ctrl-C")
    video.add_argument("--show", action="store_true", help="show the overlay live in a window (needs an OpenCV with a "
                                                           "GUI and a display; press q to stop)")
    video.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="stream URLs: seconds to connect and per read before a reconnect (default 10)")
    video.add_argument("--retries", type=int, default=2, help="stream URLs: reconnects before giving up (default 2)")
    ray = parser.add_argument_group("Ray Data scale-out (pip install 'mgca[ray]'; with --engine)")
    ray.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="run as a Ray Data pipeline: no ADDRESS starts Ray here, 'auto' joins the running cluster, "
                          "ray://HOST:10001 connects to a remote one")
    ray.add_argument("--actors", type=positive_int, help="Segmenter actors (default: one per CPU of the cluster)")
    ray.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs per actor, its thread cap (default 1)")
    ray.add_argument("--actor-gpus", type=float, default=0.0, help="GPUs per actor, for GPU bundles (default 0)")
    add_model_args(parser)
    add_inference_args(parser)
    add_engine_args(parser, compare=False)
    parser.set_defaults(units=None, unit_scope=None)  # the bundle's (--engine) or the settings' default (PyTorch)
    return parser


def _single_image(args: argparse.Namespace) -> bool:
    """The one-photo mode: one image file in, an overlay file (or nothing) out."""
    from runtime.image_files import IMAGE_SUFFIXES

    if len(args.inputs) != 1 or args.ray:
        return False
    path = Path(args.inputs[0])
    is_image = path.suffix.lower() in IMAGE_SUFFIXES and not path.is_dir()
    return is_image and (args.out is None or Path(args.out).suffix.lower() in IMAGE_SUFFIXES)


def _torch_predict(args: argparse.Namespace, classes) -> tuple[PredictFn, dict]:
    from runtime.contract import DEFAULT_SETTINGS
    from runtime.files import file_sha256

    args.units = DEFAULT_SETTINGS.units if args.units is None else args.units
    args.unit_scope = args.unit_scope or DEFAULT_SETTINGS.unit_scope
    predictor, model = build_predictor(apply_protocol(args), args.background_threshold)
    predictor.set_classes(classes.names, classes.prompts)
    identity = {k: v for k, v in model.backbone.identity.to_dict().items() if k != "source"}  # not where it lies
    checkpoint = file_sha256(args.checkpoint) if args.decoder == "checkpoint" and args.checkpoint else None
    producer = {"prompts": list(classes.prompts), "settings": predictor.config.to_dict(),
                "model": {"torch": identity, "decoder": args.decoder, "checkpoint_sha256": checkpoint}}
    return predictor.predict, producer


def _open_segmenter(args: argparse.Namespace, classes):
    """(the Segmenter of --engine, its background threshold, what makes its labels), bundle, window, classes and
    threshold checked first."""
    from runtime.contract import MANIFEST_FILE
    from runtime.files import file_sha256
    from runtime.segmenter import check_background_threshold

    segmenter = open_engine(args, list(classes.names), "classes", "--vocab CLASSES.txt")
    threshold = check_background_threshold(args.background_threshold)  # now, not on every image
    text, _ = segmenter.vocabulary.select(list(classes.names))
    producer = {"settings": {**segmenter.settings.to_dict(), "background_threshold": threshold},
                "model": {"bundle_sha256": file_sha256(segmenter.bundle.path / MANIFEST_FILE),
                          "backend": segmenter.backend, "precision": segmenter.precision,
                          "text_sha256": hashlib.sha256(np.ascontiguousarray(text).tobytes()).hexdigest()}}
    return segmenter, threshold, producer


def _engine(args: argparse.Namespace, classes) -> tuple[PredictFn, dict]:
    """The predict callable of a Segmenter of --engine."""
    segmenter, threshold, producer = _open_segmenter(args, classes)

    def predict(image: np.ndarray) -> np.ndarray:
        return segmenter.segment(image, list(classes.names), background_threshold=threshold).labels

    return predict, producer


def _predict(args: argparse.Namespace, classes) -> tuple[PredictFn, dict]:
    """(labels = predict(image), what makes them: settings and model hashes): the runtime on --engine, else
    PyTorch."""
    return _engine(args, classes) if args.engine else _torch_predict(args, classes)


def run_one(args: argparse.Namespace, classes) -> Path:
    """One photo -> overlay with a legend (and the label PNG with --labels-out)."""
    from PIL import Image

    from runtime.batch import label_dtype, write_png
    from runtime.files import check_writable_file
    from runtime.image_files import read_rgb
    from runtime.overlay import legend_entries, save_overlay

    image = read_rgb(args.inputs[0])  # upright by its EXIF orientation: labels match the photo as it is shown
    out = Path(args.out) if args.out else Path(f"{Path(args.inputs[0]).stem}_segmented.png")
    # before the model loads; never over the photo or a file the run reads
    check_writable_file(out, "--out", inputs=(args.inputs[0], *read_files(args, out)))
    if args.labels_out:
        check_writable_file(args.labels_out, "--labels-out",
                            inputs=(args.inputs[0], out, *read_files(args, args.labels_out)))
    labels = _predict(args, classes)[0](image)
    shown = _shown(args, classes)
    save_overlay(out, image, labels, shown, background_index=0 if args.background_threshold is not None else None)
    if args.labels_out:
        write_png(Path(args.labels_out), Image.fromarray(labels.astype(label_dtype(len(shown)))))
    shares = ", ".join(f"{shown[k]} {100 * share:.1f}%" for k, share in legend_entries(labels, shown) if share > 0)
    print(f"{out}: {image.shape[1]}x{image.shape[0]}, {shares}")
    return out


def _shown(args: argparse.Namespace, classes) -> list[str]:
    """Label order: "background" first when a threshold decides it, then the classes."""
    return (["background"] if args.background_threshold is not None else []) + list(classes.names)


def run_folder(args: argparse.Namespace, classes):
    """Folders/globs/lists -> OUT/labels, OUT/overlays, the summary; resumable; optionally on Ray Data."""
    from mgca.config import ConfigError
    from runtime.batch import BatchOutput, RayOptions, list_tasks, run_local, run_ray
    from runtime.files import check_writable_dir, check_writable_file
    from runtime.overlay import render_overlay

    if not args.out:
        raise ConfigError("segmenting folders, globs or lists needs --out DIR (labels/, overlays/ and the summary go "
                          "there)")
    if args.labels_out:
        raise ConfigError("--labels-out is for one photo; for folders the labels go to OUT/labels/")
    if args.ray and not args.engine:
        raise ConfigError("--ray runs exported bundles: pass --engine BUNDLE (mgca-export writes one)")
    out = check_writable_dir(args.out, "--out")
    summary = Path(args.summary) if args.summary else None
    if summary is not None:  # before the model loads, and never over a file the run reads (the class file)
        check_writable_file(summary, "--summary", inputs=read_files(args, summary))
    tasks = list_tasks(args.inputs, exclude=out)
    shown = _shown(args, classes)
    overlay = functools.partial(render_overlay, class_names=shown,
                                background_index=0 if args.background_threshold is not None else None)
    options = (RayOptions(None if args.ray == "local" else args.ray, args.actors, args.actor_cpus, args.actor_gpus)
               if args.ray else None)  # its numbers checked now
    predict, producer = _predict(args, classes)  # with --ray too: every setting is checked before any work
    output = BatchOutput(out, tuple(shown), overlay if args.overlays else None, args.overwrite, producer)
    if options is not None:
        report = run_ray(tasks, args.engine, engine_args(args), classes.names, args.background_threshold, output,
                         options, summary, progress=not args.no_progress)
    else:
        report = run_local(tasks, predict, output, summary, progress=not args.no_progress)
    print(report.line())
    if report.failed:
        first = report.failed[0]
        raise SomeImagesFailed(f"{len(report.failed)} of {len(tasks)} images could not be segmented (first: "
                               f"{first['error']}); each is listed in {report.summary} with its error")
    return report


def _video_inputs(args: argparse.Namespace) -> bool:
    """Whether this run segments videos (a camera, URLs, video files or folders of them) rather than images."""
    from runtime.video_job import holds_videos

    return args.camera is not None or any(holds_videos(item) for item in args.inputs)


def run_video(args: argparse.Namespace, classes):
    """Videos, folders of videos, a camera or stream URLs -> OUT/<video>/ (`runtime.video_job`); resumable."""
    from mgca.config import ConfigError
    from runtime.errors import OutputPathError
    from runtime.files import check_writable_dir, check_writable_file, same_file
    from runtime.ray_start import RayOptions
    from runtime.video_job import (
        VideoJobError,
        VideoOutput,
        check_gui,
        engine_labeller,
        list_videos,
        live_task,
        predict_labeller,
        run_videos,
        run_videos_ray,
        window,
    )

    if not args.out:
        raise ConfigError("segmenting videos needs --out DIR (each video's overlay.avi, labels/, frames.jsonl and "
                          "summary.json go to DIR/<video>/)")
    for item in args.inputs:
        if Path(item).is_file() and same_file(Path(args.out), Path(item)):
            raise OutputPathError(f"--out {args.out} is the input {item}; it would be overwritten: --out is a folder, "
                                  "choose another path")
    if args.labels_out:
        raise ConfigError("--labels-out is for one photo; a video's labels go to OUT/<video>/labels/")
    if args.ray and not args.engine:
        raise ConfigError("--ray runs exported bundles: pass --engine BUNDLE (mgca-export writes one)")
    if args.show:
        check_gui()  # before the model loads
    out = check_writable_dir(args.out, "--out")
    summary = Path(args.summary) if args.summary else None
    if summary is not None:
        check_writable_file(summary, "--summary", inputs=read_files(args, summary))
    tasks = ([live_task(args.camera)] if args.camera is not None else []) + (
        list_videos(args.inputs, exclude=out) if args.inputs else [])
    options = (RayOptions(None if args.ray == "local" else args.ray, args.actors, args.actor_cpus, args.actor_gpus)
               if args.ray else None)
    if args.engine:
        segmenter, threshold, producer = _open_segmenter(args, classes)
        labeller = engine_labeller(segmenter, list(classes.names), threshold)
    else:
        predict, producer = _torch_predict(args, classes)
        labeller = predict_labeller(predict)
    output = VideoOutput(out, tuple(classes.names), args.background_threshold is not None, args.overwrite, producer)
    if options is not None:
        report = run_videos_ray(tasks, args.engine, engine_args(args), classes.names, args.background_threshold,
                                output, options, summary)
    else:
        report = run_videos(tasks, labeller, output, summary, show=window() if args.show else None,
                            progress=not args.no_progress, connect_timeout=args.connect_timeout, retries=args.retries)
    print(report.line())
    if report.failed:
        first = report.failed[0]
        raise VideoJobError(f"{len(report.failed)} of {len(tasks)} videos could not be segmented (first: "
                            f"{first['error']}); each is listed in {report.summary} with its error; the frames done "
                            "are kept and a rerun resumes")
    return report


def run(args: argparse.Namespace):
    from mgca.config import ConfigError

    if not args.inputs and args.camera is None:
        raise ConfigError("give an image, a folder, a glob, a list, a video or a stream URL to segment (or --camera N)")
    classes = parse_classes(args.classes)
    if _video_inputs(args):
        return run_video(args, classes)
    if args.show:
        raise ConfigError("--show is for videos, cameras and streams")
    return run_one(args, classes) if _single_image(args) else run_folder(args, classes)


def main(argv: list[str] | None = None) -> int:
    return run_main("mgca-segment", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
