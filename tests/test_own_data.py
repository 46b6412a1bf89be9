"""Your own data (issue 19): any labelled folder in `mgca-eval --dataset folder`, whole folders in `mgca-segment`
(resumable, atomic), and the same job on Ray Data."""
from __future__ import annotations

import csv
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

from .support import EVAL_SMALL, blocky_image, one_line_error, subprocess_env, torch_stubs

FROZEN = ["--decoder", "none", "--arch", "mgca-tiny", "--templates", "plain", *EVAL_SMALL]
SEGMENT_CLASSES = "cat,dog,road,sky"


# ------------------------------------------------------------------------------------------------ labelled folders

@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    """The synthetic benchmark (images/ + masks/ of the generator's 44 classes: 4 backdrops, 40 objects) and a class
    file of its classes (what `--dataset synthetic-stuff` scores)."""
    from mgca.pairs.synthetic import CLASS_NAMES, write_benchmark

    root = write_benchmark(tmp_path_factory.mktemp("synthetic") / "bench", count=6, image_size=48, seed=3)
    (root / "classes.txt").write_text("# the synthetic benchmark's classes\n" + "\n".join(CLASS_NAMES) + "\n")
    return root


def _eval_json(tmp_path: Path, name: str, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    assert eval_cli.main([*args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_folder_reproduces_the_synthetic_benchmark(synthetic_root, tmp_path):
    """Done means: --dataset folder on the benchmark's own files gives what the synthetic benchmark gives (its
    every-pixel protocol, synthetic-stuff: the folder's class file lists all 44 classes)."""
    from mgca.evalsets import FolderSource, open_dataset, open_folder

    benchmark = _eval_json(tmp_path, "synthetic", "--dataset", "synthetic-stuff", "--root", str(synthetic_root),
                           *FROZEN)
    folder = _eval_json(tmp_path, "folder", "--dataset", "folder", "--root", str(synthetic_root), "--classes",
                        str(synthetic_root / "classes.txt"), *FROZEN)
    for key in ("mIoU", "mAcc", "aAcc", "num_images", "num_pixels", "per_class"):
        assert folder[key] == benchmark[key], key
    assert folder["num_images"] == 6 and folder["num_pixels"] > 0
    reference = open_dataset("synthetic-stuff", synthetic_root)
    mine = open_folder(FolderSource(synthetic_root / "classes.txt", synthetic_root))
    assert mine.spec.classes == reference.spec.classes
    for a, b in zip(reference, mine, strict=True):
        assert a.name == b.name and np.array_equal(a.label, b.label) and np.array_equal(a.image, b.image)


def _colour_copy(root: Path, dest: Path, palette: np.ndarray) -> Path:
    """The benchmark as nested split folders with RGB colour masks (label k -> palette[k], void -> white)."""
    for image in sorted((root / "images").iterdir()):
        (dest / "images" / "val").mkdir(parents=True, exist_ok=True)
        (dest / "masks" / "val").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, dest / "images" / "val" / image.name)
        label = np.asarray(Image.open(root / "masks" / image.name))
        rgb = np.where((label == 255)[..., None], np.uint8(255), palette[np.minimum(label, len(palette) - 1)])
        Image.fromarray(rgb.astype(np.uint8), "RGB").save(dest / "masks" / "val" / image.name)
    return dest


def test_colour_masks_with_a_palette_in_nested_folders(synthetic_root, tmp_path):
    from mgca.evalsets import FolderSource, open_folder
    from mgca.evaluation import evaluate
    from mgca.pairs.synthetic import CLASS_NAMES

    palette = np.stack([np.arange(44) * 5, 255 - np.arange(44) * 5, (np.arange(44) * 37) % 256], 1).astype(np.uint8)
    (tmp_path / "palette.txt").write_text("ignore 255 255 255\n" + "".join(
        f"{name} {r} {g} {b}\n" for name, (r, g, b) in zip(CLASS_NAMES, palette.tolist(), strict=True)))
    coloured = _colour_copy(synthetic_root, tmp_path / "coloured", palette)
    plain = open_folder(FolderSource(synthetic_root / "classes.txt", synthetic_root))
    rgb = open_folder(FolderSource(synthetic_root / "classes.txt", coloured, palette=tmp_path / "palette.txt"))
    assert [item.name for item in rgb.items] == [f"val/{item.name}" for item in plain.items]

    def predict(image: np.ndarray) -> np.ndarray:  # a fixed function of the pixels: some classes right, most wrong
        return (image[..., 0].astype(np.int64) // 7) % 44

    a, _ = evaluate(plain, predict, progress=False)
    b, _ = evaluate(rgb, predict, progress=False)
    assert a.to_dict() == b.to_dict() and a.num_pixels > 0

    code = eval_cli.main(["--dataset", "folder", "--root", str(coloured), "--classes",
                          str(synthetic_root / "classes.txt"), *FROZEN])
    assert code == 2  # RGB masks without --palette: one line (checked below with the other errors)


def _tiny_folder(root: Path, labels: list[np.ndarray], sizes: list[tuple[int, int]] | None = None) -> Path:
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for index, label in enumerate(labels):
        h, w = sizes[index] if sizes else label.shape
        Image.fromarray(blocky_image(rng, h, w)).save(root / "images" / f"im{index}.jpg")
        Image.fromarray(label.astype(np.uint8)).save(root / "masks" / f"im{index}.png")
    (root / "classes.txt").write_text("background\ncat: a photo of a cat\ndog\n")
    return root


def test_background_modes_and_prompts(tmp_path):
    from mgca.evalsets import DatasetError, FolderSource, open_folder

    label = np.array([[0, 1, 2, 255]] * 4)
    root = _tiny_folder(tmp_path / "bg", [label])
    classes = root / "classes.txt"
    none = open_folder(FolderSource(classes, root))
    assert none.spec.prompt_classes == ("background", "cat", "dog") and not none.spec.with_background
    assert none.spec.prompt_texts == (None, "a photo of a cat", None)
    threshold = open_folder(FolderSource(classes, root, background="threshold"))
    assert threshold.spec.with_background and threshold.spec.prompt_classes == ("cat", "dog")
    assert threshold.spec.prompt_texts == ("a photo of a cat", None)
    np.testing.assert_array_equal(threshold[0].label, label)
    ignore = open_folder(FolderSource(classes, root, background="ignore"))
    assert ignore.spec.classes == ("cat", "dog") and not ignore.spec.with_background
    np.testing.assert_array_equal(ignore[0].label, np.array([[255, 0, 1, 255]] * 4))
    with pytest.raises(DatasetError, match=r"holds label id\(s\) \[255\] .* not the ignore index 7"):
        open_folder(FolderSource(classes, root, ignore_index=7))[0]  # with another void id, 255 is unknown


def test_prompts_are_embedded_verbatim(tiny_model):
    import torch

    backbone = tiny_model.backbone
    with_prompt = backbone.class_embeddings(["cat", "dog"], ["a {}"], prompts=["a photo of a cat", None])
    plain = torch.nn.functional.normalize(backbone.encode_text(["a photo of a cat", "a dog"]), dim=-1)
    torch.testing.assert_close(with_prompt, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case, message", [
    ("unknown id", "holds label id(s) [7]"),
    ("size", "is 10x10 but image"),
    ("unmatched image", "im1.jpg has no file of the same name"),
    ("unmatched mask", "im1.png has no file of the same name"),
    ("empty", "holds no images"),
    ("colour", "is an RGB image"),
    ("no classes", "needs --classes"),
])
def test_folder_errors_name_the_file(tmp_path, capsys, case, message):
    label = np.zeros((10, 10))
    root = _tiny_folder(tmp_path / "d", [label, np.full((10, 10), 7 if case == "unknown id" else 1)],
                        sizes=[(10, 10), (12, 10) if case == "size" else (10, 10)])
    if case == "unmatched image":
        (root / "masks" / "im1.png").unlink()
    if case == "unmatched mask":
        (root / "images" / "im1.jpg").unlink()
    if case == "empty":
        for path in [*root.glob("images/*"), *root.glob("masks/*")]:
            path.unlink()
    if case == "colour":
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "masks" / "im1.png")
    args = ["--dataset", "folder", "--root", str(root), *FROZEN]
    code = eval_cli.main(args if case == "no classes" else [*args, "--classes", str(root / "classes.txt")])
    err = one_line_error(code, capsys.readouterr().err)
    assert message in err, err


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory, tiny_checkpoint, synthetic_root) -> Path:
    """`mgca-export text` of the class file, with the benchmark's templates."""
    from export.cli import main as export_main

    out = tmp_path_factory.mktemp("cache") / "synthetic.npz"
    assert export_main(["text", "--checkpoint", str(tiny_checkpoint), "--vocab", str(synthetic_root / "classes.txt"),
                        "--templates", "plain", "--out", str(out)]) == 0
    return out


def test_engine_evaluates_a_folder_without_torch(synthetic_root, bundle, synthetic_cache, tiny_checkpoint, tmp_path):
    """The lean install (torch unimportable) scores a folder through the runtime, as PyTorch scores it."""
    folder = ["--dataset", "folder", "--root", str(synthetic_root), "--classes", str(synthetic_root / "classes.txt")]
    settings = ["--templates", "plain", "--units", "9", *EVAL_SMALL]
    out = tmp_path / "engine.json"
    env = subprocess_env()
    env["PYTHONPATH"] = f"{torch_stubs(tmp_path / 'stubs')}:{env['PYTHONPATH']}"
    result = subprocess.run([sys.executable, "-m", "mgca.cli.eval", *folder, "--engine", str(bundle), "--text-cache",
                             str(synthetic_cache), *settings, "--json", str(out)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    engine = json.loads(out.read_text())
    torch_run = _eval_json(tmp_path, "torch", *folder, "--checkpoint", str(tiny_checkpoint), *settings)
    assert engine["num_images"] == torch_run["num_images"] == 6
    assert engine["num_pixels"] == torch_run["num_pixels"] > 0
    assert abs(engine["mIoU"] - torch_run["mIoU"]) < 0.5


# ------------------------------------------------------------------------------------------------ whole folders

@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory) -> Path:
    """10 photos in a nested tree (one in a sub-folder of a sub-folder) and a text file that is not an image."""
    root = tmp_path_factory.mktemp("photos") / "in"
    rng = np.random.default_rng(5)
    for index in range(10):
        folder = root / ("a/b" if index == 3 else "a" if index % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(blocky_image(rng, 40 + 7 * index, 64)).save(folder / f"p{index}.png")
    (root / "notes.txt").write_text("not really an image\n")
    return root


def _segment(inputs: list[str], out: Path, bundle: Path, *extra: str) -> int:
    return segment_cli.main([*inputs, "--classes", SEGMENT_CLASSES, "--engine", str(bundle), "--out", str(out),
                             "--no-progress", *extra])


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def test_an_interrupted_folder_run_resumes_to_the_same_outputs(photo_tree, bundle, tmp_path, monkeypatch, capsys):
    from runtime.segmenter import Segmenter

    whole = tmp_path / "whole"
    assert _segment([str(photo_tree)], whole, bundle, "--overlays") == 0
    labels = sorted((whole / "labels").rglob("*.png"))
    assert len(labels) == 10 and (whole / "labels" / "a" / "b" / "p3.png").is_file()
    assert len(list((whole / "overlays").rglob("*.png"))) == 10
    first = np.asarray(Image.open(whole / "labels" / "p0.png"))
    assert first.dtype == np.uint8 and first.shape == (40, 64) and first.max() < 4

    original, calls = Segmenter.segment, []

    def interrupted(self, *args, **kwargs):  # Ctrl-C during the 5th image
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(Segmenter, "segment", interrupted)
    assert _segment([str(photo_tree)], resumed, bundle, "--overlays") == 130
    assert len(list((resumed / "labels").rglob("*.png"))) == 4 and not list(resumed.rglob("*.tmp"))
    monkeypatch.setattr(Segmenter, "segment", original)
    capsys.readouterr()
    assert _segment([str(photo_tree)], resumed, bundle, "--overlays") == 0
    assert "6 images segmented, 4 already done, 0 failed" in capsys.readouterr().out
    assert _outputs(resumed) == _outputs(whole)
    assert _summary(resumed) == _summary(whole) and len(_summary(whole)) == 10
    assert _segment([str(photo_tree)], resumed, bundle, "--overlays") == 0  # nothing left to do
    assert "0 images segmented, 10 already done" in capsys.readouterr().out

    (resumed / ".segment-log.jsonl").unlink()  # a lost log: rows are rebuilt from the label files
    assert _segment([str(photo_tree)], resumed, bundle, "--overlays") == 0
    assert _summary(resumed) == _summary(whole)


def test_globs_lists_bad_images_and_parquet(photo_tree, bundle, tmp_path, capsys):
    pytest.importorskip("pyarrow", reason="parquet summaries need pyarrow (the mgca[ray] extra)")
    import pyarrow.parquet as pq

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{bad.name}\n{photo_tree / 'p0.png'}\n")
    out = tmp_path / "out"
    code = _segment([str(photo_tree / "a" / "*.png"), str(listing), f"file://{photo_tree / 'a' / 'b'}"], out, bundle,
                    "--summary", str(out / "summary.parquet"))
    err = one_line_error(code, capsys.readouterr().err, expected_code=1)
    assert "1 of 7 images could not be segmented" in err and "bad.png" in err
    table = pq.read_table(out / "summary.parquet").to_pylist()
    assert [row["status"] for row in table] == ["ok"] * 4 + ["error", "ok", "ok"]  # a/p1 p5 p7 p9, the list, URI
    assert table[-1]["image"] == f"file://{photo_tree / 'a' / 'b' / 'p3.png'}"
    assert sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.png")) == [
        "p0.png", "p1.png", "p3.png", "p5.png", "p7.png", "p9.png"]  # the glob's tree below a/; the list's names
    areas = [v for k, v in table[-1].items() if k.startswith("area:")]
    assert len(areas) == 4 and abs(sum(areas) - 1) < 1e-4


def test_output_inside_the_input_is_not_read_back(photo_tree, bundle, tmp_path, capsys):
    tree = tmp_path / "tree"
    shutil.copytree(photo_tree, tree)
    assert _segment([str(tree)], tree / "seg", bundle, "--overlays") == 0
    assert _segment([str(tree)], tree / "seg", bundle, "--overlays") == 0
    assert "0 images segmented, 10 already done" in capsys.readouterr().out


@pytest.mark.parametrize("inputs, extra, message", [
    (["/nonexistent/photos"], ["--out", "OUT"], "/nonexistent/photos is not an image"),
    (["TREE/notes.txt"], ["--out", "OUT"], "TREE/not really an image (listed in"),  # .txt: a list of images
    (["TREE"], [], "needs --out DIR"),
    (["TREE"], ["--out", "OUT", "--labels-out", "x.png"], "--labels-out is for one photo"),
    (["TREE"], ["--out", "OUT", "--ray"], "--ray runs exported bundles"),
])
def test_folder_run_errors_are_one_line(photo_tree, tmp_path, capsys, inputs, extra, message):
    def fill(text: str) -> str:
        return text.replace("TREE", str(photo_tree)).replace("OUT", str(tmp_path / "out"))

    args = [fill(a) for a in [*inputs, *extra]] + ["--classes", SEGMENT_CLASSES, "--decoder", "none"]
    err = one_line_error(segment_cli.main(args), capsys.readouterr().err)
    assert fill(message) in err, err


def test_label_pngs_widen_past_256_classes():
    from runtime.batch import label_dtype

    assert label_dtype(256) == np.uint8 and label_dtype(257) == np.uint16


# ------------------------------------------------------------------------------------------------ Ray Data

RAY_SKIP = "Ray Data is not installed (pip install 'mgca[ray]'; .ci/run installs it)"


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason=RAY_SKIP)
    pytest.importorskip("ray.data", reason=RAY_SKIP)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": subprocess_env()["PYTHONPATH"]}})
    yield ray
    ray.shutdown()


def test_ray_data_labels_equal_the_single_process_run(local_ray, bundle, tmp_path, capsys):
    rng = np.random.default_rng(9)
    images = tmp_path / "images"
    for index in range(20):
        (images / f"set{index % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(blocky_image(rng, 48 + index, 64)).save(images / f"set{index % 3}" / f"{index:02d}.jpg")
    (images / "set0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    single, distributed = tmp_path / "single", tmp_path / "ray"
    assert _segment([str(images)], single, bundle) == 1
    capsys.readouterr()
    code = _segment([str(images)], distributed, bundle, "--ray", "--actors", "2")
    err = one_line_error(code, capsys.readouterr().err, expected_code=1)
    assert "1 of 21 images could not be segmented" in err and "broken.jpg" in err
    assert len(list((distributed / "labels").rglob("*.png"))) == 20
    assert _outputs(distributed) == _outputs(single)
    rows = {row["image"]: row for row in _summary(distributed)}
    assert rows[str(images / "set0" / "broken.jpg")]["status"] == "error"
    assert rows == {row["image"]: row for row in _summary(single)}
    capsys.readouterr()
    assert _segment([str(images)], distributed, bundle, "--ray", "--actors", "2") == 1  # only the broken one again
    assert "0 images segmented, 20 already done, 1 failed" in capsys.readouterr().out
