"""Helpers the tests share (imported as `tests.support`; fixtures live in conftest.py)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"  # the machine's sample data, next to the checkout (never needed in CI)

# The runtime tests' bundle: a small export window (fast tests, several windows per image).
WINDOW = 64
SETTINGS = dict(short_side=96, window=WINDOW, stride=32, units=9, unit_scope="image")
CLASSES = ["cat", "dog", "road", "sky", "tree", "person", "car", "building"]
SIZES = [(40, 50), (64, 64), (96, 96), (120, 200), (333, 97), (17, 400)]
BACKBONE_NOTICE = "warning: this model"  # runtime.backbone_notice's line on a tiny or random CLIP
EVAL_SMALL = ["--short-side", "96", "--window", str(WINDOW), "--stride", "32", "--device", "cpu", "--no-progress"]


def export_with_cli(checkpoint: Path, out: Path, vocab: list[str], *extra: str) -> Path:
    """A bundle written by the real exporter (`mgca-export`) with SETTINGS."""
    from export.cli import main as export_main

    vocab_file = out.parent / f"{out.name}-vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    code = export_main(["--checkpoint", str(checkpoint), "--out", str(out), "--window", str(WINDOW),
                        "--short-side", str(SETTINGS["short_side"]), "--stride", str(SETTINGS["stride"]),
                        "--units", str(SETTINGS["units"]), "--vocab", str(vocab_file), *extra])
    assert code == 0, f"mgca-export failed with exit status {code}"
    return out


def text_cache_with_cli(checkpoint: Path, out: Path, vocab: list[str]) -> Path:
    """`mgca-export text`: a cache for another vocabulary of the same backbone."""
    from export.cli import main as export_main

    vocab_file = out.with_suffix(".txt")
    vocab_file.write_text("\n".join(vocab) + "\n")
    assert export_main(["text", "--checkpoint", str(checkpoint), "--vocab", str(vocab_file), "--out", str(out)]) == 0
    return out


def blocky_image(rng: np.random.Generator, height: int, width: int, block: int = 8) -> np.ndarray:
    """Piecewise-constant noise: a few regions per window, so units and classes actually vary."""
    small = rng.integers(0, 256, (-(-height // block), -(-width // block), 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(small, block, 0), block, 1)[:height, :width])


def torch_predictor(model, embeddings: np.ndarray, classes=CLASSES, **overrides):
    """mgca's PyTorch predictor with SETTINGS (plus overrides) and the given class embeddings."""
    import torch

    from mgca.inference import InferenceConfig, SegmentationPredictor

    predictor = SegmentationPredictor(model, InferenceConfig(**{**SETTINGS, **overrides}))
    predictor.set_class_embeddings(torch.from_numpy(np.array(embeddings)), list(classes))
    return predictor


@contextlib.contextmanager
def as_unprivileged_user():
    """File modes bind root only through an unprivileged effective uid: switch to nobody for the block."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


ONNX_CPU = dict(backend="onnxruntime", device="cpu")


def one_line_exit_2(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), (needles, lines[0])


def one_line_error(code: int, err: str, expected_code: int = 2) -> str:
    """The error line of a CLI run (beside the tiny model's backbone notice, skip notes and the `runtime: <engine> ...`
    line an --engine run prints first)."""
    lines = [line for line in err.strip().splitlines()
             if not line.startswith(("skipped ", "runtime: ")) and BACKBONE_NOTICE not in line]
    assert code == expected_code and "Traceback" not in err and len(lines) == 1 and ": error: " in lines[0], err
    return lines[0]


def torch_stubs(folder: Path) -> Path:
    """Packages named torch/torchvision/open_clip whose import fails: put first on PYTHONPATH, they make
    PyTorch unimportable for any interpreter or console script started with that environment."""
    for name in ("torch", "torchvision", "open_clip"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    return folder


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment with the checkout first on PYTHONPATH (so a child imports this code, and `tests`)."""
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def place_in_hf_cache(hf_home: Path, hf_hub: str, arch_cfg: dict, seed: int = 0, dtype=None) -> Path:
    """Random CLIP weights where open_clip's pretrained download looks for `hf_hub` ('org/repo/'), in the Hugging
    Face hub cache layout under `hf_home` (HF_HOME): with HF_HUB_OFFLINE=1 the real download code finds them there
    and touches no network."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    repo_id = hf_hub.rstrip("/")
    commit = "0" * 40
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = open_clip.CLIP(**arch_cfg).state_dict()
    path = snapshot / "open_clip_model.safetensors"
    save_file({k: v.to(dtype or v.dtype).contiguous() for k, v in state.items()}, str(path))
    return path


# ---------------------------------------------------------------------------------------------- training

# The embedded default also pretrains a tiny CLIP and runs the benchmark (tests/test_embedded.py);
# here only the decoder trains.
DECODER_ONLY = ["pretrain.enabled=false", "benchmark.enabled=false"]
FAST = [*DECODER_ONLY, "data.synthetic_size=48", "train.batch_size=8", "optim.epochs=2", "optim.warmup_epochs=0.5",
        "optim.lr=3e-3"]


def fast_config(tmp_path: Path, *extra: str):
    from mgca.config import load_config
    from mgca.train import embedded_config_path

    return load_config(embedded_config_path(), [*FAST, f"train.output_dir={tmp_path}", *extra])


def train_args(out: Path, *extra: str) -> list[str]:
    return ["--clip", "mgca-tiny", "pretrain.enabled=false", "benchmark.enabled=false", "data.synthetic_size=8",
            "data.image_size=64", "train.batch_size=4", "optim.epochs=1", "train.resume=null",
            f"train.output_dir={out}", *extra]


# ---------------------------------------------------------------------------------------------- data and bundles

def labelled_folder(root: Path) -> Path:
    """Two images whose masks use 0 for background and 1..3 for cat, dog, road (no void pixels)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for index in range(2):
        Image.fromarray(blocky_image(rng, 32, 48)).save(root / "images" / f"im{index}.png")
        mask = np.zeros((32, 48), np.uint8)
        mask[:, 12:24], mask[:, 24:36], mask[:, 36:] = 1, 2, 3
        Image.fromarray(mask).save(root / "masks" / f"im{index}.png")
    (root / "classes.txt").write_text("background\ncat\ndog\nroad\n")
    return root


def copy_bundle(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to)
    return to


def edit_manifest(folder: Path, **changes) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    for key, value in changes.items():
        node = manifest
        *path, leaf = key.split("__")
        for part in path:
            node = node[part]
        node[leaf] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


# ---------------------------------------------------------------------------------------------- mgca-segment

SEGMENT_CLASSES = "cat,dog,road,sky"


def segment(inputs: list[str | Path], out: Path, bundle: Path, *extra: str, classes: str = SEGMENT_CLASSES) -> int:
    from mgca.cli import segment as segment_cli

    return segment_cli.main([*map(str, inputs), "--classes", classes, "--engine", str(bundle), "--out", str(out),
                             "--no-progress", *extra])


def photo(path: Path, seed: int = 0, size: tuple[int, int] = (40, 56)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blocky_image(np.random.default_rng(seed), *size)).save(path)
    return path


def photo_folder(folder: Path) -> Path:
    """A new folder holding one photo, a.png."""
    from PIL import Image

    folder.mkdir()
    Image.fromarray(blocky_image(np.random.default_rng(0), 40, 60)).save(folder / "a.png")
    return folder


def three_photos(folder: Path) -> Path:
    for index in range(3):
        photo(folder / f"img{index}.png", index)
    return folder
