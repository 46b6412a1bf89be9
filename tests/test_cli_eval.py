"""The CLIs on the tiny model: mgca-eval (checkpoint and --decoder none) and mgca-segment, plus their errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgca.cli import eval as eval_cli
from mgca.cli import segment as segment_cli

from .support import EVAL_SMALL, labelled_folder, one_line_error, one_line_exit_2

SMALL = ["--short-side", "64", "--window", "64", "--stride", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    """A 3-image VOC tree in the mmseg layout (random pixels, labels with background, classes and void)."""
    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    rng = np.random.default_rng(0)
    names = ["img_a", "img_b", "img_c"]
    for name, (h, w) in zip(names, [(40, 60), (70, 50), (20, 20)], strict=True):
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        label = np.zeros((h, w), dtype=np.uint8)
        label[h // 4:h // 2, w // 4:w // 2] = 8
        label[-3:, :] = 255
        label[: h // 5, -w // 3:] = 15
        Image.fromarray(label).save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.jpg"
    pixels = np.zeros((48, 72, 3), dtype=np.uint8)
    pixels[:24] = (90, 150, 230)
    pixels[24:] = (60, 160, 60)
    Image.fromarray(pixels).save(path)
    return path


def run_eval(args: list[str], capsys) -> tuple[int, str, str]:
    code = eval_cli.main(args + ["--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_with_checkpoint_writes_table_and_json(voc_root, tiny_checkpoint, tmp_path, capsys):
    out_json = tmp_path / "m.json"
    code, out, err = run_eval(["--dataset", "voc21", "--root", str(voc_root), "--checkpoint", str(tiny_checkpoint),
                               "--json", str(out_json), *SMALL], capsys)
    assert code == 0, err
    assert "mIoU" in out and "aeroplane" in out and "3 of 3 images" in out
    assert "randomly initialised" in err
    result = json.loads(out_json.read_text())
    assert result["num_images"] == 3 and result["dataset"] == "voc21" and result["decoder"] == "checkpoint"
    assert 0.0 <= result["mIoU"] <= 100.0 and result["inference"]["units"] == 36
    assert result["inference"]["background_threshold"] == 0.95 and len(result["per_class"]) == 21


@pytest.mark.parametrize("extra", [
    ["--decoder", "none", "--arch", "mgca-tiny"],
    ["--decoder", "none", "--checkpoint", "CKPT", "--dense-mode", "maskclip"],
    ["--checkpoint", "CKPT", "--units", "0", "--limit", "1"],
    ["--checkpoint", "CKPT", "--unit-scope", "window", "--units", "4", "--background-threshold", "0.5"],
])
def test_eval_variants(voc_root, tiny_checkpoint, tmp_path, capsys, extra):
    extra = [str(tiny_checkpoint) if e == "CKPT" else e for e in extra]
    out_json = tmp_path / "m.json"
    code, out, err = run_eval(["--dataset", "voc20", "--root", str(voc_root), "--json", str(out_json), *SMALL, *extra],
                              capsys)
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert len(result["per_class"]) == 20 and result["inference"]["background_threshold"] is None
    assert result["num_images"] == (1 if "--limit" in extra else 3)
    if "none" in extra:
        assert result["decoder"] == "none" and result["output_stride"] == 16


def test_evaluate_takes_any_predict_callable(voc_root):
    from mgca.evalsets import open_dataset

    dataset = open_dataset("voc21", voc_root)
    perfect, _ = eval_cli.evaluate(dataset, lambda image: np.zeros(image.shape[:2], dtype=np.int64), progress=False)
    assert perfect.iou[0] > 0.5 and perfect.num_images == 3

    def oracle_factory():
        labels = iter([dataset[i].label for i in range(len(dataset))])
        return lambda image: np.where((lab := next(labels)) == 255, 0, lab)

    oracle, _ = eval_cli.evaluate(dataset, oracle_factory(), progress=False)
    assert oracle.miou == pytest.approx(1.0) and oracle.aacc == pytest.approx(1.0)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "voc21", "--root", "/nonexistent/voc", "--decoder", "none"], "not a folder"),
    (["--dataset", "pascal", "--root", ".", "--decoder", "none"], "unknown dataset"),
    (["--dataset", "voc21", "--root", "ROOT"], "pass --checkpoint"),
    (["--dataset", "voc21", "--root", "ROOT", "--checkpoint", "/nonexistent.pt"], "does not exist"),
    (["--dataset", "voc21", "--root", "ROOT", "--checkpoint", "GARBAGE"], "corrupt"),
    (["--dataset", "voc21", "--root", "ROOT", "--decoder", "none", "--arch", "nope-arch"], "unknown CLIP architecture"),
    (["--dataset", "voc21", "--root", "ROOT", "--decoder", "none", "--window", "40"], "window 40"),
])
def test_eval_errors_are_one_line_exit_2(voc_root, tmp_path, capsys, args, message):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    args = [str(voc_root) if a == "ROOT" else str(garbage) if a == "GARBAGE" else a for a in args]
    code, _, err = run_eval(args, capsys)
    lines = [line for line in err.splitlines() if line.startswith("mgca-eval: error")]
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_segment_writes_overlay_with_legend(photo, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "overlay.png"
    labels_out = tmp_path / "labels.png"
    code = segment_cli.main([str(photo), "--classes", "sky, grass,cat", "--checkpoint", str(tiny_checkpoint),
                             "--out", str(out), "--labels-out", str(labels_out), *SMALL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    overlay = Image.open(out)
    assert overlay.format == "PNG" and overlay.width > 72 and overlay.height >= 48
    labels = np.asarray(Image.open(labels_out))
    assert labels.shape == (48, 72) and labels.max() < 3 and str(out) in captured.out


@pytest.mark.parametrize("shape", [(20_000, 2), (2, 20_000), (1, 50_000)])
def test_overlay_stays_within_the_image_pixels_on_thin_images(shape):
    """The legend panel beside a thin strip would make the picture as long as the strip and as wide as the
    panel (75x a 250000 x 4 image's pixels): such an image gets the blend alone, a photo keeps its legend."""
    from runtime.overlay import blend, class_palette, render_overlay

    labels = (np.arange(shape[0] * shape[1]).reshape(shape) // 7 % 3).astype(np.int32)
    image = np.full((*shape, 3), 90, dtype=np.uint8)
    overlay = render_overlay(image, labels, ["sky", "grass", "cat"])
    assert overlay.width * overlay.height <= 4 * labels.size + (1 << 20), overlay.size
    np.testing.assert_array_equal(np.asarray(overlay), blend(image, labels, class_palette(3)))
    photo = render_overlay(image[:48, :72], labels[:48, :72], ["sky", "grass", "cat"])
    assert photo.width > min(72, shape[1])  # the legend panel on the right


def test_segment_with_background_and_default_output(photo, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    code = segment_cli.main([str(photo), "--classes", "sky,grass", "--decoder", "none", "--background-threshold", "0.9",
                             "--labels-out", "labels.png", *SMALL])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "photo_segmented.png").is_file()
    assert np.asarray(Image.open(tmp_path / "labels.png")).max() <= 2


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/photo.jpg", "--classes", "a,b", "--decoder", "none"], "/nonexistent/photo.jpg does not exist"),
    (["PHOTO", "--classes", "a,,b", "--decoder", "none"], "--classes"),
    (["PHOTO", "--classes", "a,b"], "pass --checkpoint"),
])
def test_segment_errors(photo, capsys, args, message):
    code = segment_cli.main([str(photo) if a == "PHOTO" else a for a in args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_module_entry_points_run():
    root = Path(__file__).resolve().parents[1]
    for module in ("mgca.cli.eval", "mgca.cli.segment"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=root, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0 and "usage" in result.stdout


# ---- protocol flags and dense modes (issues 17 and 20) ----------------------------------------------

def test_dense_mode_flag_offers_every_mode():
    from mgca.dense_modes import DENSE_MODES
    from runtime.contract import DENSE_MODE_NAMES

    assert set(eval_cli.DENSE_MODE_NAMES) == set(DENSE_MODES) == set(DENSE_MODE_NAMES)


@pytest.mark.parametrize("mode", ["maskclip", "tcl", "sclip", "clearclip", "naclip", "scclip"])
def test_eval_dense_mode_with_frozen_features(voc_root, tmp_path, capsys, mode):
    """`mgca-eval --dense-mode M --decoder none` for every mode (the 4-layer tiny ViT; SC-CLIP's layer rule)."""
    out_json = tmp_path / "m.json"
    code, out, err = run_eval(["--dataset", "voc21", "--root", str(voc_root), "--decoder", "none", "--arch",
                               "mgca-tiny", "--dense-mode", mode, "--limit", "1", "--json", str(out_json), *SMALL],
                              capsys)
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert result["backbone"]["dense_mode"] == mode and result["protocol"]["dense_mode"] == mode
    assert result["num_images"] == 1 and 0.0 <= result["mIoU"] <= 100.0


def test_eval_json_records_every_protocol_choice(voc_root, tiny_checkpoint, tmp_path, capsys):
    out_json = tmp_path / "m.json"
    code, out, err = run_eval(["--dataset", "voc21", "--root", str(voc_root), "--checkpoint", str(tiny_checkpoint),
                               "--json", str(out_json), "--limit", "1", *SMALL], capsys)
    assert code == 0, err
    result = json.loads(out_json.read_text())
    inference, protocol = result["inference"], result["protocol"]
    assert inference["bg_rule"] == "groupvit" and inference["background_threshold"] == 0.95
    assert inference["long_side"] == 2048 and inference["padding"] == "crop" and inference["pamr"] == 0
    assert protocol["resize"]["rounding"] == "int(side * scale + 0.5)" and protocol["resize"]["long_side"] == 2048
    assert protocol["background"]["rule"] == "groupvit" and protocol["background"]["top_k"] == 5
    assert "group_vit_seg.py" in protocol["background"]["source"]
    assert protocol["templates"] == {"set": "tcl", "count": 9, "average": "raw"}
    assert protocol["windows"]["padding"] == "crop" and protocol["pamr"] is None
    assert protocol["labels"] == {"reduce_zero_label": False, "ignore_index": 255}
    assert "background groupvit 0.95" in out and "templates tcl" in out


@pytest.mark.parametrize("extra, rule, value", [
    (["--bg-rule", "tcl"], "tcl", 0.5),
    (["--bg-rule", "tcl", "--pamr", "2", "--pamr-dilations", "8,16"], "tcl", 0.4),  # TCL lowers it with PAMR
    (["--bg-rule", "softmax", "--padding", "image", "--long-side", "0"], "softmax", 0.95),
    (["--bg-rule", "groupvit", "--background-threshold", "0.5"], "groupvit", 0.5),
])
def test_eval_background_rules(voc_root, tiny_checkpoint, tmp_path, capsys, extra, rule, value):
    out_json = tmp_path / "m.json"
    code, out, err = run_eval(["--dataset", "voc21", "--root", str(voc_root), "--checkpoint", str(tiny_checkpoint),
                               "--json", str(out_json), "--limit", "1", *SMALL, *extra], capsys)
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert result["inference"]["bg_rule"] == rule and result["protocol"]["background"]["value"] == value
    if "--pamr" in extra:
        assert result["protocol"]["pamr"] == {"iterations": 2, "dilations": [8, 16],
                                              "where": result["protocol"]["pamr"]["where"]}


@pytest.mark.parametrize("args, message", [
    (["--bg-rule", "mean"], "invalid choice"),
    (["--pamr", "-1"], "expected an integer >= 0"),
    (["--pamr-dilations", "1,x"], "comma-separated integers"),
])
def test_protocol_flag_errors_are_usage_errors(voc_root, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        eval_cli.main(["--dataset", "voc21", "--root", str(voc_root), "--decoder", "none", *SMALL, *args])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_bad_long_side_is_one_line(voc_root, capsys):
    code, _, err = run_eval(["--dataset", "voc21", "--root", str(voc_root), "--decoder", "none", "--long-side", "10",
                             *SMALL], capsys)
    assert code == 2 and "long_side must be 0 (no cap) or an integer >= short_side 64" in err and "Traceback" not in err


def test_segment_with_dense_mode_pamr_and_tcl_background(photo, tmp_path, capsys):
    labels_out = tmp_path / "labels.png"
    code = segment_cli.main([str(photo), "--classes", "sky,grass", "--decoder", "none", "--dense-mode", "naclip",
                             "--bg-rule", "tcl", "--background-threshold", "0.5", "--pamr", "2",
                             "--labels-out", str(labels_out), "--out", str(tmp_path / "o.png"), *SMALL])
    assert code == 0, capsys.readouterr().err
    assert np.asarray(Image.open(labels_out)).max() <= 2


@pytest.mark.parametrize("target", ["classes.txt", "images/im0.png", "masks/im1.png"])
def test_eval_json_never_overwrites_what_it_reads(tmp_path, capsys, target):
    """The issue's case: `mgca-eval --json classes.txt` overwrote the class file it was reading."""
    from mgca.cli import eval as eval_cli

    root = labelled_folder(tmp_path / "data")
    before = (root / target).read_bytes()
    code = eval_cli.main(["--dataset", "folder", "--root", str(root), "--classes", str(root / "classes.txt"),
                          "--decoder", "none", "--arch", "mgca-tiny", *SMALL, "--no-progress", "--json",
                          str(root / target)])
    assert "is the input file" in one_line_error(code, capsys.readouterr().err)
    assert (root / target).read_bytes() == before


def test_eval_checks_json_path_before_evaluating(voc_tree, monkeypatch, capsys):
    from mgca.cli import eval as eval_cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("the evaluation ran before the --json path was checked")

    monkeypatch.setattr(eval_cli, "evaluate", must_not_run)
    code = eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--decoder", "none", "--json",
                          "/proc/nope/out.json", *EVAL_SMALL])
    one_line_exit_2(code, capsys.readouterr().err, "--json", "/proc/nope")


def test_eval_limit_must_be_positive(voc_tree, capsys):
    from mgca.cli import eval as eval_cli

    with pytest.raises(SystemExit) as info:
        eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--decoder", "none", "--limit", "-1",
                       *EVAL_SMALL])
    assert info.value.code == 2 and "--limit: expected a positive integer" in capsys.readouterr().err
    from mgca.evalsets import open_dataset
    from mgca.evaluation import evaluate

    with pytest.raises(ValueError, match="limit must be a positive number of images"):  # the library too
        evaluate(open_dataset("voc21", voc_tree), lambda image: image[:, :, 0], limit=-1)


def test_truncated_eval_image_is_named(tmp_path, voc_tree):
    from mgca.evalsets import open_dataset

    root = tmp_path / "VOC2012"
    shutil.copytree(voc_tree, root)
    image = root / "JPEGImages" / "b.jpg"
    image.write_bytes(image.read_bytes()[:200])
    dataset = open_dataset("voc21", root)
    with pytest.raises(ValueError, match=r"b\.jpg cannot be decoded") as info:
        dataset[1]
    assert "\n" not in str(info.value)
