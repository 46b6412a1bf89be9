"""`mgca-demo`: a Gradio page over `runtime.demo.Demo`: drop in an image, type classes, see the overlay.

    mgca-demo --engine bundle/                      # http://127.0.0.1:7860, this machine only
    mgca-demo                                       # the embedded run's bundle (exported from runs/embedded/last.pt)
    mgca-demo --engine bundle/ --host 0.0.0.0       # serve the network; --share: a public gradio.live link

Torch-free, like `mgca-eval --engine` (`pip install "mgca[demo]"` adds Gradio to the lean install): the work is
`runtime.demo`'s, this module is the page and the command. Only the no-bundle path, which exports the embedded run,
imports `export` (and so torch). Gradio is imported when the page is built, never at import time, and its usage
statistics are switched off: the page sends nothing anywhere.

Bad input (no image, an unreadable file, a huge image, no classes, a class outside the vocabulary) is one line in
the status box and a warning toast, never a traceback. Requests are queued (`--concurrency` at once, `--queue-size`
waiting); uploads are capped at `--max-file-mb`, images at `--max-megapixels`, and the engines and encoded images
kept are bounded (`runtime.demo`).
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from runtime.backbone_notice import warn_backbone
from runtime.batch import label_dtype, write_png
from runtime.contract import BG_RULES, MANIFEST_FILE, default_background
from runtime.demo import DEFAULT_MAX_PIXELS, Demo, Options
from runtime.errors import ImageFileError, MgcaError, RuntimeInputError, one_line, run_cli
from runtime.image_files import DECODE_ERRORS, list_images, open_rgb

PROG = "mgca-demo"
EMBEDDED_RUN = Path("runs/embedded")  # where `python -m mgca.train` (the embedded default) writes
SHOWN_CLASSES = 8  # classes typed in for the user at start: the whole vocabulary when it is this short


class DemoSetupError(MgcaError):
    """The demo cannot start (no bundle, no Gradio); the message says how to fix it."""


@dataclass(frozen=True)
class Unreadable:
    """An upload Pillow cannot open, passed on to the handler so it can say so on the page."""

    name: str
    reason: str


class LabelFiles:
    """The label-map PNGs offered for download: written to a private temporary folder, the oldest removed beyond
    `keep` (Gradio copies each into its own cache when it serves it), the folder removed at exit."""

    def __init__(self, keep: int = 32):
        self.folder = Path(tempfile.mkdtemp(prefix="mgca-demo-"))
        self._written: deque[Path] = deque()
        self._keep = keep
        self._lock = threading.Lock()
        atexit.register(shutil.rmtree, self.folder, True)

    def write(self, labels: np.ndarray, num_classes: int) -> Path:
        path = self.folder / f"labels-{uuid.uuid4().hex[:12]}.png"
        write_png(path, Image.fromarray(labels.astype(label_dtype(num_classes))))
        with self._lock:
            self._written.append(path)
            while len(self._written) > self._keep:
                self._written.popleft().unlink(missing_ok=True)
        return path


def read_upload(upload: Any, demo: Demo) -> np.ndarray:
    """The uploaded image, RGB uint8, upright by its EXIF orientation (as every mgca tool reads images); one too
    large for `demo` is refused from its header, before it is decoded."""
    if upload is None:
        raise RuntimeInputError("no image: upload one, paste one or take one with the webcam")
    if isinstance(upload, Unreadable):
        raise ImageFileError(f"{upload.name} is not an image file Pillow can read ({upload.reason}); upload a JPEG "
                             "or PNG")
    try:
        with Image.open(upload) as header:  # reads the size only
            size = header.size
    except DECODE_ERRORS:
        size = None  # open_rgb says what is wrong with the file
    if size is not None:
        demo.check_size(*size)
    return np.asarray(open_rgb(upload, name=Path(upload).name))


def tolerant(preprocess: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """gr.Image's preprocess, handing an upload Pillow cannot open to the handler (as `Unreadable`) instead of failing
    before it with Gradio's bare "Error". Set on the instance: a subclass of a Gradio component makes Gradio write a
    .pyi file beside this module."""

    def wrapped(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except DECODE_ERRORS as err:
            name = getattr(payload, "orig_name", None) or getattr(payload, "path", None) or "the upload"
            return Unreadable(Path(name).name, type(err).__name__)

    return wrapped


def embedded_bundle(run: Path = EMBEDDED_RUN) -> Path:
    """The embedded run's bundle: `run`/bundle, exported from `run`/last.pt the first time (needs mgca[train])."""
    bundle = run / "bundle"
    if (bundle / MANIFEST_FILE).is_file():
        return bundle
    checkpoint = run / "last.pt"
    make = ("pass --engine BUNDLE (a folder written by mgca-export), or train the embedded run first: "
            "pip install -e '.[train]' && python -m mgca.train")
    if not checkpoint.is_file():
        raise DemoSetupError(f"no bundle: {checkpoint} does not exist; {make}")
    try:
        import torch  # noqa: F401  (first: export's modules import it only once they run)

        from export.cli import main as export_main
        from mgca.evalsets import get_spec
    except ImportError:
        raise DemoSetupError(f"no bundle at {bundle}; exporting {checkpoint} needs mgca[train] "
                             f"(pip install -e '.[train]'), or pass --engine BUNDLE") from None
    spec = get_spec("synthetic-stuff")  # every class the embedded run knows, and its protocol
    vocab = run / "demo_classes.txt"
    vocab.write_text("\n".join(spec.prompt_classes) + "\n", encoding="utf-8")
    protocol = spec.protocol
    print(f"{PROG}: exporting {checkpoint} to {bundle} (once)", flush=True)
    code = export_main(["--checkpoint", str(checkpoint), "--out", str(bundle), "--vocab", str(vocab),
                        "--window", str(protocol.window), "--short-side", str(protocol.short_side),
                        "--stride", str(protocol.stride), "--templates", protocol.templates])
    if code != 0:
        raise DemoSetupError(f"exporting {checkpoint} failed (mgca-export exit status {code}, its message is above); "
                             "pass --engine BUNDLE")
    return bundle


def example_images(folder: str | Path | None, run: Path = EMBEDDED_RUN, count: int = 4) -> list[Path]:
    """Example images for the page: `folder`'s, else the embedded run's synthetic benchmark's (when it exists)."""
    root = Path(folder) if folder else run / "synthetic_benchmark" / "images"
    if folder and not root.is_dir():
        raise DemoSetupError(f"--examples {root} is not a folder; give a folder of images")
    return list_images(root)[:count] if root.is_dir() else []


def import_gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage statistics sent (nothing leaves the page)
    try:
        import gradio
    except ImportError:
        raise DemoSetupError("mgca-demo needs Gradio: pip install 'mgca[demo]'") from None
    return gradio


def build_app(demo: Demo, examples: Sequence[Path] = ()) -> Any:
    """The Gradio Blocks page of `demo` (not launched)."""
    gr = import_gradio()

    files = LabelFiles()
    settings = demo.default.settings
    vocabulary = list(demo.vocabulary)
    dense_mode = (demo.bundle.manifest.get("backbone") or {}).get("dense_mode") or "the checkpoint's"

    def segment(upload, classes, engine, units, pamr, bg_rule, background, threshold):
        try:
            image = read_upload(upload, demo)
            options = Options(engine, int(units), int(pamr), bg_rule, float(threshold) if background else None)
            outcome = demo.run(image, classes, options)
        except MgcaError as err:
            message = one_line(err)
            gr.Warning(message)
            return None, f"error: {message}", [], None
        path = files.write(outcome.labels, len(outcome.class_names))
        ran = "engine ran" if outcome.engine_ran else "cached embeddings of this image reused"
        status = (f"{image.shape[1]} x {image.shape[0]} px, {len(outcome.class_names)} labels, "
                  f"{outcome.seconds:.2f} s ({ran})")
        rows = [[name, round(100 * share, 2)] for name, share in outcome.shares]
        return outcome.overlay, status, rows, str(path)

    with gr.Blocks(title="mgca demo", delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"## mgca: open-vocabulary segmentation\nBundle `{demo.bundle.path}`: {demo.bundle.arch}, dense "
                    f"mode {dense_mode}, {len(vocabulary)} classes in its vocabulary. Type any of them, or pick "
                    "them below; the label map's value i is the i-th class (0 = background when it is on).")
        with gr.Row():
            with gr.Column():
                image = gr.Image(sources=["upload", "clipboard", "webcam"], type="filepath", image_mode=None,
                                 label="image", elem_id="image")
                image.preprocess = tolerant(image.preprocess)
                classes = gr.Textbox(", ".join(vocabulary[:SHOWN_CLASSES]), lines=2, elem_id="classes",
                                     label="classes (comma-separated or one a line)")
                picked = gr.Dropdown(vocabulary, multiselect=True, label="or pick from the bundle's vocabulary")
                with gr.Accordion("settings", open=False):
                    engine = gr.Dropdown(list(demo.engines), value=demo.engines[0], label="engine and precision")
                    units = gr.Number(settings.units, precision=0, minimum=0, label="semantic units (0 = pixels)")
                    pamr = gr.Number(settings.pamr, precision=0, minimum=0, maximum=50,
                                     label="PAMR iterations (0 = off)")
                    bg_rule = gr.Dropdown(list(BG_RULES), value=settings.bg_rule, label="background rule")
                    background = gr.Checkbox(False, label="background class (label 0)")
                    threshold = gr.Slider(0.0, 1.0, value=default_background(settings.bg_rule, 0.95, settings.pamr),
                                          step=0.01, label="background threshold (tcl: its constant channel)")
                run = gr.Button("Segment", variant="primary", elem_id="run")
            with gr.Column():
                overlay = gr.Image(type="pil", format="png", interactive=False, label="overlay", elem_id="overlay")
                status = gr.Textbox(label="status", interactive=False, elem_id="status")
                shares = gr.Dataframe(headers=["class", "area %"], interactive=False, label="area per class",
                                      elem_id="shares")
                labels = gr.File(label="label map (PNG)", interactive=False, elem_id="labels")
        if examples:
            gr.Examples([[str(path)] for path in examples], inputs=[image], label="examples")
        picked.change(lambda names: ", ".join(names or []), inputs=picked, outputs=classes,
                      queue=False)  # instant, never behind a segmentation in the queue
        run.click(segment, inputs=[image, classes, engine, units, pamr, bg_rule, background, threshold],
                  outputs=[overlay, status, shares, labels])
    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="A web page over an exported bundle: upload an image, "
                                     "type classes, get the overlay, the label map and the area per class.")
    parser.add_argument("--engine", metavar="BUNDLE", help="bundle folder written by mgca-export (default: "
                        f"{EMBEDDED_RUN}/bundle, exported from {EMBEDDED_RUN}/last.pt the first time)")
    parser.add_argument("--text-cache", help="vocabulary file (mgca-export text) instead of the bundle's own")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="cap on each engine's CPU threads (default: library defaults)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also publish a temporary public gradio.live link (traffic goes through Gradio's servers)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="requests segmented at once, the others queue (default 1: one engine run uses the cores)")
    parser.add_argument("--queue-size", type=int, default=32, help="most requests waiting (default 32)")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6,
                        help=f"largest image accepted (default {DEFAULT_MAX_PIXELS / 1e6:g} MP)")
    parser.add_argument("--max-file-mb", type=int, default=50, help="largest upload accepted (default 50 MB)")
    parser.add_argument("--examples", help="folder of example images (default: the embedded run's synthetic "
                        "benchmark, when it exists)")
    return parser


def serve(args: argparse.Namespace) -> None:
    for flag in ("concurrency", "queue_size", "max_file_mb"):
        if getattr(args, flag) < 1:
            raise RuntimeInputError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    import_gradio()  # before the bundle loads: a missing Gradio is said at once
    bundle = Path(args.engine) if args.engine else embedded_bundle()
    demo = Demo(bundle, text_cache=args.text_cache, device=args.device, num_threads=args.threads,
                max_pixels=int(args.max_megapixels * 1e6))
    warn_backbone(demo.bundle.manifest.get("backbone") or {}, PROG)  # a tiny or random CLIP: say what it knows
    app = build_app(demo, example_images(args.examples))
    app.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=f"{args.max_file_mb}mb",
               footer_links=[])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: serve(args))


if __name__ == "__main__":
    sys.exit(main())
