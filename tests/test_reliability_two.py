"""Hardening, second round, part two (issue 30): each test fails without its check (docs/reliability.md).

Items 2's tests (re-exports) live in tests/test_export.py beside the exporter's other tests."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .support import blocky_image, labelled_folder, one_line_error

SMALL = ["--short-side", "64", "--window", "64", "--stride", "32", "--device", "cpu", "--no-progress"]


# ---------------------------------------------------------------- 3. no output resolves to an input

@pytest.mark.parametrize("target", ["classes.txt", "images/im0.png", "masks/im1.png"])
def test_eval_json_never_overwrites_what_it_reads(tmp_path, capsys, target):
    """The issue's case: `mgca-eval --json classes.txt` overwrote the class file it was reading."""
    from mgca.cli import eval as eval_cli

    root = labelled_folder(tmp_path / "data")
    before = (root / target).read_bytes()
    code = eval_cli.main(["--dataset", "folder", "--root", str(root), "--classes", str(root / "classes.txt"),
                          "--decoder", "none", "--arch", "mgca-tiny", *SMALL, "--json", str(root / target)])
    assert "is the input file" in one_line_error(code, capsys.readouterr().err)
    assert (root / target).read_bytes() == before


def _photos(folder: Path) -> Path:
    folder.mkdir()
    Image.fromarray(blocky_image(np.random.default_rng(0), 40, 60)).save(folder / "a.png")
    return folder


def test_segment_outputs_never_overwrite_the_class_file(tmp_path, capsys, monkeypatch):
    from mgca.cli import segment as segment_cli

    monkeypatch.chdir(tmp_path)  # the one-photo overlay's default place
    classes = tmp_path / "classes.csv"  # a name a summary could have
    classes.write_text("cat\ndog\n")
    photos = _photos(tmp_path / "photos")
    common = ["--classes", str(classes), "--decoder", "none", "--short-side", "64", "--window", "64", "--stride", "32"]
    for argv in ([str(photos / "a.png"), "--labels-out", str(classes)],
                 [str(photos), "--out", str(tmp_path / "out"), "--summary", str(classes)]):
        code = segment_cli.main([*argv, *common])
        assert "is the input file" in one_line_error(code, capsys.readouterr().err)
    assert classes.read_text() == "cat\ndog\n"


# ---------------------------------------------------------------- 1. resume after a changed recipe

def test_resume_refuses_a_changed_recipe_and_allows_the_safe_keys(tmp_path, capsys):
    """The issue's keys each changed the run silently under train.resume=auto; now each is one line naming it."""
    from mgca.train import main

    from .support import train_args

    assert main(train_args(tmp_path, "train.max_steps=1")) == 0
    earlier = (tmp_path / "last.pt").read_bytes()
    for change in ("train.batch_size=2", "data.seed=1", "data.image_size=96", "train.seed=3",
                   "backbone.dense_mode=maskclip", "optim.epochs=2"):
        capsys.readouterr()
        code = main(train_args(tmp_path, "train.max_steps=2", "train.resume=auto", change))
        line = one_line_error(code, capsys.readouterr().err)
        assert f"recipe differs from this run's in {change.split('=')[0]} " in line and "--overwrite" in line, line
        assert (tmp_path / "last.pt").read_bytes() == earlier
    safe = ("train.max_steps=2", "train.resume=auto", "data.num_workers=1", "train.log_every=1", "train.device=cpu")
    assert main(train_args(tmp_path, *safe)) == 0, capsys.readouterr().err
    assert main(train_args(tmp_path, "train.max_steps=1", "train.batch_size=2", "--overwrite")) == 0


# ---------------------------------------------------------------- 4. write checks come first and in one line

def test_an_unwritable_clip_cache_is_refused_before_pretraining(tmp_path, monkeypatch):
    """A read-only working folder with the default relative pretrain.cache_dir: the pretraining ran to its end and
    was then lost with a raw PermissionError: 'runs'."""
    import mgca.clip_pretrain
    from mgca.config import load_config
    from mgca.embedded import ensure_clip_weights
    from mgca.train import embedded_config_path
    from runtime.errors import OutputPathError

    def must_not_run(*args, **kwargs):
        raise AssertionError("pretrained before the cache folder was checked")

    monkeypatch.setattr(mgca.clip_pretrain, "pretrain_clip", must_not_run)
    (tmp_path / "ro").write_text("a file where the cache folder would go\n")
    cfg = load_config(embedded_config_path(), [f"pretrain.cache_dir={tmp_path / 'ro' / 'cache'}"])
    with pytest.raises(OutputPathError, match="pretrain.cache_dir .* cannot be written"):
        ensure_clip_weights(cfg, progress=False)


@pytest.mark.parametrize("summary, needle", [("folder.csv", "is a folder"), ("notes.txt/s.csv", "the folder of")])
def test_a_bad_summary_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch, summary, needle):
    """--summary naming a folder or below a file failed only after the model (and, before issue 29, every image)."""
    from mgca.cli import segment as segment_cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model loaded before --summary was checked")

    monkeypatch.setattr(segment_cli, "_predict", must_not_run)
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "notes.txt").write_text("a file\n")
    code = segment_cli.main([str(_photos(tmp_path / "photos")), "--classes", "cat,dog", "--decoder", "none",
                             "--out", str(tmp_path / "out"), "--summary", str(tmp_path / summary)])
    assert needle in one_line_error(code, capsys.readouterr().err)


# ---------------------------------------------------------------- 5. environment errors are one line

def _unreadable(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    path.chmod(0o000)
    return path


def test_unreadable_files_say_they_cannot_be_read(world_folder, tiny_checkpoint):
    """An unreadable --config or --palette gave a raw PermissionError; an unreadable checkpoint was called
    "corrupt or truncated (PermissionError)"."""
    from mgca.checkpoint import CheckpointError, load_checkpoint
    from mgca.config import ConfigError, load_config
    from mgca.evalsets.folder import read_palette
    from mgca.evalsets.readers import DatasetError

    from .support import as_unprivileged_user

    config = _unreadable(world_folder, "run.yaml", "train:\n  seed: 1\n")
    palette = _unreadable(world_folder, "palette.txt", "cat 1 2 3\n")
    checkpoint = _unreadable(world_folder, "last.pt", tiny_checkpoint.read_bytes())
    with as_unprivileged_user():
        with pytest.raises(ConfigError, match=r"config file .*run.yaml cannot be read \(Permission denied\)"):
            load_config(config)
        with pytest.raises(DatasetError, match=r"palette file .*palette.txt cannot be read \(Permission denied\)"):
            read_palette(palette, ("cat",), 255)
        with pytest.raises(CheckpointError, match=r"last.pt cannot be read \(Permission denied\); make it readable"):
            load_checkpoint(checkpoint)


# ---------------------------------------------------------------- 6. training config and device errors

@pytest.mark.parametrize("text", ["5\n", "- a\n- b\n", "just words\n"])
def test_a_config_that_is_no_mapping_is_one_line(tmp_path, capsys, text):
    from mgca.train import main

    (tmp_path / "run.yaml").write_text(text)
    code = main(["--config", str(tmp_path / "run.yaml"), f"train.output_dir={tmp_path / 'out'}"])
    assert "not a mapping of sections" in one_line_error(code, capsys.readouterr().err)


@pytest.mark.parametrize("lose_log", [False, True])
def test_a_damaged_label_png_is_redone_not_counted(bundle, tmp_path, capsys, lose_log):
    """A damaged label PNG in OUT counted as done, then crashed the summary with UnidentifiedImageError."""
    from runtime.batch import LOG_NAME

    from .support import segment, three_photos

    photos, out = three_photos(tmp_path / "photos"), tmp_path / "out"
    assert segment([photos], out, bundle) == 0
    damaged = sorted((out / "labels").rglob("*.png"))[1]
    whole = damaged.read_bytes()
    damaged.write_bytes(whole[: len(whole) // 2])
    if lose_log:
        (out / LOG_NAME).unlink()  # an earlier run's outputs without their log lines
    capsys.readouterr()
    assert segment([photos], out, bundle) == 0, capsys.readouterr().err
    assert "1 images segmented, 2 already done, 0 failed" in capsys.readouterr().out
    assert damaged.read_bytes() == whole


@pytest.mark.parametrize("override, needle", [
    ("data.image_size=70", "data.image_size=70 is not a multiple of the patch size 16"),
    ("train.device=tpu", "device 'tpu': TPUs (torch_xla) are not supported"),
    ("train.device=meta", "device 'meta' cannot be used: mgca runs on cpu, cuda, mps"),
    ("train.device=gpu0", "device 'gpu0' is not a device name"),
    ("train.device=cuda", "device 'cuda' cannot be used: no CUDA GPU is visible here"),
])
def test_training_device_and_image_size_errors_are_one_line(tmp_path, capsys, monkeypatch, override, needle):
    """Each gave a raw RuntimeError/ValueError (the image size only at step 0). No GPU is needed: CUDA is hidden."""
    import torch

    from mgca.train import main

    from .support import train_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(train_args(tmp_path, "train.max_steps=1", override))
    assert needle in one_line_error(code, capsys.readouterr().err)
    assert not (tmp_path / "last.pt").exists()


# ---------------------------------------------------------------- 7. Ray

@pytest.mark.parametrize("flags, needle", [
    (["--actor-cpus", "-1"], "--actor-cpus must be a positive number of CPUs, got -1.0"),
    (["--actor-cpus", "nan"], "--actor-cpus must be a positive number of CPUs, got nan"),
    (["--actor-gpus", "-1"], "--actor-gpus must be 0 or a positive number of GPUs, got -1.0"),
])
def test_bad_ray_actor_sizes_are_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch, flags, needle):
    from mgca.cli import segment as segment_cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model loaded before the Ray options were checked")

    monkeypatch.setattr(segment_cli, "_predict", must_not_run)
    code = segment_cli.main([str(_photos(tmp_path / "photos")), "--classes", "cat,dog", "--engine", str(tmp_path),
                             "--out", str(tmp_path / "out"), "--ray", *flags])
    assert needle in one_line_error(code, capsys.readouterr().err)


def test_ray_auto_without_a_cluster_is_one_line(tmp_path):
    """A real `ray.init(address="auto")` in a fresh process (this one may run Ray already), no cluster running."""
    import os
    import subprocess
    import sys

    pytest.importorskip("ray", reason="Ray is an optional extra (mgca[ray])")
    from .support import REPO

    code = ("import ray; from runtime.ray_start import RayOptions, start_ray\n"
            "try:\n    start_ray(ray, RayOptions('auto'))\nexcept Exception as err:\n"
            "    print(type(err).__name__, err)\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert "RayStartError --ray auto: no Ray cluster answered" in result.stdout, result.stdout + result.stderr
    assert "ray start --head" in result.stdout


class _FakeRay:
    """What start_ray asks of Ray: here a cluster without GPUs, or an init that fails as Ray's does."""

    def __init__(self, init_error: Exception | None = None, initialized: bool = False):
        self.init_error, self.initialized = init_error, initialized

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs):
        raise self.init_error

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0}


def test_ray_start_failures_are_one_line():
    """Without these checks: a raw PermissionError on ~/.ray (read-only HOME), and --actor-gpus 1 on a cluster
    without GPUs waited forever for an actor that could never start."""
    from runtime.ray_start import RayOptions, RayStartError, start_ray

    with pytest.raises(RayStartError, match=r"Ray cannot write its session files \(Permission denied: /h/.ray\)"):
        start_ray(_FakeRay(PermissionError(13, "Permission denied", "/h/.ray")), RayOptions())
    with pytest.raises(RayStartError, match="--actor-gpus 1: the Ray cluster has 0 GPUs, so no actor could ever"):
        start_ray(_FakeRay(initialized=True), RayOptions(num_gpus=1))
    start_ray(_FakeRay(initialized=True), RayOptions(num_gpus=0))  # CPU actors fit


@pytest.mark.skipif(importlib.util.find_spec("grpc") is not None, reason="ray[client] (grpc) is installed here")
def test_ray_client_address_without_the_client_package_is_one_line():
    from runtime.ray_start import RayOptions, RayStartError, start_ray

    with pytest.raises(RayStartError, match=r"--ray ray://head:10001 connects as a Ray client, which needs pip"):
        start_ray(_FakeRay(RuntimeError("ray.init must not be reached")), RayOptions("ray://head:10001"))


# ---------------------------------------------------------------- 8. smaller points

def test_an_unknown_dense_mode_in_a_manifest_is_refused(bundle, tmp_path):
    from runtime import BundleError
    from runtime.bundle import load_bundle

    from .support import copy_bundle, edit_manifest

    edited = copy_bundle(bundle, tmp_path / "b")
    edit_manifest(edited, backbone__dense_mode="fancyclip")
    with pytest.raises(BundleError, match="backbone.dense_mode 'fancyclip' is not one of"):
        load_bundle(edited)


def test_a_graph_of_another_clip_is_refused_even_with_a_matching_sha256(bundle, tmp_path, tiny_config):
    """model.onnx swapped for another CLIP's and files_sha256 edited to match: it loaded and gave other labels."""
    import dataclasses

    import torch

    from export.onnx_export import export_onnx
    from mgca.model import build_model
    from runtime import BundleError, Segmenter
    from runtime.files import file_sha256

    from .support import WINDOW, copy_bundle, edit_manifest

    torch.manual_seed(1)
    other = build_model(dataclasses.replace(tiny_config.backbone, init_seed=7), tiny_config.decoder).eval()
    edited = copy_bundle(bundle, tmp_path / "b")
    export_onnx(other, edited / "model.onnx", window=WINDOW)
    manifest = edit_manifest(edited)
    edit_manifest(edited, files_sha256={**manifest["files_sha256"], "model.onnx": file_sha256(edited / "model.onnx")})
    with pytest.raises(BundleError, match=r"model.onnx was exported from another backbone than the manifest's "
                                          r"\(visual_sha256"):
        Segmenter(edited, backend="onnxruntime", device="cpu")
    Segmenter(bundle, backend="onnxruntime", device="cpu")  # the untouched bundle loads


def test_linked_sub_folders_are_followed_once(bundle, tmp_path, capsys):
    """A symlinked sub-folder was silently skipped by mgca-segment (Path.rglob does not follow links); a link back
    to an ancestor must not loop."""
    from .support import photo, segment

    photos = tmp_path / "photos"
    photo(photos / "a.png")
    photo(tmp_path / "elsewhere" / "b.png", 1)
    (photos / "linked").symlink_to(tmp_path / "elsewhere")
    (photos / "loop").symlink_to(photos)
    assert segment([photos], tmp_path / "out", bundle) == 0, capsys.readouterr().err
    assert "2 images segmented" in capsys.readouterr().out
    assert sorted(p.relative_to(tmp_path / "out" / "labels").as_posix()
                  for p in (tmp_path / "out" / "labels").rglob("*.png")) == ["a.png", "linked/b.png"]


def test_a_colon_in_a_class_name_is_written_escaped(tmp_path):
    """`name: prompt` left no way to write a class whose name holds a colon; `\\:` is one (docs/own-data.md)."""
    from mgca.prompts import read_class_file

    path = tmp_path / "classes.txt"
    path.write_text("screen 16\\:9\nratio 4\\:3: a photo of a 4:3 frame\nroad: a road: wide\n")
    classes = read_class_file(path)
    assert classes.names == ("screen 16:9", "ratio 4:3", "road")
    assert classes.prompts == (None, "a photo of a 4:3 frame", "a road: wide")


# ---------------------------------------------------------------- 2. the staging folder itself (runtime/staging.py)

def test_a_staged_folder_replaces_its_destination_whole_or_not_at_all(tmp_path, monkeypatch):
    from runtime.staging import staged_folder

    out = tmp_path / "b"
    (out / "sub").mkdir(parents=True)
    (out / "model.onnx").write_text("old")
    (out / "README.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt), staged_folder(out, ("model.onnx",), "--out") as staging:
        (staging / "model.onnx").write_text("half")
        raise KeyboardInterrupt
    assert (out / "model.onnx").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    monkeypatch.chdir(out / "sub")  # the working folder inside the folder being replaced
    with staged_folder(out, ("model.onnx",), "--out") as staging:
        (staging / "model.onnx").write_text("new")
    assert (out / "model.onnx").read_text() == "new" and (out / "README.txt").read_text() == "mine"
    assert Path.cwd() == (out / "sub").resolve() and sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    (tmp_path / ".b.0123abcd.staging").mkdir()  # what kill -9 leaves: a staging folder, and an old folder caught
    (out).rename(tmp_path / ".b.89abcdef.old")  # between the two renames
    with staged_folder(out, ("model.onnx",), "--out") as staging:
        assert (out / "README.txt").read_text() == "mine"  # the old folder is put back first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"] and (out / "README.txt").is_file()
    assert not (out / "model.onnx").exists()  # the new bundle had none
    old = tmp_path / ".b.0a0a0a0a.old"  # killed while moving the user's files: the rest waits in the old folder
    old.mkdir()
    (old / "notes.txt").write_text("also mine")
    (old / "model.onnx").write_text("the bundle before")
    with staged_folder(out, ("model.onnx",), "--out"):
        pass
    assert (out / "notes.txt").read_text() == "also mine" and sorted(p.name for p in tmp_path.iterdir()) == ["b"]
