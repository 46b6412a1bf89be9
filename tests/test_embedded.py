"""The embedded default end to end: pretrain a tiny CLIP, train the decoder on it, score the synthetic benchmark."""
from __future__ import annotations

import json

import pytest
import torch

from mgca.clip_backbone import build_backbone
from mgca.clip_pretrain import cache_path, pretrain_clip
from mgca.config import BackboneConfig, ConfigError, PretrainConfig, SyntheticWorldConfig, load_config
from mgca.embedded import ensure_clip_weights
from mgca.quality import DECODER, FROZEN, PROTOCOLS
from mgca.train import embedded_config_path, main, train

SMALL_PRETRAIN = ["pretrain.steps=12", "pretrain.pool_size=0", "pretrain.batch_size=32", "pretrain.warmup_steps=2"]
SMALL_DECODER = ["data.synthetic_size=64", "train.batch_size=16", "optim.epochs=4", "optim.warmup_epochs=0.5"]
SMALL_BENCHMARK = ["benchmark.count=4"]


def small_embedded(tmp_path, *extra: str):
    return load_config(embedded_config_path(), [*SMALL_PRETRAIN, *SMALL_DECODER, *SMALL_BENCHMARK,
                                                 f"pretrain.cache_dir={tmp_path / 'clip_cache'}",
                                                 f"train.output_dir={tmp_path / 'run'}", *extra])


def test_embedded_default_is_the_whole_pipeline():
    """README's first command pretrains a CLIP, trains the decoder on it and ends with the benchmark."""
    cfg = load_config(embedded_config_path())
    assert cfg.pretrain.enabled and cfg.benchmark.enabled and cfg.backbone.checkpoint is None
    assert cfg.data.source == "synthetic"


def test_embedded_recipe_is_wired_through(tmp_path, monkeypatch):
    """One world feeds pretraining, decoder data and the held-out benchmark; fresh pairs; fixed threads; 500 images."""
    cfg = load_config(embedded_config_path())
    assert cfg.pretrain.pool_size == 0 and cfg.benchmark.count >= 500 and 36 in cfg.benchmark.units
    assert cfg.train.num_threads > 0

    import mgca.clip_pretrain as clip_pretrain
    seen = []
    original = clip_pretrain.SyntheticCaptions.from_world.__func__

    def spy(cls, world, *args, **kwargs):
        seen.append(world)
        return original(cls, world, *args, **kwargs)

    monkeypatch.setattr(clip_pretrain.SyntheticCaptions, "from_world", classmethod(spy))
    small = small_embedded(tmp_path, "data.synthetic.texture_contrast=0.5", "data.synthetic.group_size=2")
    ensure_clip_weights(small, progress=False)
    assert seen and seen[0] is small.data.synthetic


@pytest.mark.slow
def test_embedded_run_repeats_bit_for_bit(tmp_path):
    """Two runs of one config (each pretraining its own CLIP) write the same benchmark.json, byte for byte."""
    tables = []
    for name in ("first", "second"):
        cfg = small_embedded(tmp_path / name, "train.num_threads=1")
        train(cfg)
        tables.append((tmp_path / name / "run" / "benchmark.json").read_bytes())
    assert tables[0] == tables[1]


@pytest.mark.slow
def test_embedded_run_small(tmp_path, capsys):
    """A small version of `python -m mgca.train`: every stage runs, leaves its files, and the losses fall."""
    cfg = small_embedded(tmp_path, "data.synthetic.texture_contrast=0.5", "data.synthetic.max_rotation=20",
                         "pretrain.precision=bf16")
    result = train(cfg)
    weights = cache_path(cfg.backbone.arch, cfg.pretrain, cfg.data.synthetic)
    assert weights.is_file() and cfg.backbone.checkpoint == str(weights.resolve())
    out = capsys.readouterr().out
    assert "contrastive loss" in out and "zero-shot accuracy" in out
    assert "synthetic segmentation benchmark" in out and "decoder gain" in out

    history = result.history
    losses = [record["loss"] for record in history]
    assert sum(losses[-4:]) < sum(losses[:4])  # single steps are noisy: compare the first and last four
    run = tmp_path / "run"
    for name in ("last.pt", "loss_curve.png", "history.json", "benchmark.json", "segmentation.png",
                 "segmentation_stuff.png"):
        assert (run / name).is_file(), name
    stamp = json.loads((run / "synthetic_benchmark" / "benchmark.json").read_text())
    assert stamp["texture_contrast"] == 0.5 and stamp["max_rotation"] == 20  # held-out images: the training world
    table = json.loads((run / "benchmark.json").read_text())
    assert table["images"] == 4 and set(table["miou"]) == {FROZEN, DECODER}
    assert all(set(protocols) == set(PROTOCOLS) for protocols in table["miou"].values())
    assert all(set(cells) == {"0", "36"} for protocols in table["miou"].values() for cells in protocols.values())
    checkpoint = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["backbone"]["source"] == str(weights.resolve())


def test_pretraining_learns_and_is_cached(tmp_path):
    """The contrastive loss falls; a second call with the same recipe reuses the file; another recipe does not."""
    cfg = PretrainConfig(enabled=True, steps=12, pool_size=256, batch_size=32, warmup_steps=2, cache_dir=str(tmp_path))
    first = pretrain_clip("mgca-synth", cfg, progress=False)
    assert not first.cached and first.path.is_file()
    assert first.last_loss < first.first_loss
    again = pretrain_clip("mgca-synth", cfg, progress=False)
    assert again.cached and again.path == first.path
    assert again.zero_shot_accuracy == pytest.approx(first.zero_shot_accuracy)
    other = PretrainConfig(**{**cfg.__dict__, "steps": 13})
    assert cache_path("mgca-synth", other, SyntheticWorldConfig()) != first.path
    assert cache_path("mgca-synth", cfg, SyntheticWorldConfig(group_size=2)) != first.path
    assert cache_path("mgca-synth", cfg, SyntheticWorldConfig(max_rotation=15)) != first.path
    bf16 = PretrainConfig(**{**cfg.__dict__, "precision": "bf16"})
    assert cache_path("mgca-synth", bf16, SyntheticWorldConfig()) != first.path


def test_zero_shot_images_have_the_training_worlds_look(monkeypatch):
    """Zero-shot accuracy is measured on single-object images drawn with the world's backdrop contrast and turns."""
    import open_clip

    import mgca.clip_pretrain as clip_pretrain
    from mgca.clip_backbone import model_config

    made = []
    original = clip_pretrain.SyntheticCaptions

    def spy(*args, **kwargs):
        made.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(clip_pretrain, "SyntheticCaptions", spy)
    arch = model_config("mgca-synth")
    model = open_clip.CLIP(**arch)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=arch["text_cfg"]["context_length"])
    world = SyntheticWorldConfig(texture_contrast=0.4, max_rotation=10)
    objects, backdrops = clip_pretrain.zero_shot_accuracy(model, tokenizer, 64, seed=1, count=4, world=world)
    assert made == [{"seed": 1, "max_objects": 1, "texture_contrast": 0.4, "max_rotation": 10}]
    assert 0.0 <= objects <= 1.0 and 0.0 <= backdrops <= 1.0


def test_pretrained_weights_load_like_real_ones(tmp_path):
    """The cached file is a plain open_clip state dict: the backbone loads it through the user-weights path."""
    cfg = PretrainConfig(enabled=True, steps=2, pool_size=64, batch_size=16, warmup_steps=1, cache_dir=str(tmp_path))
    report = pretrain_clip("mgca-synth", cfg, progress=False)
    backbone = build_backbone(BackboneConfig(arch="mgca-synth", checkpoint=str(report.path)))
    state = torch.load(report.path, map_location="cpu", weights_only=True)
    assert backbone.source == str(report.path.resolve())
    torch.testing.assert_close(backbone.clip.visual.proj, state["visual.proj"])
    random_init = build_backbone(BackboneConfig(arch="mgca-synth"))
    assert random_init.identity.visual_sha256 != backbone.identity.visual_sha256


def test_given_weights_skip_pretraining(tmp_path):
    cfg = small_embedded(tmp_path, f"backbone.checkpoint={tmp_path / 'mine.pt'}")
    assert ensure_clip_weights(cfg) is None and cfg.backbone.checkpoint == str(tmp_path / "mine.pt")
    assert not (tmp_path / "clip_cache").exists()


def test_pretraining_under_torchrun_needs_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="single process first"):
        ensure_clip_weights(small_embedded(tmp_path))


def test_clip_and_weights_flags(tmp_path, capsys):
    """--clip/--weights are the user-facing spelling of backbone.arch/checkpoint; a missing file is one line."""
    code = main(["--clip", "mgca-synth", "--weights", str(tmp_path / "missing.pt"), f"train.output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "missing.pt does not exist" in err


def test_quick_preset_runs_end_to_end_and_says_so(tmp_path, capsys):
    """`python -m mgca.train --quick`, at test size: the whole method, its own folder and CLIP cache key (never the
    full run's), and a closing line that says its figures are smaller and where the full run's are."""
    from mgca.train import QUICK_OUTPUT, QUICK_OVERRIDES, parse_args

    quick = load_config(embedded_config_path(), list(QUICK_OVERRIDES))
    full = load_config(embedded_config_path())
    assert quick.train.output_dir == QUICK_OUTPUT != full.train.output_dir
    assert cache_path(quick.backbone.arch, quick.pretrain, quick.data.synthetic) != cache_path(
        full.backbone.arch, full.pretrain, full.data.synthetic)
    assert parse_args(["--quick"]).quick
    code = main(["--quick", *SMALL_PRETRAIN, *SMALL_DECODER, *SMALL_BENCHMARK,
                 f"pretrain.cache_dir={tmp_path / 'clip_cache'}", f"train.output_dir={tmp_path / 'run'}"])
    out = capsys.readouterr().out
    assert code == 0 and (tmp_path / "run" / "benchmark.json").is_file()
    assert ("this was --quick: 12 pretraining and 16 decoder steps instead of 1,000 pretraining and 2,400 decoder "
            "steps, 4 held-out images instead of 500") in out
    assert "docs/results.md" in out
    assert main(["--quick", "--config", str(embedded_config_path())]) == 2


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    """Emulated bf16 is ~10x slower than fp32 (a CPU whose hypervisor hides AVX-512): auto must pick fp32 there,
    and a CLIP pretrained in either precision gets its own cache entry."""
    import runtime.openvino_engine as ov
    from mgca.clip_pretrain import cache_path
    from mgca.config import PretrainConfig
    from mgca.device import resolve_precision_name

    cpu = torch.device("cpu")
    cfg = PretrainConfig(precision="auto")
    monkeypatch.setattr(ov, "cpu_capabilities", lambda core=None: ("FP32", "INT8"))
    assert resolve_precision_name("auto", cpu) == "fp32"
    fp32_path = cache_path("mgca-synth", cfg)
    assert fp32_path == cache_path("mgca-synth", PretrainConfig(precision="fp32"))
    monkeypatch.setattr(ov, "cpu_capabilities", lambda core=None: ("FP32", "BF16", "INT8"))
    assert resolve_precision_name("auto", cpu) == "bf16"
    assert cache_path("mgca-synth", cfg) == cache_path("mgca-synth", PretrainConfig(precision="bf16")) != fp32_path
    assert resolve_precision_name("fp32", cpu) == "fp32" and resolve_precision_name("bf16", cpu) == "bf16"


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
