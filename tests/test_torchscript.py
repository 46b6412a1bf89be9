"""TorchScript CLIP archives (OpenAI's release format) load without running any code from the file (issue 16.1).

The malicious archive is a valid mgca-tiny CLIP (every weight at its open_clip name, as in OpenAI's files) plus a
submodule whose TorchScript `__setstate__` creates a file with `torch.from_file(..., shared=True)` while it loads.
`torch.jit.load` runs it (checked, so the archive is known to bite); no weight-loading path of the project may.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mgca.clip_backbone import build_backbone, build_clip_model
from mgca.config import BackboneConfig

from .support import CLASSES, EVAL_SMALL, export_with_cli


class Trap(nn.Module):
    """Runs `torch.from_file(path, shared=True)` (which creates `path`) when TorchScript restores it."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.made = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        self.made = torch.from_file(self.path, shared=True, size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def module_tree(state: dict[str, torch.Tensor]) -> nn.Module:
    """Modules nested as the dotted names say, each tensor a parameter: state_dict() gives `state` back."""
    root = Holder()
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, Holder())
            node = getattr(node, part)
        node.register_parameter(leaf, nn.Parameter(value.detach().clone(), requires_grad=False))
    return root


def script_save(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated, and is what made OpenAI's files
        torch.jit.script(module).save(str(path))
    return path


def jit_state(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu").state_dict()


@pytest.fixture(scope="module")
def tiny_clip_state() -> dict[str, torch.Tensor]:
    clip, _ = build_clip_model(BackboneConfig(arch="mgca-tiny", init_seed=3))
    return clip.state_dict()


@pytest.fixture(scope="module")
def trapped(tmp_path_factory, tiny_clip_state) -> tuple[Path, Path]:
    """(archive, the file its code creates when run): a working mgca-tiny CLIP with a trap inside."""
    folder = tmp_path_factory.mktemp("trap")
    marker = folder / "PWNED"
    tree = module_tree(tiny_clip_state)
    tree.trap = Trap(str(marker))
    archive = script_save(tree, folder / "ViT-tiny.pt")
    assert zipfile.ZipFile(archive).namelist()[0].startswith("ViT-tiny/")
    return archive, marker


def assert_ran_nothing(marker: Path) -> None:
    assert not marker.exists(), "code from the TorchScript archive ran while loading weights"


def test_the_archive_is_malicious_under_torch_jit_load(trapped, tiny_clip_state):
    archive, marker = trapped
    state = jit_state(archive)
    assert marker.exists()  # the trap works: loading with TorchScript runs the archive's code
    marker.unlink()
    assert set(state) == set(tiny_clip_state)


def test_safe_reader_equals_torch_jit_load(tmp_path, trapped):
    """Benign archives (a traced open_clip model, a scripted one with buffers, views and fp16) read back
    tensor for tensor, in state_dict order, as torch.jit.load's state_dict."""
    from mgca.torchscript import read_torchscript_state_dict

    model, _ = build_clip_model(BackboneConfig(init_seed=7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), (torch.randn(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long)),
                                 check_trace=False)
    traced.save(str(tmp_path / "traced.pt"))

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fp16 = nn.Linear(3, 4).half()
            self.seq = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
            base = torch.arange(12.0)
            self.register_buffer("view", base[2:8].view(2, 3))  # a view into a larger storage
            self.register_buffer("steps", torch.arange(5))
            self.register_buffer("scratch", torch.ones(2), persistent=False)
            self.plain = torch.zeros(3)  # an attribute, not a buffer: not in state_dict

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.seq(self.fp16(x.half()).float()) + self.plain.sum()

    scripted = script_save(Mixed(), tmp_path / "mixed.pt")
    for path in (tmp_path / "traced.pt", scripted, trapped[0]):
        ours = read_torchscript_state_dict(path)
        theirs = jit_state(path)
        trapped[1].unlink(missing_ok=True)
        assert list(ours) == list(theirs)
        for key, value in theirs.items():
            assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
            assert torch.equal(ours[key], value), key


def test_backbone_loads_the_archive_without_running_it(trapped, tiny_clip_state):
    archive, marker = trapped
    backbone = build_backbone(BackboneConfig(arch="mgca-tiny", checkpoint=str(archive)))
    assert_ran_nothing(marker)
    for key, value in tiny_clip_state.items():
        assert torch.equal(backbone.clip.state_dict()[key], value), key
    assert type(backbone.clip.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"  # OpenAI's GELU


def test_no_weight_loading_path_runs_archive_code(trapped, tmp_path, voc_tree, capsys):
    """Training, mgca-eval (checkpoint naming the archive, and --clip-weights), mgca-segment, mgca-export and
    `mgca-export text`: each loads the CLIP weights and none runs the archive; --trust-torchscript does."""
    from export.cli import main as export_main
    from mgca.cli import eval as eval_cli
    from mgca.cli import segment as segment_cli
    from mgca.train import main as train_main

    archive, marker = trapped
    run = tmp_path / "run"
    code = train_main(["--clip", "mgca-tiny", "--weights", str(archive), "pretrain.enabled=false",
                       "benchmark.enabled=false", "data.synthetic_size=8", "data.image_size=64", "train.batch_size=4",
                       "optim.epochs=1", "train.max_steps=1", f"train.output_dir={run}"])
    assert code == 0, capsys.readouterr().err
    assert_ran_nothing(marker)
    checkpoint = run / "last.pt"  # its config.backbone.checkpoint names the archive

    code = eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--checkpoint", str(checkpoint),
                          "--limit", "1", *EVAL_SMALL])
    assert code == 0, capsys.readouterr().err
    assert_ran_nothing(marker)
    code = eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--decoder", "none", "--arch", "mgca-tiny",
                          "--clip-weights", str(archive), "--limit", "1", *EVAL_SMALL])
    assert code == 0, capsys.readouterr().err
    assert_ran_nothing(marker)

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 56, 3), 120, np.uint8)).save(photo)
    segment = [str(photo), "--classes", "cat,dog", "--out", str(tmp_path / "overlay.png"), "--short-side", "64",
               "--window", "64", "--stride", "32", "--device", "cpu"]
    assert segment_cli.main([*segment, "--checkpoint", str(checkpoint)]) == 0, capsys.readouterr().err
    assert_ran_nothing(marker)

    export_with_cli(checkpoint, tmp_path / "bundle", CLASSES, "--clip-weights", str(archive))
    assert_ran_nothing(marker)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("cat\ndog\n")
    code = export_main(["text", "--checkpoint", str(checkpoint), "--clip-weights", str(archive), "--vocab",
                        str(vocab), "--out", str(tmp_path / "text.npz")])
    assert code == 0, capsys.readouterr().err
    assert_ran_nothing(marker)

    # the explicit opt-in is the only way the archive's code runs
    assert segment_cli.main([*segment, "--decoder", "none", "--arch", "mgca-tiny", "--clip-weights", str(archive),
                             "--trust-torchscript"]) == 0, capsys.readouterr().err
    assert marker.exists()
    marker.unlink()


def test_a_checkpoint_cannot_grant_itself_trust(trapped, tmp_path, tiny_clip_state):
    """trust_torchscript recorded in a checkpoint's config is ignored: only the caller's flag counts."""
    from mgca.checkpoint import load_model, save_checkpoint
    from mgca.config import Config, config_to_dict
    from mgca.model import build_model

    archive, marker = trapped
    cfg = Config()
    cfg.backbone.checkpoint = str(archive)
    model = build_model(cfg.backbone, cfg.decoder)
    cfg.backbone.trust_torchscript = True  # what a hostile checkpoint would carry
    save_checkpoint(tmp_path / "hostile.pt", {"config": config_to_dict(cfg), "decoder": model.decoder.state_dict(),
                                              "backbone": model.backbone.identity.to_dict()})
    assert_ran_nothing(marker)
    load_model(tmp_path / "hostile.pt")
    assert_ran_nothing(marker)


def test_foreign_globals_are_refused(tmp_path, trapped):
    """A data.pkl that names anything but tensor rebuilding (here os.system) is refused in one line, unrun."""
    from mgca.torchscript import TorchScriptError, read_torchscript_state_dict

    archive, _ = trapped
    marker = tmp_path / "system-ran"

    class Evil:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    hostile = tmp_path / "hostile.pt"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(hostile, "w") as target:
        for item in source.infolist():
            data = pickle.dumps(Evil(), protocol=2) if item.filename.endswith("/data.pkl") else source.read(item)
            target.writestr(item, data)
    with pytest.raises(TorchScriptError, match=r"refers to (posix|os)\.system.*--trust-torchscript") as info:
        read_torchscript_state_dict(hostile)
    assert "\n" not in str(info.value) and not marker.exists()
    with pytest.raises(TorchScriptError):
        build_backbone(BackboneConfig(arch="mgca-tiny", checkpoint=str(hostile)))
    assert not marker.exists()
