"""Issue 16's hostile-user findings, one regression test (at least) per item: >128 classes, bundle integrity,
no overwritten work, bad input in one line, EXIF orientation, file modes, and the one user-facing error type.
(Item 1, TorchScript archives, is tests/test_torchscript.py.) New names are imported inside the tests, so each
test fails on its own where the fix is missing."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from runtime import BundleError, RuntimeInputError, Segmenter, TextCacheError, VocabularyError

from .support import (
    BACKBONE_NOTICE,
    EVAL_SMALL,
    REPO,
    as_unprivileged_user,
    blocky_image,
    copy_bundle,
    edit_manifest,
    torch_predictor,
    train_args,
)

ONNX_CPU = dict(backend="onnxruntime", device="cpu")


def one_line_exit_2(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), (needles, lines[0])


@pytest.fixture
def open_folder():
    """A temporary folder any user may traverse (pytest's own are 0700, closed to the unprivileged user)."""
    folder = Path(tempfile.mkdtemp(prefix="mgca-i16-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        with contextlib.suppress(OSError):
            path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- 2. more than 128 classes

def test_thousand_classes_match_pytorch(bundle, tiny_model):
    """1,000 classes (OpenCV 5's resize stops at 128 channels) give the PyTorch pipeline's labels and scores."""
    rng = np.random.default_rng(2)
    names = [f"class {i}" for i in range(1000)]
    embeddings = rng.normal(size=(1000, 64)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    seg = Segmenter(bundle, **ONNX_CPU)
    seg.set_vocabulary((names, embeddings))
    image = blocky_image(rng, 90, 70)
    result = seg.segment(image, return_scores=True)
    reference = torch_predictor(tiny_model, embeddings, names)
    assert result.labels.shape == (90, 70) and result.scores.shape == (1000, 90, 70)
    assert (result.labels == reference.predict(image)).mean() >= 0.999
    np.testing.assert_allclose(result.scores, reference.predict_scores(image).numpy(), atol=2e-4)


def test_score_upsampling_is_the_contracts_three_steps(bundle):
    """The composed separable resize equals bilinear to the grid's pixel size, crop (or edge-extend) to the
    resized size, bilinear to the input (torch's F.interpolate), for both window paddings."""
    import torch.nn.functional as F

    from runtime.contract import InferenceSettings
    from runtime.postprocess import scores_to_labels
    from runtime.preprocess import prepare

    for padding in ("crop", "image"):
        settings = InferenceSettings(short_side=96, window=64, stride=32, units=0, padding=padding)
        for height, width in [(50, 333), (96, 96), (131, 47)]:
            prepared = prepare(np.zeros((height, width, 3), np.uint8), settings, 8, np.zeros(3, np.float32),
                               np.ones(3, np.float32))
            scores = np.random.default_rng(height).uniform(-1, 1, (*prepared.grid_hw, 300)).astype(np.float32)
            labels, kept = scores_to_labels(scores, prepared, keep_scores=True, output_stride=8)
            full = F.interpolate(torch.from_numpy(scores.astype(np.float64)).permute(2, 0, 1)[None],
                                 size=(prepared.grid_hw[0] * 8, prepared.grid_hw[1] * 8), mode="bilinear",
                                 align_corners=False)
            full = full[:, :, :prepared.resized_hw[0], :prepared.resized_hw[1]]
            pad_h, pad_w = prepared.resized_hw[0] - full.shape[2], prepared.resized_hw[1] - full.shape[3]
            full = F.pad(full, (0, pad_w, 0, pad_h), mode="replicate")
            full = F.interpolate(full, size=(height, width), mode="bilinear", align_corners=False)[0].numpy()
            np.testing.assert_allclose(kept, full, atol=1e-5)
            assert (labels == full.argmax(axis=0)).mean() > 0.999


def test_score_upsampling_extends_a_short_grid_by_its_edge():
    """Where the grid stops short of the resized image (< os px) the last row/column is repeated."""
    from runtime.postprocess import bilinear_weights, upsample_weights

    weights = upsample_weights(3, 8, 27, 27)  # grid 3 x 8 = 24 px, resized 27: 3 rows repeat row 23
    np.testing.assert_allclose(weights[:24], bilinear_weights(24, 3), atol=1e-7)
    np.testing.assert_array_equal(weights[24:], np.repeat(weights[23:24], 3, axis=0))


# ---------------------------------------------------------------- 3. bundle integrity

def test_altered_model_file_is_refused(bundle, tmp_path):
    altered = copy_bundle(bundle, tmp_path / "b")
    data = bytearray((altered / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    data[len(data) // 2 + 1] ^= 0xFF
    (altered / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx does not match its sha256.*re-export") as info:
        Segmenter(altered, **ONNX_CPU)
    assert "\n" not in str(info.value)


def test_wrong_or_missing_hash_is_refused(bundle, tmp_path):
    wrong = copy_bundle(bundle, tmp_path / "wrong")
    manifest = edit_manifest(wrong)
    edit_manifest(wrong, files_sha256={**manifest["files_sha256"], "model.onnx": "0" * 64})
    with pytest.raises(BundleError, match="does not match its sha256"):
        Segmenter(wrong, **ONNX_CPU)
    edit_manifest(wrong, files_sha256={k: v for k, v in manifest["files_sha256"].items() if k != "model.onnx"})
    with pytest.raises(BundleError, match="no sha256 for model.onnx"):
        Segmenter(wrong, **ONNX_CPU)
    cache = copy_bundle(bundle, tmp_path / "cache")
    with np.load(cache / "text_cache.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["embeddings"] = arrays["embeddings"][::-1].copy()  # same names, shuffled vectors
    np.savez(cache / "text_cache.npz", **arrays)
    with pytest.raises(BundleError, match="text_cache.npz does not match its sha256"):
        Segmenter(cache, **ONNX_CPU)
    with pytest.raises(BundleError, match="text_cache.npz does not match its sha256"):  # named explicitly too
        Segmenter(cache, **ONNX_CPU, text_cache=cache / "text_cache.npz")


@pytest.mark.parametrize("name", ["../outside/model.onnx", "/etc/passwd", "sub/model.onnx", ".."])
def test_model_paths_stay_inside_the_bundle(bundle, tmp_path, name):
    moved = copy_bundle(bundle, tmp_path / "b")
    (tmp_path / "outside").mkdir()
    shutil.copy(bundle / "model.onnx", tmp_path / "outside" / "model.onnx")
    edit_manifest(moved, models__onnx=name)
    with pytest.raises(BundleError, match="inside the bundle folder"):
        Segmenter(moved, **ONNX_CPU)


def test_links_out_of_the_bundle_are_refused(bundle, tmp_path):
    linked = copy_bundle(bundle, tmp_path / "b")
    (tmp_path / "elsewhere.onnx").write_bytes((bundle / "model.onnx").read_bytes())
    (linked / "model.onnx").unlink()
    (linked / "model.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    with pytest.raises(BundleError, match="links outside the bundle folder"):
        Segmenter(linked, **ONNX_CPU)


@pytest.mark.parametrize("std", [[0, 0, 0], [0.2, -0.1, 0.3], [0.2, float("nan"), 0.3]])
def test_normalisation_values_are_checked(bundle, tmp_path, std):
    bad = copy_bundle(bundle, tmp_path / "b")
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["input"]["std"] = std
    (bad / "manifest.json").write_text(json.dumps(manifest))  # NaN is written as the token NaN, which json reads
    with pytest.raises(BundleError, match="input.std must hold 3 positive finite numbers"):
        Segmenter(bad, **ONNX_CPU)


def test_edited_window_is_refused_at_load(bundle, tmp_path):
    """inference.window (and a top-level copy) changed together to another valid size: refused when the bundle is
    opened, since the graph's fixed input says otherwise, not at the first segment()."""
    edited = copy_bundle(bundle, tmp_path / "b")
    manifest = edit_manifest(edited)
    edit_manifest(edited, window=128, inference={**manifest["inference"], "window": 128, "short_side": 128,
                                                 "stride": 64})
    with pytest.raises(BundleError, match="model.onnx has input N x 3 x 64 x 64.*inference.window 128"):
        Segmenter(edited, **ONNX_CPU)
    edit_manifest(edited, window=64, inference=manifest["inference"])
    edit_manifest(edited, window=128)  # the two copies disagree
    with pytest.raises(BundleError, match="window 128 and inference.window 64 differ"):
        Segmenter(edited, **ONNX_CPU)


# ---------------------------------------------------------------- 4 and 7. training never overwrites, fails early


def test_training_refuses_to_overwrite_an_earlier_run(tmp_path, capsys):
    from mgca.train import main

    assert main(train_args(tmp_path, "train.max_steps=2")) == 0
    earlier = (tmp_path / "last.pt").read_bytes()
    capsys.readouterr()
    one_line_exit_2(main(train_args(tmp_path, "train.max_steps=1")), capsys.readouterr().err,
                    "last.pt holds an earlier run of 2 steps", "train.resume=auto", "--overwrite")
    assert (tmp_path / "last.pt").read_bytes() == earlier
    assert main(train_args(tmp_path, "train.max_steps=1", "--overwrite")) == 0
    assert torch.load(tmp_path / "last.pt", weights_only=True)["train_state"]["step"] == 1
    assert main(train_args(tmp_path, "train.max_steps=2", "train.resume=auto")) == 0  # continuing is no overwrite


def test_the_embedded_default_can_be_run_again(tmp_path, capsys):
    """`python -m mgca.train` twice: the second run continues (or re-scores) its own run instead of refusing."""
    from mgca.config import load_config
    from mgca.train import check_output_dir, embedded_config_path, main
    from runtime.errors import MgcaError

    assert load_config(embedded_config_path()).train.resume == "auto"
    args = ["--clip", "mgca-tiny", "pretrain.enabled=false", "benchmark.enabled=false", "data.synthetic_size=8",
            "data.image_size=64", "train.batch_size=4", "optim.epochs=1", "train.max_steps=1",
            f"train.output_dir={tmp_path}"]
    assert main(args) == 0 and main(args) == 0, capsys.readouterr().err
    assert "done, 1 steps" in capsys.readouterr().out
    with pytest.raises(MgcaError, match="recipe differs from this run's in backbone.arch"):  # issue 30, item 1
        check_output_dir(load_config(embedded_config_path(), [f"train.output_dir={tmp_path}"]))


def test_unwritable_output_dir_fails_before_training(tmp_path):
    from mgca.config import load_config
    from mgca.train import Trainer, embedded_config_path

    cfg = load_config(embedded_config_path(), ["pretrain.enabled=false", "backbone.arch=mgca-tiny",
                                               "train.output_dir=/proc/mgca-run"])
    with pytest.raises(ValueError, match="train.output_dir /proc/mgca-run cannot be written"):  # OutputPathError
        Trainer(cfg)


def test_eval_checks_json_path_before_evaluating(voc_tree, monkeypatch, capsys):
    from mgca.cli import eval as eval_cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("the evaluation ran before the --json path was checked")

    monkeypatch.setattr(eval_cli, "evaluate", must_not_run)
    code = eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--decoder", "none", "--json",
                          "/proc/nope/out.json", *EVAL_SMALL])
    one_line_exit_2(code, capsys.readouterr().err, "--json", "/proc/nope")


# ---------------------------------------------------------------- 5. mgca-segment never overwrites its input

def test_segment_refuses_to_overwrite_its_input(tmp_path, monkeypatch, capsys):
    from mgca.cli import segment as segment_cli

    photo = tmp_path / "photo.jpg"
    Image.fromarray(blocky_image(np.random.default_rng(0), 40, 60)).save(photo)
    original = photo.read_bytes()
    monkeypatch.chdir(tmp_path)
    common = ["--classes", "cat,dog", "--decoder", "none", "--short-side", "64", "--window", "64", "--stride", "32"]
    for out in ["photo.jpg", str(photo), "./sub/../photo.jpg"]:
        (tmp_path / "sub").mkdir(exist_ok=True)
        one_line_exit_2(segment_cli.main(["photo.jpg", *common, "--out", out]), capsys.readouterr().err,
                        "is the input file")
    (tmp_path / "alias.jpg").symlink_to(photo)
    one_line_exit_2(segment_cli.main(["photo.jpg", *common, "--labels-out", "alias.jpg"]),
                    capsys.readouterr().err, "is the input file")
    assert photo.read_bytes() == original


def test_an_unknown_template_set_is_one_line(tmp_path, capsys):
    """get_templates raises the project's error type naming the set and the choices; the CLIs print it as one line."""
    from mgca.cli import segment as segment_cli
    from mgca.prompts import TEMPLATE_SETS, get_templates
    from runtime.errors import MgcaError

    with pytest.raises(MgcaError, match="unknown prompt template set 'nope'; choose one of") as info:
        get_templates("nope")
    assert all(name in str(info.value) for name in TEMPLATE_SETS) and isinstance(info.value, ValueError)
    photo = tmp_path / "photo.png"
    Image.fromarray(blocky_image(np.random.default_rng(0), 40, 60)).save(photo)
    out = tmp_path / "o.png"
    code = segment_cli.main([str(photo), "--classes", "cat,dog", "--decoder", "none", "--templates", "nope",
                             "--short-side", "64", "--window", "64", "--stride", "32", "--out", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if BACKBONE_NOTICE not in line]  # the random-init note
    one_line_exit_2(code, "\n".join(lines), "mgca-segment: error:", "template set 'nope'", "tcl")
    assert "Traceback" not in err
    assert not out.exists()


# ---------------------------------------------------------------- 6, 13, 15. runtime input

def test_a_list_must_hold_images(segmenter):
    image = blocky_image(np.random.default_rng(0), 8, 10)
    with pytest.raises(RuntimeInputError, match="image 0 of the list is a list.*img.tolist") as info:
        segmenter.segment(image.tolist())
    assert "\n" not in str(info.value)
    assert len(segmenter.segment([image, Image.fromarray(image)])) == 2  # arrays, or objects numpy can read


@pytest.mark.parametrize("threshold", ["0.5", float("nan"), 1.5, True, [0.5]])
def test_background_threshold_must_be_a_number_in_0_1(segmenter, threshold):
    with pytest.raises(RuntimeInputError, match="background_threshold must be a number in"):
        segmenter.segment(np.zeros((20, 20, 3), np.uint8), background_threshold=threshold)


def test_segment_none_says_none(segmenter):
    with pytest.raises(RuntimeInputError, match="image is None") as info:
        segmenter.segment(None)
    assert "dtype object" not in str(info.value)


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


# ---------------------------------------------------------------- 8. unwritable and unreadable paths

def test_export_to_an_unwritable_folder_is_one_line(tiny_checkpoint, capsys):
    from export.cli import main as export_main

    for out in ["/proc/mgca-bundle", "/sys/mgca-bundle"]:
        code = export_main(["--checkpoint", str(tiny_checkpoint), "--out", out, "--window", "64"])
        one_line_exit_2(code, capsys.readouterr().err, f"--out {out} cannot be written")


def test_unreadable_bundle_and_manifest_are_named(bundle, open_folder):
    closed = copy_bundle(bundle, open_folder / "closed")
    closed.chmod(0)
    with as_unprivileged_user(), pytest.raises(BundleError, match="cannot read bundle .*Permission denied") as info:
        Segmenter(closed, **ONNX_CPU)
    assert "\n" not in str(info.value)
    closed.chmod(0o755)
    (closed / "manifest.json").chmod(0)
    with as_unprivileged_user(), pytest.raises(BundleError, match="cannot read bundle .*manifest.json") as info:
        Segmenter(closed, **ONNX_CPU)
    assert "not valid JSON" not in str(info.value)


# ---------------------------------------------------------------- 9. config ranges

@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size=0 is out of range: it must be >= 1"),
    ("train.batch_size=-4", "train.batch_size=-4 is out of range"),
    ("optim.lr=-1", "optim.lr=-1.0 is out of range: it must be > 0"),
    ("data.image_size=0", "data.image_size=0 is out of range"),
    ("optim.epochs=2.5", "optim.epochs: expected int (a whole number), got 2.5"),
    ("loss.k_obj=2", "loss.k_obj=2.0 is out of range: it must be > 0 and <= 1"),
])
def test_config_ranges_are_checked_before_any_work(tmp_path, capsys, override, message):
    from mgca.train import main

    one_line_exit_2(main(train_args(tmp_path, override)), capsys.readouterr().err, message)
    assert not (tmp_path / "last.pt").exists()


# ---------------------------------------------------------------- 10. a truncated CLIP cache

def test_truncated_clip_cache_is_pretrained_again(tmp_path, capsys):
    from mgca.clip_pretrain import cache_path, pretrain_clip
    from mgca.config import PretrainConfig

    cfg = PretrainConfig(enabled=True, steps=2, pool_size=16, batch_size=8, warmup_steps=1, cache_dir=str(tmp_path))
    first = pretrain_clip("mgca-synth", cfg, progress=False)
    whole = first.path.read_bytes()
    first.path.write_bytes(whole[: len(whole) // 3])  # an interrupted copy
    capsys.readouterr()
    again = pretrain_clip("mgca-synth", cfg, progress=False)
    err = capsys.readouterr().err
    assert not again.cached and again.path == cache_path("mgca-synth", cfg)
    assert err.count("\n") == 1 and "unreadable" in err and "pretraining it again" in err
    assert "visual.proj" in torch.load(again.path, weights_only=True)  # whole again
    assert pretrain_clip("mgca-synth", cfg, progress=False).cached


# ---------------------------------------------------------------- 11, 12. vocabularies

def test_in_memory_vocabularies_are_checked_like_files(bundle, tmp_path, segmenter):
    from runtime.text_cache import load_text_cache

    seg = Segmenter(bundle, **ONNX_CPU)
    emb = np.eye(3, 64, dtype=np.float32)
    with pytest.raises(TextCacheError, match="repeat 'cat'"):
        seg.set_vocabulary((["cat", "cat", "dog"], emb))
    nan = emb.copy()
    nan[1, 0] = np.nan
    with pytest.raises(TextCacheError, match="non-finite"):
        seg.set_vocabulary((["cat", "dog", "sky"], nan))
    with np.load(bundle / "text_cache.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "arch": "ViT-B-16", "text_sha256": "e" * 64}))
    np.savez(tmp_path / "other.npz", **arrays)
    foreign = load_text_cache(tmp_path / "other.npz")  # read without a bundle to compare with
    with pytest.raises(TextCacheError, match="was made for backbone ViT-B-16"):
        seg.set_vocabulary(foreign)
    seg.set_vocabulary((["cat", "dog", "sky"], emb))  # bare arrays: the caller vouches for the backbone
    assert seg.class_names == ("cat", "dog", "sky")


def test_manifest_without_text_hash_is_refused(bundle, tmp_path):
    stripped = copy_bundle(bundle, tmp_path / "b")
    manifest = edit_manifest(stripped)
    edit_manifest(stripped, backbone={k: v for k, v in manifest["backbone"].items() if k != "text_sha256"})
    with pytest.raises(BundleError, match="backbone.text_sha256 is missing"):
        Segmenter(stripped, **ONNX_CPU)


def test_repeated_classes_are_refused(segmenter, tiny_model, class_embeddings):
    with pytest.raises(VocabularyError, match="repeat 'cat'") as info:
        segmenter.segment(np.zeros((20, 20, 3), np.uint8), classes=["cat", "cat", "dog"])
    assert "\n" not in str(info.value)
    with pytest.raises(VocabularyError, match="repeat 'cat'"):
        torch_predictor(tiny_model, class_embeddings).set_classes(["cat", "cat", "dog"])


# ---------------------------------------------------------------- 14. EXIF orientation

@pytest.fixture
def sideways_photo(tmp_path) -> Path:
    """Stored 120 wide x 80 high with EXIF orientation 6: it displays 80 wide x 120 high."""
    pixels = np.zeros((80, 120, 3), np.uint8)
    pixels[:, :60] = (200, 40, 40)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.fromarray(pixels).save(path, exif=exif.tobytes())
    return path


def test_exif_orientation_is_applied_everywhere(sideways_photo, tmp_path, capsys):
    from calibration.reader import read_rgb as calibration_read
    from mgca.cli import segment as segment_cli
    from mgca.evalsets.readers import read_image
    from mgca.pairs import load_image

    assert load_image(sideways_photo).size == (80, 120)  # training pairs (PIL: width, height)
    assert read_image(sideways_photo).shape == (120, 80, 3)  # evaluation sets
    assert calibration_read(sideways_photo).shape == (120, 80, 3)  # calibration and parity images
    labels = tmp_path / "labels.png"
    code = segment_cli.main([str(sideways_photo), "--classes", "red,black", "--decoder", "none", "--out",
                             str(tmp_path / "overlay.png"), "--labels-out", str(labels), "--short-side", "64",
                             "--window", "64", "--stride", "32"])
    assert code == 0, capsys.readouterr().err
    assert np.asarray(Image.open(labels)).shape == (120, 80)


def test_exif_rotated_eval_image_matches_its_label(sideways_photo, tmp_path):
    from mgca.evalsets import open_dataset

    root = tmp_path / "ade"
    (root / "images" / "validation").mkdir(parents=True)
    (root / "annotations" / "validation").mkdir(parents=True)
    shutil.copy(sideways_photo, root / "images" / "validation" / "a.jpg")
    Image.fromarray(np.ones((120, 80), np.uint8)).save(root / "annotations" / "validation" / "a.png")
    sample = open_dataset("ade20k", root)[0]
    assert sample.image.shape[:2] == sample.label.shape == (120, 80)


# ---------------------------------------------------------------- 16. one atomic writer, usual modes

@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_have_the_usual_mode(tmp_path, tiny_model, tiny_config, umask):
    from mgca.checkpoint import atomic_torch_save, save_checkpoint
    from mgca.config import config_to_dict
    from runtime.text_cache import write_text_cache

    previous = os.umask(umask)
    try:
        written = [
            save_checkpoint(tmp_path / "last.pt", {"config": config_to_dict(tiny_config), "decoder": {}}),
            atomic_torch_save(tmp_path / "clip_cache" / "tiny.pt", tiny_model.backbone.clip.state_dict()),
            write_text_cache(tmp_path / "cache.npz", np.eye(2, 64), ["a", "b"], ["{}"],
                             tiny_model.backbone.identity.to_dict()),
        ]
    finally:
        os.umask(previous)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_atomic_writes_leave_the_process_umask_alone(tmp_path, monkeypatch):
    """The temporary file gets its mode from the kernel: no os.umask round trip, which races with other threads
    creating files (they would get the temporary umask)."""
    from runtime.files import atomic_write_bytes

    def no_umask(*args):
        raise AssertionError("os.umask changed the process-wide umask")

    monkeypatch.setattr(os, "umask", no_umask)
    atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert (tmp_path / "x.bin").read_bytes() == b"data"


def test_bundle_files_have_the_usual_mode(bundle):
    umask = os.umask(0)
    os.umask(umask)
    for path in bundle.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


# ---------------------------------------------------------------- one user-facing error type

def project_exception_classes() -> list[type]:
    """Every exception class defined in the project's modules (imported, so they exist)."""
    import importlib
    import pkgutil

    found = []
    for package in ("runtime", "calibration", "mgca", "export"):
        module = importlib.import_module(package)
        names = [package] + [f"{package}.{m.name}" for m in pkgutil.walk_packages(module.__path__)]
        for name in names:
            if name.startswith("mgca.cli") or name.endswith("__main__"):
                continue
            for value in vars(importlib.import_module(name)).values():
                if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == name:
                    found.append(value)
    return found


def test_every_project_error_is_an_mgca_error():
    from runtime.errors import MgcaError

    classes = project_exception_classes()
    assert len(classes) >= 19
    assert [c.__qualname__ for c in classes if not issubclass(c, MgcaError)] == []
    assert "torch" not in (REPO / "runtime" / "errors.py").read_text()


def test_clis_print_user_errors_in_one_line_and_keep_tracebacks_for_bugs(tmp_path, voc_tree, capsys, monkeypatch):
    from export.cli import main as export_main
    from mgca.cli import eval as eval_cli

    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not a checkpoint")
    one_line_exit_2(export_main(["--checkpoint", str(broken), "--out", str(tmp_path / "b")]),
                    capsys.readouterr().err, "corrupt or truncated")
    one_line_exit_2(eval_cli.main(["--dataset", "voc21", "--root", str(tmp_path), "--checkpoint", str(broken)]),
                    capsys.readouterr().err, "voc21")

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(eval_cli, "apply_protocol", bug)
    with pytest.raises(ZeroDivisionError):  # not a user error: the traceback is kept
        eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--decoder", "none"])


def test_runtime_errors_share_the_base(bundle, tmp_path):
    from runtime.errors import MgcaError

    with pytest.raises(MgcaError):
        Segmenter(tmp_path / "missing")
    with pytest.raises(MgcaError):
        Segmenter(bundle, **ONNX_CPU).segment(np.zeros((4, 4, 3), np.float32))
