"""`mgca-demo`: a Gradio page over `runtime.demo.Demo`: drop in an image, a video clip or turn on the webcam, type
classes, see the overlay.

    mgca-demo --engine bundle/                      # http://127.0.0.1:7860, this machine only
    mgca-demo                                       # the embedded run's bundle (exported from runs/embedded/last.pt)
    mgca-demo --engine bundle/ --host 0.0.0.0       # serve the network; --share: a public gradio.live link

Torch-free, like `mgca-eval --engine` (`pip install "mgca[demo]"` adds Gradio to the lean install): the work is
`runtime.demo`'s, this module is the page and the command. Only the no-bundle path, which exports the embedded run,
imports `export` (and so torch). Gradio is imported when the page is built, never at import time, and its usage
statistics are switched off: the page sends nothing anywhere.

Bad input (no image, an unreadable file, a huge image, no classes, a class outside the vocabulary, an emptied number
field) is one line in the status box and a warning toast, never a traceback; bad flags, an address that is not
this machine's or a port in use are one line before anything loads. Requests are queued (`--concurrency` at once,
`--queue-size` waiting); uploads are capped at `--max-file-mb`, images and frames at `--max-megapixels`, and the
engines, encoded images and webcam streams kept are bounded (`runtime.demo`).
"""
from __future__ import annotations

import argparse
import atexit
import errno
import ipaddress
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from runtime.backbone_notice import warn_backbone
from runtime.batch import write_png
from runtime.contract import BACKGROUND_RANGE, GROUPVIT_BACKGROUND, MANIFEST_FILE, default_background
from runtime.demo import DEFAULT_MAX_PIXELS, VIDEO_SUFFIX, Demo, Options, page_controls, setting_value
from runtime.errors import ImageFileError, MgcaError, RuntimeInputError, one_line, run_cli
from runtime.image_files import DECODE_ERRORS, list_images, open_rgb
from runtime.overlay import label_picture, render_overlay

from .args import positive_int

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
    `keep` (Gradio copies each into its own cache when it serves it), the folder removed by `remove()` (`serve`
    calls it however the server stops, SIGTERM included) or at exit."""

    def __init__(self, keep: int = 32):
        self.folder = Path(tempfile.mkdtemp(prefix="mgca-demo-"))
        self._written: deque[Path] = deque()
        self._keep = keep
        self._lock = threading.Lock()
        atexit.register(self.remove)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def write(self, labels: np.ndarray, num_classes: int, background_index: int | None = None) -> Path:
        """A palette PNG: its pixel values are the class indices (as VOC's masks), shown in the overlay's colours."""
        path = self.new("labels", ".png")
        write_png(path, label_picture(labels, num_classes, background_index))
        return path

    def new(self, prefix: str, suffix: str) -> Path:
        """A fresh path in the folder for a file about to be written, the oldest file removed beyond `keep`."""
        path = self.folder / f"{prefix}-{uuid.uuid4().hex[:12]}{suffix}"
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


# The page's own style: toasts at the bottom right (never piled over the header; the status box keeps the message),
# and the overlay's toolbar above the picture, not over its legend's first entries.
PAGE_CSS = """
.toast-wrap { top: auto !important; bottom: var(--size-4); }
#overlay .image-container, #live-overlay .image-container { padding-top: 2.4em; }
"""
TOAST_SECONDS = 6
LIVE_EVERY_S = 0.5  # the webcam tab's frame interval: frames come while one is labelled, only the newest is kept


def build_app(demo: Demo, examples: Sequence[Path] = (), files: LabelFiles | None = None,
              stream_every: float = LIVE_EVERY_S) -> Any:
    """The Gradio Blocks page of `demo` (not launched): an image tab, a video tab and a webcam tab sharing the classes
    and settings. Every setting's control (range, default, label) is read from the contract
    (`runtime.demo.page_controls`); the engine menu is `demo.engines`, auto's pick selected."""
    gr = import_gradio()

    files = files or LabelFiles()
    vocabulary = list(demo.vocabulary)
    dense_mode = (demo.bundle.manifest.get("backbone") or {}).get("dense_mode") or "the checkpoint's"
    controls = {control.name: control for control in page_controls(demo.default.settings)}

    def options_of(engine, units, pamr, bg_rule, background, threshold) -> Options:
        return Options(engine, setting_value("units", units), setting_value("pamr", pamr),
                       setting_value("bg_rule", bg_rule), float(threshold) if background else None)

    def failed(err: MgcaError) -> str:
        message = one_line(err)
        gr.Warning(message, duration=TOAST_SECONDS)
        return f"error: {message}"

    def segment(upload, classes, *settings):
        try:
            image = read_upload(upload, demo)
            outcome = demo.run(image, classes, options_of(*settings))
        except MgcaError as err:
            return None, failed(err), [], None
        options = options_of(*settings)
        path = files.write(outcome.labels, len(outcome.class_names), 0 if options.background is not None else None)
        ran = "engine ran" if outcome.engine_ran else "cached embeddings of this image reused"
        status = (f"{image.shape[1]} x {image.shape[0]} px, {len(outcome.class_names)} labels, "
                  f"{outcome.seconds:.2f} s ({ran})")
        return outcome.overlay, status, share_rows(outcome.shares), str(path)

    def label_video(clip, classes, *settings, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
        try:
            if clip is None:
                raise RuntimeInputError("no video: upload a clip")
            options = options_of(*settings)
            progress(0, desc="labelling frames")

            def advance(done: int, total: int | None) -> None:
                progress((done, total) if total else (done, None), desc="labelling frames", unit="frames")

            outcome = demo.label_video(clip, classes, options, files.new("overlay", VIDEO_SUFFIX), advance)
        except MgcaError as err:
            return None, failed(err), []
        stats = outcome.stats
        status = (f"{outcome.frames} frames labelled, {stats['fps']:.1f} frames/s, latency p50 "
                  f"{stats['latency_p50'] or 0:.2f} s; areas over all frames")
        return str(outcome.path), status, share_rows(outcome.shares)

    def label_live(frame, classes, engine, units, pamr, bg_rule, background, threshold, request: gr.Request):
        if frame is None:
            return gr.skip(), gr.skip()
        try:
            options = options_of(engine, units, pamr, bg_rule, background, threshold)
            frame = np.asarray(frame)
            demo.check_size(frame.shape[1], frame.shape[0])
            live = demo.live(request.session_hash, classes, options)
            record = live.label(frame)
        except MgcaError as err:
            return None, failed(err)
        if record is None:
            return gr.skip(), gr.skip()
        stats = live.stats()
        result = record.result
        background = 0 if live.background is not None else None
        picture = render_overlay(record.frame, result.labels, result.class_names, background_index=background)
        return picture, (f"frame {record.index} labelled, latency {record.latency:.2f} s; {stats['sent']} sent, "
                         f"{stats['frames']} labelled, {stats['dropped']} dropped (only the newest is labelled)")

    def leave(request: gr.Request) -> None:
        demo.close_live(request.session_hash)  # the tab closed: its webcam stream's threads end

    # Gradio passes the request to a parameter annotated gr.Request; with postponed annotations it reads a string
    # it cannot resolve (gr is local here), so the annotations are set as objects
    label_live.__annotations__["request"] = leave.__annotations__["request"] = gr.Request

    def number(name: str) -> Any:
        control = controls[name]
        return gr.Number(control.default, precision=0, minimum=control.minimum, maximum=control.maximum,
                         label=control.label, info=control.help, elem_id=name)

    low, high = BACKGROUND_RANGE
    with gr.Blocks(title="mgca demo", delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"## mgca: open-vocabulary segmentation\nBundle `{shown_path(demo.bundle.path)}`: "
                    f"{demo.bundle.arch}, dense mode {dense_mode}, {len(vocabulary)} classes in its vocabulary. Type "
                    "any of them, or pick them below.", elem_id="header")
        with gr.Row():
            with gr.Column(scale=2):
                classes = gr.Textbox(", ".join(vocabulary[:SHOWN_CLASSES]), lines=2, elem_id="classes",
                                     label="classes (comma-separated or one a line)")
                picked = gr.Dropdown(vocabulary, multiselect=True, label="or pick from the bundle's vocabulary")
                with gr.Accordion("settings", open=False):
                    engine = gr.Dropdown(list(demo.engines), value=demo.default_engine, elem_id="engine",
                                         label="engine and precision", info=f"default: what auto picks here "
                                         f"({demo.default.engine_reason})")
                    units = number("units")
                    pamr = number("pamr")
                    rule = controls["bg_rule"]
                    bg_rule = gr.Dropdown(list(rule.choices), value=rule.default, label=rule.name, info=rule.help,
                                          elem_id="bg_rule")
                    background = gr.Checkbox(False, label="background class (label 0)")
                    threshold = gr.Slider(low, high, value=default_background(rule.default, GROUPVIT_BACKGROUND,
                                                                              controls["pamr"].default),
                                          step=0.01, label="background threshold (tcl: its constant channel)")
            with gr.Column(scale=5), gr.Tabs():
                settings = [engine, units, pamr, bg_rule, background, threshold]
                with gr.Tab("image", elem_id="image-tab"), gr.Row():
                    with gr.Column():
                        image = gr.Image(sources=["upload", "clipboard"], type="filepath", image_mode=None,
                                         label="image", elem_id="image")
                        image.preprocess = tolerant(image.preprocess)
                        run = gr.Button("Segment", variant="primary", elem_id="run")
                        if examples:
                            gr.Examples([[str(path)] for path in examples], inputs=[image], label="examples")
                    with gr.Column():
                        overlay = gr.Image(type="pil", format="png", interactive=False, label="overlay",
                                           elem_id="overlay", buttons=["download", "fullscreen"])
                        status = gr.Textbox(label="status", interactive=False, elem_id="status")
                        shares = gr.Dataframe(headers=["class", "area %"], interactive=False, label="area per class",
                                              elem_id="shares")
                        labels = gr.File(label="label map (PNG)", interactive=False, elem_id="labels")
                        gr.Markdown("The label map is a palette PNG, as VOC's masks are: it opens in the overlay's "
                                    "colours while each pixel's value is its class index (the i-th class typed; 0 = "
                                    "background when the background class is on). Read it with "
                                    "`numpy.asarray(PIL.Image.open(path))`.")
                with gr.Tab("video", elem_id="video-tab"), gr.Row():
                    with gr.Column():
                        clip = gr.Video(sources=["upload"], label="video clip", elem_id="clip")
                        run_video = gr.Button("Label the video", variant="primary", elem_id="run-video")
                    with gr.Column():
                        video_overlay = gr.Video(label="overlay video", interactive=False, elem_id="video-overlay")
                        video_status = gr.Textbox(label="status", interactive=False, elem_id="video-status")
                        video_shares = gr.Dataframe(headers=["class", "area %"], interactive=False,
                                                    label="area per class, all frames", elem_id="video-shares")
                with gr.Tab("webcam", elem_id="webcam-tab"), gr.Row():
                    webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="webcam",
                                      elem_id="webcam")
                    with gr.Column():
                        live_overlay = gr.Image(type="pil", format="png", interactive=False, label="newest frame "
                                                "labelled", elem_id="live-overlay", buttons=["fullscreen"])
                        live_status = gr.Textbox(label="status", interactive=False, elem_id="live-status")
        picked.change(lambda names: ", ".join(names or []), inputs=picked, outputs=classes,
                      queue=False)  # instant, never behind a segmentation in the queue
        run.click(segment, inputs=[image, classes, *settings], outputs=[overlay, status, shares, labels])
        run_video.click(label_video, inputs=[clip, classes, *settings],
                        outputs=[video_overlay, video_status, video_shares])
        # the browser sends a frame every stream_every seconds while the last is labelled; the stream labels the
        # newest and drops the rest (runtime.demo.LiveStream)
        webcam.stream(label_live, inputs=[webcam, classes, *settings], outputs=[live_overlay, live_status],
                      stream_every=stream_every, show_progress="hidden")
        app.unload(leave)
    return app


def share_rows(shares: Sequence[tuple[str, float]]) -> list[list[Any]]:
    return [[name, round(100 * share, 2)] for name, share in shares]


def shown_path(path: Path) -> str:
    """The bundle's folder as the user named it: relative to the working folder when inside it, else its name."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1..65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {value}")
    return value


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0 (not NaN, not inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def check_address(host: str, port: int) -> None:
    """A one-line error, before the bundle loads, when the server could not listen on host:port: an address that
    is not valid or not this machine's, a name that does not resolve, a port in use or reserved."""
    fix = "give an address of this machine (127.0.0.1: this machine only; 0.0.0.0: the network) or a host name"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if re.fullmatch(r"[\d.]+", host):  # looks like an IPv4 address but is not one: no name lookup for it
            raise DemoSetupError(f"--host {host} is not a valid IP address; {fix}") from None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise DemoSetupError(f"--host {host} does not resolve ({getattr(err, 'strerror', None) or err}); "
                             f"{fix}") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: a closed port is free
        try:
            sock.bind(address)
        except OSError as err:
            raise DemoSetupError(bind_problem(host, port, err)) from None


def bind_problem(host: str, port: int, err: OSError) -> str:
    if err.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use (another mgca-demo, or another server); pass another --port"
    if err.errno == errno.EACCES:
        return f"port {port} needs administrator rights; pass a --port above 1023"
    if err.errno == errno.EADDRNOTAVAIL:
        return (f"--host {host} is not an address of this machine; give one of its addresses (127.0.0.1: this "
                "machine only; 0.0.0.0: the network)")
    return f"cannot listen on {host}:{port} ({err.strerror or err}); pass another --host or --port"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="A web page over an exported bundle: upload an image, "
                                     "type classes, get the overlay, the label map and the area per class.")
    parser.add_argument("--engine", metavar="BUNDLE", help="bundle folder written by mgca-export (default: "
                        f"{EMBEDDED_RUN}/bundle, exported from {EMBEDDED_RUN}/last.pt the first time)")
    parser.add_argument("--text-cache", help="vocabulary file (mgca-export text) instead of the bundle's own")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=positive_int,
                        help="cap on each engine's CPU threads (default: library defaults)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: the network)")
    parser.add_argument("--port", type=port_number, default=7860, help="port, 1..65535 (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also publish a temporary public gradio.live link (traffic goes through Gradio's servers)")
    parser.add_argument("--concurrency", type=positive_int, default=1,
                        help="requests segmented at once, the others queue (default 1: one engine run uses the cores)")
    parser.add_argument("--queue-size", type=positive_int, default=32, help="most requests waiting (default 32)")
    parser.add_argument("--max-megapixels", type=positive_number, default=DEFAULT_MAX_PIXELS / 1e6,
                        help=f"largest image accepted (default {DEFAULT_MAX_PIXELS / 1e6:g} MP)")
    parser.add_argument("--max-file-mb", type=positive_int, default=50, help="largest upload accepted (default 50 MB)")
    parser.add_argument("--examples", help="folder of example images (default: the embedded run's synthetic "
                        "benchmark, when it exists)")
    return parser


def serve(args: argparse.Namespace) -> None:
    """Start the page and wait. SIGTERM (a service manager, `kill`) stops it as Ctrl-C does, so its cleanup runs;
    the previous SIGTERM handler is back once it returns."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        _serve(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(args: argparse.Namespace) -> None:
    import_gradio()  # before the bundle loads: a missing Gradio is said at once
    check_address(args.host, args.port)  # likewise a bad --host or a port in use
    max_pixels = int(args.max_megapixels * 1e6)
    if max_pixels < 1:
        raise RuntimeInputError(f"--max-megapixels {args.max_megapixels:g} is less than one pixel; give at least "
                                "0.000001")
    bundle = Path(args.engine) if args.engine else embedded_bundle()
    demo = Demo(bundle, text_cache=args.text_cache, device=args.device, num_threads=args.threads,
                max_pixels=max_pixels)
    warn_backbone(demo.bundle.manifest.get("backbone") or {}, PROG)  # a tiny or random CLIP: say what it knows
    files = LabelFiles()
    try:
        app = build_app(demo, example_images(args.examples), files)
        app.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
        try:  # quiet: Gradio's own lines advise notebook users (share=True in launch()); ours say what to type
            app.launch(server_name=args.host, server_port=args.port, share=args.share, quiet=True,
                       max_file_size=f"{args.max_file_mb}mb", footer_links=[], prevent_thread_lock=True,
                       css=PAGE_CSS)
        except OSError as err:  # the port was taken between the check above and the server's start
            raise DemoSetupError(bind_problem(args.host, args.port, err)) from None
        reach = "this machine only" if ipaddress_is_loopback(args.host) else "the network"
        print(f"{PROG}: serving {app.local_url} ({reach}){f'; public link {app.share_url}' if app.share_url else ''}"
              "; Ctrl-C stops it", flush=True)
        try:
            while app.is_running:
                time.sleep(0.5)
        finally:
            app.close()
    finally:
        files.remove()


def ipaddress_is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: serve(args), interrupted="stopped")


if __name__ == "__main__":
    sys.exit(main())
