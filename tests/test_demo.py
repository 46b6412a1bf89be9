"""`mgca-demo` (runtime/demo.py, mgca/cli/demo.py) and the Segmenter's encode/decode it is built on.

The logic is tested here without a browser; the page itself in a real headless Chromium from Debian's packages
(`apt-get install chromium chromium-driver`, which .ci/run does), driven by Selenium against `mgca-demo` started on
127.0.0.1 with the tiny bundle: upload an image, type classes, wait for the overlay, compare the downloaded label
map with `Segmenter.segment`'s, save a screenshot; then the messages for an empty class list and an unreadable
file.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import Segmenter
from runtime.bundle import load_bundle
from runtime.contract import SETTING_SPECS
from runtime.demo import Demo, Options, engine_choices, page_controls, parse_classes, setting_value
from runtime.errors import ImageFileError, MgcaError, RuntimeInputError, SettingsError, VocabularyError
from runtime.openvino_engine import cpu_capabilities, openvino_available
from runtime.overlay import class_palette

from .support import blocky_image, one_line_error, subprocess_env, torch_stubs

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
REQUIRED = os.environ.get("MGCA_BROWSER_TEST") == "required"  # .ci/run, after installing chromium: never skip
NATIVE = ("bf16",) if "BF16" in cpu_capabilities() else ()  # OpenVINO bf16 is offered where the CPU computes it


def skip_or_fail(reason: str) -> None:
    (pytest.fail if REQUIRED else pytest.skip)(reason)


@pytest.fixture(scope="module")
def demo(bundle) -> Demo:
    return Demo(bundle, device="cpu", cached_segmenters=2, cached_images=2)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return blocky_image(np.random.default_rng(3), 120, 200)


def test_encode_then_decode_equals_segment(segmenter, image):
    """One engine run, then any classes and background values: segment()'s labels exactly."""
    encoded = segmenter.encode(image)
    for classes, background in ((["cat", "road", "sky"], None), (["dog", "car"], 0.5), (None, None)):
        expected = segmenter.segment(image, classes, background_threshold=background, return_scores=True)
        got = segmenter.decode(encoded, classes, background_threshold=background, return_scores=True)
        np.testing.assert_array_equal(got.labels, expected.labels)
        np.testing.assert_array_equal(got.scores, expected.scores)
        assert got.class_names == expected.class_names


def test_decode_on_another_preprocessing_is_refused(bundle, segmenter, image):
    other = Segmenter(bundle, backend="onnxruntime", device="cpu", short_side=64)
    with pytest.raises(RuntimeInputError, match="encoded with another bundle, engine or preprocessing"):
        other.decode(segmenter.encode(image), ["cat"])


def test_demo_labels_equal_segment_and_reuse_the_engine_run(demo, bundle, image):
    first = demo.run(image, "cat, road, sky", Options())
    reference = Segmenter(bundle, device="cpu")  # the demo's default engine is auto's
    np.testing.assert_array_equal(first.labels, reference.segment(image, ["cat", "road", "sky"]).labels)
    assert first.engine_ran
    # another vocabulary, background and unit count on the same image: the cached window embeddings answer
    again = demo.run(image, "dog\ncar", Options(units=0, background=0.5))
    assert not again.engine_ran and again.class_names == ("background", "dog", "car")
    expected = Segmenter(bundle, device="cpu", units=0).segment(image, ["dog", "car"], background_threshold=0.5)
    np.testing.assert_array_equal(again.labels, expected.labels)
    assert abs(sum(share for _, share in again.shares) - 1.0) < 1e-9
    assert again.overlay.size[1] >= image.shape[0] and again.overlay.size[0] > image.shape[1]  # legend on the right


def test_demo_int8_engine_and_pamr(demo, bundle, image):
    got = demo.run(image, "cat, dog", Options(engine="onnxruntime int8", pamr=2, bg_rule="tcl", background=0.4))
    expected = Segmenter(bundle, backend="onnxruntime", device="cpu", precision="int8", pamr=2, bg_rule="tcl")
    np.testing.assert_array_equal(got.labels, expected.segment(image, ["cat", "dog"], background_threshold=0.4).labels)


def _bundle_with_models(bundle: Path, out: Path, **models: str | None) -> Path:
    """A copy of `bundle` whose manifest lists `models` in place of its own (None: that graph was not kept)."""
    from runtime.bundle import write_manifest

    shutil.copytree(bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    for key, name in models.items():
        if name is None and manifest["models"].get(key):
            (out / manifest["models"][key]).unlink()
        manifest["models"][key] = name
    write_manifest(out, {k: v for k, v in manifest.items() if k != "files_sha256"})
    return out


def test_demo_offers_every_engine_the_bundle_runs_here_and_defaults_to_auto(demo, bundle, tmp_path):
    """The menu is the contract's (backend, precision) pairs whose model file (`model_key`) the bundle holds: OpenVINO
    int8 runs the QDQ graph when the export kept no NNCF graph (issue 36); the default is what `auto` picks."""
    ov = openvino_available()
    assert set(engine_choices(load_bundle(bundle))) == {"onnxruntime fp32", "onnxruntime int8", *(
        {"openvino fp32", "openvino int8"} | ({"openvino bf16"} if "bf16" in NATIVE else set()) if ov else ())}
    auto = Segmenter(bundle, device="cpu")
    assert demo.default_engine == f"{auto.backend} {auto.precision}" and demo.engines == engine_choices(demo.bundle)
    qdq_only = _bundle_with_models(bundle, tmp_path / "qdq", onnx_int8_nncf=None)
    assert ("openvino int8" in engine_choices(load_bundle(qdq_only))) == ov
    if ov:
        image = blocky_image(np.random.default_rng(5), 64, 80)
        got = Demo(qdq_only, device="cpu").run(image, "cat, dog", Options(engine="openvino int8"))
        seg = Segmenter(qdq_only, "openvino", "cpu", precision="int8")
        assert seg.describe()["model"] == "model.int8.onnx"
        np.testing.assert_array_equal(got.labels, seg.segment(image, ["cat", "dog"]).labels)
    fp32_only = _bundle_with_models(bundle, tmp_path / "fp32", onnx_int8_nncf=None, onnx_int8=None)
    assert not [engine for engine in engine_choices(load_bundle(fp32_only)) if engine.endswith("int8")]


def test_page_controls_are_the_contracts_settings(demo):
    """Every control's range, default and help come from runtime.contract (no number written twice)."""
    controls = {c.name: c for c in page_controls(demo.default.settings)}
    for name, control in controls.items():
        spec = SETTING_SPECS[name]
        assert control.help == spec.help and control.default == getattr(demo.default.settings, name)
        if spec.choices:
            assert control.choices == spec.choices
        else:
            assert (control.minimum, control.maximum) == (spec.minimum, spec.maximum)
    assert controls["pamr"].maximum == SETTING_SPECS["pamr"].maximum


@pytest.mark.parametrize(("name", "value", "message"), [
    ("units", None, "units is empty: type an integer >= 0 and at most 1024"),
    ("pamr", None, "pamr is empty"), ("pamr", 2.5, "pamr must be an integer"),
    ("pamr", 101.0, "pamr must be an integer >= 0 and at most 100"), ("bg_rule", "nope", "bg_rule must be one of"),
])
def test_empty_or_bad_setting_fields_are_one_line(name, value, message):
    """An emptied number field (Gradio sends None) is a message naming the setting, never a TypeError (issue 36)."""
    with pytest.raises(SettingsError, match=message) as err:
        setting_value(name, value)
    assert "\n" not in str(err.value)
    assert setting_value("units", 9.0) == 9 and setting_value("bg_rule", "tcl") == "tcl"


def test_label_map_is_a_palette_png_of_class_indices(tmp_path):
    """The downloaded label map opens in the overlay's colours and its values stay the class indices (VOC masks)."""
    from mgca.cli.demo import LabelFiles

    files = LabelFiles()
    labels = np.arange(12).reshape(3, 4) % 5
    with Image.open(files.write(labels, 5, background_index=0)) as png:
        assert png.mode == "P"
        np.testing.assert_array_equal(np.asarray(png), labels)
        palette = np.asarray(png.getpalette()[:15]).reshape(5, 3)
    np.testing.assert_array_equal(palette[1:], class_palette(5)[1:])
    assert not palette[0].any()  # background black, as VOC's
    many = np.arange(300).reshape(15, 20)
    with Image.open(files.write(many, 300)) as png:
        np.testing.assert_array_equal(np.asarray(png), many)
    files.remove()
    assert not files.folder.exists()


def test_demo_caches_stay_bounded(demo, image):
    for units in (0, 4, 9, 16):
        demo.run(image, "cat", Options(units=units))
    for seed in range(4):
        demo.run(blocky_image(np.random.default_rng(seed), 40, 50), "cat", Options())
    assert len(demo._segmenters) <= demo.cached_segmenters and len(demo._encoded) <= demo.cached_images


@pytest.mark.parametrize(("classes", "message"), [
    ("", "no classes given"), (" , \n", "no classes given"), ("cat, cat", "repeat 'cat'"),
    ("cat, unicorn", "'unicorn' not in the vocabulary"),
])
def test_demo_bad_classes_are_one_line(demo, image, classes, message):
    with pytest.raises((RuntimeInputError, VocabularyError), match=message) as err:
        demo.run(image, classes, Options())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("flags", "message"), [
    (["--port", "99999"], "argument --port: expected a port number 1..65535, got 99999"),
    (["--port", "-1"], "argument --port: expected a port number 1..65535, got -1"),
    (["--max-megapixels", "nan"], "argument --max-megapixels: expected a number > 0, got 'nan'"),
    (["--max-megapixels", "0"], "argument --max-megapixels: expected a number > 0, got '0'"),
    (["--max-megapixels", "-1"], "argument --max-megapixels: expected a number > 0, got '-1'"),
    (["--concurrency", "0"], "argument --concurrency: expected a positive integer, got 0"),
])
def test_bad_flags_are_usage_errors(flags, message, capsys):
    """Issue 36 item 8: mgca-demo's own flags are checked at parsing, one line each, nothing started."""
    from mgca.cli.demo import main

    with pytest.raises(SystemExit) as info:
        main(["--engine", "nowhere", *flags])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.strip().splitlines()[-1] == f"mgca-demo: error: {message}", err


def test_bad_host_and_a_port_in_use_are_one_line(bundle, capsys):
    """Issue 36 item 8: an invalid --host and a port in use are said before the bundle loads, not as tracebacks."""
    pytest.importorskip("gradio")
    from mgca.cli.demo import main

    code = main(["--engine", str(bundle), "--host", "256.1.1.1"])
    assert "--host 256.1.1.1 is not a valid IP address" in one_line_error(code, capsys.readouterr().err)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["--engine", str(bundle), "--port", str(port)])
    assert f"port {port} on 127.0.0.1 is in use" in one_line_error(code, capsys.readouterr().err)


def test_demo_refuses_huge_images_and_unknown_engines(bundle, image):
    small = Demo(bundle, device="cpu", max_pixels=100 * 100)
    with pytest.raises(RuntimeInputError, match=r"200 x 120 \(0.0 MP\); this demo takes at most 0.0 MP"):
        small.run(image, "cat", Options())
    with pytest.raises(RuntimeInputError, match="engine 'tensorrt fp16' is not in this bundle"):
        small.run(image, "cat", Options(engine="tensorrt fp16"))


def test_parse_classes_splits_commas_and_lines():
    assert parse_classes(" cat ,grass\nsky\n\n") == ("cat", "grass", "sky")


def test_unreadable_missing_and_huge_uploads_are_one_line(demo, bundle, tmp_path):
    from mgca.cli.demo import Unreadable, read_upload

    with pytest.raises(RuntimeInputError, match="no image"):
        read_upload(None, demo)
    with pytest.raises(ImageFileError, match="x.png is not an image file Pillow can read"):
        read_upload(Unreadable("x.png", "UnidentifiedImageError"), demo)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ImageFileError, match="broken.png is not an image file"):
        read_upload(str(broken), demo)
    wide = tmp_path / "wide.png"
    Image.new("RGB", (400, 30)).save(wide)
    assert read_upload(str(wide), demo).shape == (30, 400, 3)
    with pytest.raises(RuntimeInputError, match=r"the image is 400 x 30 \(0.0 MP\); this demo takes at most"):
        read_upload(str(wide), Demo(bundle, device="cpu", max_pixels=100 * 100))


def test_no_bundle_says_how_to_make_one(tmp_path):
    from mgca.cli.demo import DemoSetupError, embedded_bundle

    with pytest.raises(DemoSetupError, match=r"last.pt does not exist; pass --engine BUNDLE .*python -m mgca.train"):
        embedded_bundle(tmp_path / "runs" / "embedded")


def test_no_bundle_exports_the_embedded_run_once(tiny_checkpoint, tmp_path):
    """`mgca-demo` with no --engine after `python -m mgca.train`: runs/embedded/last.pt becomes runs/embedded/bundle
    with every class of the synthetic world and its protocol, exported the first time only."""
    from mgca.cli.demo import embedded_bundle
    from mgca.evalsets import get_spec

    run = tmp_path / "runs" / "embedded"
    run.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, run / "last.pt")
    bundle = embedded_bundle(run)
    spec = get_spec("synthetic-stuff")
    seg = Segmenter(bundle, backend="onnxruntime", device="cpu")
    assert seg.class_names == tuple(spec.prompt_classes)
    assert (seg.settings.short_side, seg.settings.window, seg.settings.stride) == (
        spec.protocol.short_side, spec.protocol.window, spec.protocol.stride)
    stamp = (bundle / "manifest.json").stat().st_mtime_ns
    assert embedded_bundle(run) == bundle and (bundle / "manifest.json").stat().st_mtime_ns == stamp


def test_examples_are_the_embedded_benchmark_or_a_folder(tmp_path):
    from mgca.cli.demo import DemoSetupError, example_images

    run = tmp_path / "embedded"
    assert example_images(None, run) == []  # no embedded run: no examples, no error
    images = run / "synthetic_benchmark" / "images"
    images.mkdir(parents=True)
    for name in ("b.png", "a.png", "c.gif", ".hidden.png", "notes.txt", "d.jpg", "e.png"):
        (images / name).write_bytes(b"")
    assert [p.name for p in example_images(None, run)] == ["a.png", "b.png", "c.gif", "d.jpg"]
    assert [p.name for p in example_images(images, run, count=10)] == ["a.png", "b.png", "c.gif", "d.jpg", "e.png"]
    with pytest.raises(DemoSetupError, match="--examples .*missing is not a folder"):
        example_images(tmp_path / "missing", run)


LEAN_DEMO = """
import sys
from pathlib import Path
import numpy as np
from runtime.demo import Demo, Options
from mgca.cli.demo import DemoSetupError, embedded_bundle
outcome = Demo(sys.argv[1], device="cpu").run(np.zeros((40, 50, 3), np.uint8), "cat, sky", Options())
assert outcome.labels.shape == (40, 50)
run = Path(sys.argv[2])
(run / "last.pt").write_bytes(b"a checkpoint")
try:
    embedded_bundle(run)
except DemoSetupError as err:
    print(err)
assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "export")]
"""


def test_demo_runs_without_torch_and_says_how_to_export(bundle, tmp_path):
    """The lean install runs the demo; exporting the embedded run there is one line saying what to install."""
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(torch_stubs(tmp_path / "stubs")), env["PYTHONPATH"]])
    proc = subprocess.run([sys.executable, "-c", LEAN_DEMO, str(bundle), str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == (f"no bundle at {tmp_path / 'bundle'}; exporting {tmp_path / 'last.pt'} needs "
                                   "mgca[train] (pip install -e '.[train]'), or pass --engine BUNDLE")


# ---- video and webcam (runtime.demo over Segmenter.stream / push_stream) -----------------------------------------

def write_clip(path: Path, frames: list[np.ndarray], fps: float = 5.0) -> Path:
    """A clip OpenCV writes and browsers play (VP8 in WebM, the demo's own output format)."""
    from runtime.demo import video_writer

    writer = video_writer(path, fps, frames[0].shape[1], frames[0].shape[0])
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path


def clip_areas(bundle: Path, clip: Path, classes: list[str]) -> np.ndarray:
    """Each class's share of all pixels over the clip's frames as OpenCV decodes them, by Segmenter.segment."""
    from runtime.video_sources import open_source

    seg = Segmenter(bundle, device="cpu")
    counts = np.zeros(len(classes), np.int64)
    with open_source(str(clip)) as frames:
        for frame in frames:
            counts += np.bincount(seg.segment(frame.image, classes).labels.ravel(), minlength=len(classes))
    return counts / counts.sum()


def test_video_is_labelled_frame_by_frame_as_segment(demo, bundle, tmp_path):
    """The video tab's work: every frame labelled in order (the areas over all frames are segment()'s), the overlay
    video written with as many frames, progress reported per frame."""
    import cv2

    rng = np.random.default_rng(7)
    clip = write_clip(tmp_path / "clip.webm", [blocky_image(rng, 48, 64) for _ in range(5)])
    steps = []
    outcome = demo.label_video(clip, "cat, sky, road", Options(), tmp_path / "overlay.webm",
                               lambda done, total: steps.append(done))
    assert outcome.frames == 5 and steps == [1, 2, 3, 4, 5] and outcome.class_names == ("cat", "sky", "road")
    np.testing.assert_allclose([share for _, share in outcome.shares], clip_areas(bundle, clip, ["cat", "sky", "road"]))
    capture = cv2.VideoCapture(str(outcome.path))
    written = 0
    while capture.read()[0]:
        written += 1
    capture.release()
    assert written == 5
    with pytest.raises(VocabularyError, match="'unicorn' not in the vocabulary"):
        demo.label_video(clip, "unicorn", Options(), tmp_path / "never.webm")
    with pytest.raises(RuntimeInputError, match=r"64 x 48 .* this demo takes at most"):  # before any engine run
        Demo(bundle, device="cpu", max_pixels=1000).label_video(clip, "cat", Options(), tmp_path / "never.webm")
    broken = tmp_path / "broken.webm"
    broken.write_bytes(b"not a video")
    with pytest.raises(MgcaError) as err:
        demo.label_video(broken, "cat", Options(), tmp_path / "never.webm")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "never.webm").exists()


def test_webcam_labels_the_newest_frame_as_segment(demo, bundle):
    """The webcam tab's work: frames pushed into a latest-policy push stream; each record comes back with the very
    frame it labelled and segment()'s labels for it; a new class list applies from the next frame, same stream."""
    seg = Segmenter(bundle, device="cpu")
    rng = np.random.default_rng(8)
    live = demo.live("session", "cat, dog", Options())
    sent = [blocky_image(rng, 48, 64) for _ in range(3)]
    for frame in sent:
        record = live.label(frame)
        assert any(record.frame is f or np.array_equal(record.frame, f) for f in sent)
        np.testing.assert_array_equal(record.result.labels, seg.segment(record.frame, ["cat", "dog"]).labels)
    assert demo.live("session", "sky, road", Options()) is live
    record = live.label(sent[0])
    np.testing.assert_array_equal(record.result.labels, seg.segment(record.frame, ["sky", "road"]).labels)
    assert live.stats()["sent"] == 4 and live.stats()["policy"] == "latest"
    demo.close_live("session")
    assert "session" not in demo._live


# ---- the page in a real browser -----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_demo(bundle: Path, log: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`mgca-demo --engine BUNDLE` on a free port of 127.0.0.1: (its URL, its process) once it answers."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        skip_or_fail("the demo needs Gradio: pip install 'mgca[demo]'")
    port = _free_port()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mgca.cli.demo", "--engine", str(bundle), "--port", str(port),
                                 "--device", "cpu"], stdout=out, stderr=subprocess.STDOUT,
                                env=subprocess_env(GRADIO_ANALYTICS_ENABLED="False", **env))
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(1200):  # until it says it serves (or has died); the outcome does not depend on how long
            if proc.poll() is not None:
                pytest.fail(f"mgca-demo exited with {proc.returncode}: {log.read_text()[-2000:]}")
            if "mgca-demo: serving" in log.read_text():
                urllib.request.urlopen(url, timeout=30).close()
                break
            try:
                proc.wait(timeout=0.5)  # a pause that ends early when the server dies
            except subprocess.TimeoutExpired:
                pass
        else:
            pytest.fail(f"mgca-demo did not answer on {url}: {log.read_text()[-2000:]}")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    """The demo server, until the module's tests are done."""
    with running_demo(bundle, tmp_path_factory.mktemp("demo") / "server.log") as (url, _):
        yield url


def test_sigterm_stops_the_server_and_leaves_no_label_folder(bundle, tmp_path):
    """Issue 36 item 10: `kill` (SIGTERM) ends the server cleanly and removes its mgca-demo-* folder from TMPDIR;
    the command line says where it listens, without Gradio's share=True advice."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    log = tmp_path / "server.log"
    with running_demo(bundle, log, TMPDIR=str(tmp)) as (url, proc):
        assert list(tmp.glob("mgca-demo-*")), "the server keeps its label maps in TMPDIR"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    assert not list(tmp.glob("mgca-demo-*")), log.read_text()
    text = log.read_text()
    assert f"mgca-demo: serving {url} (this machine only)" in text and "share=True" not in text, text
    assert "Traceback" not in text and text.strip().endswith("mgca-demo: stopped"), text


def chrome(*flags: str):
    """Headless Chromium from Debian's packages, driven by Selenium; nothing is downloaded."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        skip_or_fail("chromium and chromium-driver are not installed (Debian: apt-get install -y chromium "
                     "chromium-driver; .ci/run installs them)")
    try:
        from selenium import webdriver
    except ImportError:
        skip_or_fail("selenium is not installed: pip install 'mgca[test]'")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1100", *flags):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


@pytest.fixture(scope="module")
def browser():
    driver = chrome()
    yield driver
    driver.quit()


def _open(browser, url: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, 180)
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#image input[type=file]")))
    return wait, By


def _type_classes(browser, By, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = browser.find_element(By.CSS_SELECTOR, "#classes textarea")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    if text:
        box.send_keys(text)


def _status(browser, By) -> str:
    return browser.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value") or ""


def _engine_menu(browser, By) -> list[str]:
    """The engine dropdown's options, as the page lists them (the settings accordion opened, the menu unfolded)."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    if not browser.find_elements(By.CSS_SELECTOR, "#engine input"):
        _open_settings(browser, By)
    # the accordion renders its controls after the click returns: wait for them (a loaded machine is slow)
    field = WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#engine input"))[0]
    field.click()
    menu = field.get_attribute("aria-controls")
    options = [li.get_attribute("aria-label") for li in
               browser.find_elements(By.CSS_SELECTOR, f"#{menu} [role=option]")]
    field.send_keys(Keys.ESCAPE)
    return options


def _open_settings(browser, By) -> None:
    """Unfold the settings accordion (Gradio renders its controls only once it is open)."""
    browser.find_element(By.XPATH, "//button[contains(@class, 'label-wrap')][.//span[contains(., 'settings')]]"
                         ).click()


def test_browser_upload_classes_overlay_and_label_map(server, browser, bundle, tmp_path):
    """The page's label map (downloaded as PNG) equals Segmenter.segment's for the same file and classes."""
    from calibration.reader import synthetic_images
    from runtime.image_files import read_rgb

    photo = tmp_path / "street.png"
    Image.fromarray(synthetic_images(1, size=(240, 320), seed=4)[0]).save(photo)
    classes = ["sky", "road", "car", "tree"]
    wait, By = _open(browser, server)
    browser.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(photo))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image img"))  # the upload is shown
    _type_classes(browser, By, ", ".join(classes))
    browser.find_element(By.CSS_SELECTOR, "#run").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#overlay img") and "px" in _status(d, By))
    link = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#labels a[href]"))[0].get_attribute("href")
    with urllib.request.urlopen(link, timeout=60) as response:
        png = Image.open(io.BytesIO(response.read()))
    assert png.mode == "P"  # a palette PNG: opens in colours, its values stay the class indices
    np.testing.assert_array_equal(np.asarray(png.getpalette()[:12]).reshape(4, 3), class_palette(4))
    expected = Segmenter(bundle, device="cpu").segment(read_rgb(photo), classes).labels  # the default: auto's
    np.testing.assert_array_equal(np.asarray(png), expected)
    assert _status(browser, By).startswith("320 x 240 px, 4 labels, ")
    shown = browser.find_element(By.CSS_SELECTOR, "#shares").text
    assert all(name in shown for name in classes), shown
    # the engine menu: every engine the bundle can run here, auto's pick selected
    menu = _engine_menu(browser, By)
    assert set(menu) == set(engine_choices(load_bundle(bundle))), menu
    auto = Segmenter(bundle, device="cpu")
    assert browser.find_element(By.CSS_SELECTOR, "#engine input").get_attribute("value") == \
        f"{auto.backend} {auto.precision}"
    shot = Path(os.environ.get("MGCA_DEMO_SCREENSHOT", tmp_path / "demo.png"))
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
    print(f"screenshot: {shot}")


@pytest.mark.parametrize(("readable", "classes", "units", "message"), [
    (True, "", None, "error: no classes given: type class names separated by commas"),
    (False, "cat", None, "error: broken.png is not an image file Pillow can read (UnidentifiedImageError); upload "
                         "a JPEG"),
    (True, "cat", "", "error: units is empty: type an integer >= 0 and at most 1024"),  # issue 36 item 9
])
def test_browser_bad_input_is_a_message(server, browser, tmp_path, readable, classes, units, message):
    """An empty class list, an unreadable file, an emptied number field: one line in the status box, no overlay, no
    traceback."""
    from selenium.webdriver.common.keys import Keys

    photo = tmp_path / ("blocks.png" if readable else "broken.png")
    if readable:
        Image.fromarray(blocky_image(np.random.default_rng(0), 64, 96)).save(photo)
    else:
        photo.write_bytes(b"not a png")
    wait, By = _open(browser, server)
    browser.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(photo))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image img"))
    _type_classes(browser, By, classes)
    if units is not None:
        _open_settings(browser, By)
        shown = wait.until(lambda d: [f for f in d.find_elements(By.CSS_SELECTOR, "#units input") if f.is_displayed()])
        field = shown[0]
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        if units:
            field.send_keys(units)
        field.send_keys(Keys.TAB)
    browser.find_element(By.CSS_SELECTOR, "#run").click()
    wait.until(lambda d: _status(d, By).startswith("error: "))
    assert _status(browser, By).startswith(message)
    assert not browser.find_elements(By.CSS_SELECTOR, "#overlay img")
    assert "Traceback" not in browser.page_source


def test_browser_video_tab_gives_the_overlay_video(server, browser, bundle, tmp_path):
    """Upload a clip in the video tab: the overlay video comes back with a frame per frame, and the areas over all
    frames are Segmenter.segment's on the frames of the uploaded file."""
    import cv2

    rng = np.random.default_rng(11)
    clip = write_clip(tmp_path / "clip.webm", [blocky_image(rng, 48, 64) for _ in range(4)])
    classes = ["cat", "road", "sky"]
    wait, By = _open(browser, server)
    _type_classes(browser, By, ", ".join(classes))
    browser.find_element(By.XPATH, "//button[@role='tab'][contains(., 'video')]").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#clip input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#clip input[type=file]").send_keys(str(clip))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#clip video"))
    browser.find_element(By.CSS_SELECTOR, "#run-video").click()
    status = lambda d: d.find_element(By.CSS_SELECTOR, "#video-status textarea").get_attribute("value") or ""  # noqa: E731
    wait.until(lambda d: "frames labelled" in status(d) or status(d).startswith("error"))
    assert status(browser).startswith("4 frames labelled"), status(browser)
    videos = lambda d: d.find_elements(By.CSS_SELECTOR, "#video-overlay video")  # noqa: E731
    source = wait.until(lambda d: [v.get_attribute("src") for v in videos(d) if v.get_attribute("src")])[0]
    out = tmp_path / "overlay.webm"
    with urllib.request.urlopen(source, timeout=60) as response:
        out.write_bytes(response.read())
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 4
    lines = browser.find_element(By.CSS_SELECTOR, "#video-shares").text.splitlines()
    cells = lines[lines.index("area %") + 1:]  # the table as the page shows it: class, area, class, area, ...
    shown = dict(zip(cells[::2], map(float, cells[1::2]), strict=True))
    expected = clip_areas(bundle, clip, classes)
    assert list(shown) == classes
    np.testing.assert_allclose([shown[name] for name in classes], 100 * expected, atol=0.006)


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 5) -> Path:
    """A raw YUV 4:2:0 clip that Chromium's fake camera plays (--use-file-for-fake-video-capture)."""
    import cv2

    height, width = frames[0].shape[:2]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def test_browser_webcam_streams_labelled_frames(bundle, tmp_path, monkeypatch):
    """The webcam tab with Chromium's fake camera playing a synthetic clip: labelled frames come back, and each frame
    the server received is labelled as Segmenter.segment labels it; the picture the browser shows is exactly the
    overlay of the received frame with those labels. (The browser converts the clip's YUV frames to RGB and encodes
    them before sending, so frames are compared as the server received them, not with the clip's pixels.)"""
    import runtime.demo as demo_module
    from mgca.cli.demo import PAGE_CSS, LabelFiles, build_app
    from runtime.overlay import render_overlay

    try:
        import gradio  # noqa: F401
    except ImportError:
        skip_or_fail("the demo needs Gradio: pip install 'mgca[demo]'")
    rng = np.random.default_rng(12)
    camera = write_y4m(tmp_path / "clip.y4m", [blocky_image(rng, 120, 160) for _ in range(8)])
    received: dict[int, object] = {}
    label = demo_module.LiveStream.label

    def recording(self, frame, wait=demo_module.LIVE_WAIT_S):
        record = label(self, frame, wait)
        if record is not None:
            received[record.index] = record
        return record

    monkeypatch.setattr(demo_module.LiveStream, "label", recording)
    classes = ["cat", "road", "sky"]
    files = LabelFiles()
    app = build_app(Demo(bundle, device="cpu"), files=files, stream_every=0.3)
    port = _free_port()
    app.queue()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=PAGE_CSS)
    try:
        driver = chrome("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                        f"--use-file-for-fake-video-capture={camera}")
    except BaseException:
        app.close()
        raise
    try:
        wait, By = _open(driver, f"http://127.0.0.1:{port}/")
        _type_classes(driver, By, ", ".join(classes))
        driver.find_element(By.XPATH, "//button[@role='tab'][contains(., 'webcam')]").click()
        wait.until(lambda d: d.find_elements(By.XPATH, "//div[@id='webcam']//button[contains(., 'Webcam')]"))[0].click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#webcam button.capture-button"))[0].click()

        def labelled(d) -> tuple[int, str] | None:
            """(frame index, overlay URL) once three frames came back, read while the status holds still."""
            status = d.find_element(By.CSS_SELECTOR, "#live-status textarea").get_attribute("value") or ""
            if not status.startswith("frame ") or int(status.split()[1]) < 2:
                return None
            source = [img.get_attribute("src") for img in d.find_elements(By.CSS_SELECTOR, "#live-overlay img")]
            again = d.find_element(By.CSS_SELECTOR, "#live-status textarea").get_attribute("value")
            return (int(status.split()[1]), source[0]) if source and again == status else None

        index, source = wait.until(labelled)
        with urllib.request.urlopen(source, timeout=60) as response:
            shown = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
    finally:
        driver.quit()
        app.close()
        files.remove()
    seg = Segmenter(bundle, device="cpu")
    assert len(received) >= 3 and index in received
    for record in received.values():
        assert record.frame.ndim == 3 and record.frame.shape[2] == 3
        np.testing.assert_array_equal(record.result.labels, seg.segment(record.frame, classes).labels)
    record = received[index]
    np.testing.assert_array_equal(shown, np.asarray(render_overlay(record.frame, record.result.labels, classes)))
