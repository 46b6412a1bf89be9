"""Shared fixtures: a tiny random-init MGCA model and a checkpoint of it, and an exported bundle of it for the
runtime tests, each built once per session (lazily: only sessions that use them pay)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mgca.checkpoint import save_checkpoint
from mgca.config import Config, config_to_dict
from mgca.decoder import perturb_decoder
from mgca.model import build_model

from .support import CLASSES, blocky_image, export_with_cli, text_cache_with_cli


@pytest.fixture(autouse=True)
def restore_sigchld_handler():
    """Each test gives back the SIGCHLD handler it started with. torch's DataLoader installs a process-wide SIGCHLD
    handler when it starts worker processes and never removes it; a later child's exit (the demo server of
    tests/test_demo.py) then ran it and pytest died of SIGSEGV (found with gdb after tests/test_data.py's
    2-worker loader; resetting the handler before the server starts made the same pair pass)."""
    before = signal.getsignal(signal.SIGCHLD)
    yield
    signal.signal(signal.SIGCHLD, before)


@pytest.fixture(scope="session")
def tiny_config() -> Config:
    return Config()


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    torch.manual_seed(0)  # decoder init draws from the global RNG: keep the fixture the same every run
    model = build_model(tiny_config.backbone, tiny_config.decoder)
    perturb_decoder(model.decoder)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model, tiny_config):
    """A checkpoint file of `tiny_model` in the format `python -m mgca.train` writes."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {
        "config": config_to_dict(tiny_config),
        "backbone": tiny_model.backbone.identity.to_dict(),
        "decoder": tiny_model.decoder.state_dict(),
    })
    return path


# ---- an exported bundle, for the runtime tests -------------------------------------------------

@pytest.fixture(scope="session")
def bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    """fp32 + int8 bundle of `tiny_model` (tiny_checkpoint holds the same weights) with CLASSES as its vocabulary."""
    return export_with_cli(tiny_checkpoint, tmp_path_factory.mktemp("bundle") / "tiny", CLASSES, "--int8")


@pytest.fixture(scope="session")
def segmenter(bundle):
    from runtime import Segmenter

    return Segmenter(bundle, backend="onnxruntime", device="cpu")


@pytest.fixture(scope="session")
def class_embeddings(bundle) -> np.ndarray:
    from runtime.text_cache import load_text_cache

    return load_text_cache(bundle / "text_cache.npz").embeddings


@pytest.fixture(scope="session")
def voc_tree(tmp_path_factory) -> Path:
    """A 3-image VOC2012 tree (mmseg layout): random pixels, labels with background, two classes and void."""
    from PIL import Image

    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    rng = np.random.default_rng(0)
    names = ["a", "b", "c"]
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, (h, w) in zip(names, [(40, 60), (90, 50), (20, 20)], strict=True):
        Image.fromarray(blocky_image(rng, h, w)).save(root / "JPEGImages" / f"{name}.jpg")
        label = np.zeros((h, w), dtype=np.uint8)
        label[h // 4:h // 2, w // 4:w // 2] = 8
        label[-3:, :] = 255
        label[: h // 5, -w // 3:] = 15
        Image.fromarray(label).save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="session")
def voc_cache(tmp_path_factory, tiny_checkpoint) -> Path:
    """A text cache with VOC's prompt classes for the bundle's backbone (`mgca-export text`)."""
    from mgca.evalsets import get_spec

    voc_classes = list(get_spec("voc21").prompt_classes)
    return text_cache_with_cli(tiny_checkpoint, tmp_path_factory.mktemp("cache") / "voc.npz", voc_classes)


@pytest.fixture
def world_folder():
    """A folder any user may traverse (pytest's own are 0700, closed to the unprivileged user)."""
    folder = Path(tempfile.mkdtemp(prefix="mgca-world-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


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
