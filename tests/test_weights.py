"""`mgca-weights` and the README's first real example, offline: random weights placed in open_clip's download cache
(the Hugging Face hub layout under HF_HOME, HF_HUB_OFFLINE=1) run the real download code, then the training-free
export and the runtime."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest

from mgca.clip_backbone import build_backbone, model_config
from mgca.config import BackboneConfig
from runtime import Segmenter
from runtime.files import file_sha256

from .support import BACKBONE_NOTICE, blocky_image, place_in_hf_cache, subprocess_env

TINY = "test-tiny-vit"  # a tiny ViT under a name open_clip lists with a pretrained tag, in this test only
TINY_HUB = "mgca-test/tiny-clip/"
# Registers TINY (mgca-tiny's architecture) and its pretrained tag in open_clip, then runs the command line given.
REGISTER = (f"import json, sys, open_clip; from importlib import resources; "
            f"cfg = json.loads(resources.files('mgca').joinpath('model_configs/mgca-tiny.json').read_text()); "
            f"open_clip.factory._MODEL_CONFIGS[{TINY!r}] = cfg; "
            f"open_clip.pretrained._PRETRAINED[{TINY!r}] = {{'test': open_clip.pretrained._pcfg(hf_hub={TINY_HUB!r})}}")


def weights_cli(args: list[str], hf_home: Path, register: bool = False) -> subprocess.CompletedProcess:
    code = (f"{REGISTER if register else 'import sys'}; from mgca.cli.weights import main; "
            "sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          env=subprocess_env(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1"))


@pytest.fixture
def tiny_registered(monkeypatch):
    cfg = model_config("mgca-tiny")
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, TINY, cfg)
    return cfg


def test_weights_to_bundle_to_first_result_offline(tmp_path, tiny_registered):
    """The README's path: mgca-weights (open_clip's download, from its cache) -> mgca-export --clip --no-decoder with
    a vocabulary of the user's -> the runtime segments with those classes."""
    hf_home = tmp_path / "hf"
    place_in_hf_cache(hf_home, TINY_HUB, tiny_registered)
    done = weights_cli([TINY, "--pretrained", "test", "--out", str(tmp_path / "weights")], hf_home, register=True)
    assert done.returncode == 0, done.stderr
    weights = tmp_path / "weights" / f"{TINY}-test.pt"
    assert re.search(r"sha256 ([0-9a-f]{64})", done.stdout).group(1) == file_sha256(weights)
    assert f"mgca-export --clip {TINY} --weights {weights} --no-decoder" in done.stdout

    from export.cli import main as export_main

    vocab = tmp_path / "classes.txt"
    vocab.write_text("cat\ngrass\nsky\n")
    bundle = tmp_path / "bundle"
    assert export_main(["--clip", TINY, "--weights", str(weights), "--no-decoder", "--vocab", str(vocab),
                        "--out", str(bundle), "--window", "64", "--short-side", "96", "--stride", "32"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["backbone"]["dense_mode"] == "scclip" and manifest["backbone"]["source"] == str(weights.resolve())
    assert manifest["decoder"]["kind"] == "none"
    assert (manifest["inference"]["units"], manifest["inference"]["pamr"]) == (36, 0)  # the training-free recipe
    result = Segmenter(bundle).segment(blocky_image(np.random.default_rng(0), 80, 120), ["cat", "grass", "sky"])
    assert result.labels.shape == (80, 120) and set(np.unique(result.labels)) <= {0, 1, 2}


def test_flags_given_override_the_training_free_recipe(tmp_path, tiny_registered):
    from export.cli import main as export_main

    weights = tmp_path / "w.pt"
    import torch

    torch.save({"state_dict": open_clip.CLIP(**tiny_registered).state_dict(), "quick_gelu": False}, weights)
    bundle = tmp_path / "bundle"
    assert export_main(["--clip", TINY, "--weights", str(weights), "--no-decoder", "--out", str(bundle),
                        "--window", "64", "--dense-mode", "naclip", "--pamr", "10"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["backbone"]["dense_mode"] == "naclip" and manifest["inference"]["pamr"] == 10
    assert manifest["inference"]["units"] == 36


@pytest.mark.parametrize("args, message", [
    (["--clip", "mgca-tiny", "--out", "b"], "add --no-decoder"),
    (["--checkpoint", "c.pt", "--weights", "w.pt", "--out", "b"], "--weights goes with --clip"),
])
def test_training_free_export_flags_are_checked(tmp_path, capsys, monkeypatch, args, message):
    from export.cli import main as export_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.pt").write_bytes(b"")
    assert export_main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_vit_b16_openai_weights_from_open_clips_cache(tmp_path):
    """The real names: open_clip's record for ViT-B-16 'openai' (its Hugging Face repo and file), fetched from the
    cache; OpenAI's QuickGELU travels in the file, so loading it needs no flag."""
    hf_home = tmp_path / "hf"
    hub = open_clip.get_pretrained_cfg("ViT-B-16", "openai")["hf_hub"]
    place_in_hf_cache(hf_home, hub, {**model_config("ViT-B-16"), "quick_gelu": True}, dtype=__import__("torch").half)
    done = weights_cli(["ViT-B-16", "--pretrained", "openai", "--out", str(tmp_path / "weights")], hf_home)
    assert done.returncode == 0, done.stderr
    weights = tmp_path / "weights" / "ViT-B-16.pt"
    assert "QuickGELU" in done.stdout and file_sha256(weights) in done.stdout
    backbone = build_backbone(BackboneConfig(arch="ViT-B-16", checkpoint=str(weights)))
    assert type(backbone.clip.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    again = weights_cli(["ViT-B-16", "--out", str(tmp_path / "weights")], hf_home)
    assert again.returncode == 2 and "already exists" in again.stderr  # never over a file silently


def test_offline_without_the_file_is_one_line(tmp_path):
    done = weights_cli(["ViT-B-16", "--pretrained", "openai", "--out", str(tmp_path)], tmp_path / "empty")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "cannot fetch ViT-B-16 openai" in lines[0], done.stderr
    assert not list(tmp_path.glob("*.pt"))


def test_unknown_tag_lists_the_known_ones(tmp_path):
    done = weights_cli(["ViT-B-16", "--pretrained", "nope", "--out", str(tmp_path)], tmp_path)
    assert done.returncode == 2 and "laion2b_s34b_b88k" in done.stderr and "Traceback" not in done.stderr


def test_tiny_and_random_clips_say_what_they_know(tiny_checkpoint, tmp_path, capsys):
    """Every CLI says in one line when the CLIP is random or the synthetic world's (here: a random tiny CLIP)."""
    from runtime.backbone_notice import backbone_notice

    assert backbone_notice({"arch": "mgca-synth", "source": "/x/mgca-synth-synthetic-abc.pt"}).startswith(
        "this model was pretrained on the synthetic shapes world; it knows only its colours (red, ")
    assert "randomly initialised" in backbone_notice({"arch": "ViT-B-16", "source": "random-init(seed=0)"})
    assert backbone_notice({"arch": "ViT-B-16", "source": "/w/ViT-B-16.pt"}) is None
    from export.cli import main as export_main

    assert export_main(["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--window", "64"]) == 0
    notices = [line for line in capsys.readouterr().err.splitlines() if BACKBONE_NOTICE in line]
    assert len(notices) == 1 and notices[0].startswith("mgca-export: warning: this model's CLIP (mgca-tiny)")


def test_the_notice_knows_every_bundled_architecture():
    from importlib import resources

    from mgca.clip_backbone import is_bundled_arch
    from runtime.backbone_notice import TINY_ARCH_PREFIX

    names = [p.name.removesuffix(".json") for p in resources.files("mgca").joinpath("model_configs").iterdir()
             if p.name.endswith(".json")]
    assert names and all(name.startswith(TINY_ARCH_PREFIX) and is_bundled_arch(name) for name in names)
