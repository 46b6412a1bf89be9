"""Configuration: YAML + overrides, type coercion, one-line errors for bad keys and values."""
from __future__ import annotations

from pathlib import Path

import pytest

from mgca.config import Config, ConfigError, config_from_dict, config_to_dict, load_config

from .support import one_line_error, one_line_exit_2, train_args


def test_defaults_are_the_papers():
    cfg = Config()
    assert (cfg.loss.k_obj, cfg.loss.k_neg, cfg.loss.k_pix, cfg.loss.tau) == (0.4, 0.05, 0.06, 0.07)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.epochs, cfg.optim.warmup_epochs) == (1e-4, 0.05, 15, 2.0)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  batch_size: 4\nloss:\n  k_pix: 0.1\n")
    cfg = load_config(path,
                      ["train.batch_size=8", "data.crop_scale=0.3,1", "backbone.checkpoint=none", "optim.lr=2e-4"])
    assert cfg.train.batch_size == 8 and cfg.loss.k_pix == 0.1
    assert cfg.data.crop_scale == (0.3, 1.0) and cfg.backbone.checkpoint is None and cfg.optim.lr == 2e-4


def test_yaml_on_off_reads_as_literal(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  compile: off\n")
    assert load_config(path).train.compile == "off"
    assert load_config(None, ["train.compile=on"]).train.compile == "on"


def test_round_trip():
    cfg = load_config(None, ["loss.scale=3.5", "backbone.dense_mode=maskclip"])
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, message", [
    ("train.bogus=1", r"unknown key\(s\) \['bogus'\] in 'train'"),
    ("train.batch_size=lots", "train.batch_size: expected int"),
    ("backbone.dense_mode=fancy", "not one of"),
    ("nosection", "must look like section.key=value"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("overrides, message", [
    (["train=5", "train.batch_size=4"], r"sets a key inside train, which another override sets to the single value 5"),
    (["train.batch_size=4", "train.batch_size.x=1"], "sets a key inside train.batch_size"),
    (["train.batch_size.x=1"], r"train.batch_size: expected int .*got \{'x': 1\}"),
    (["train=5"], "train: expected a mapping"),
])
def test_a_section_and_a_value_at_once_is_one_line(overrides, message):
    """A section set to a value and a key inside it (and a value given keys) raised a raw TypeError."""
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


def test_a_yaml_section_that_is_a_value_is_refused(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("train: 4\n")
    with pytest.raises(ConfigError, match="train: expected a mapping"):
        load_config(config)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


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


@pytest.mark.parametrize("text", ["5\n", "- a\n- b\n", "just words\n"])
def test_a_config_that_is_no_mapping_is_one_line(tmp_path, capsys, text):
    from mgca.train import main

    (tmp_path / "run.yaml").write_text(text)
    code = main(["--config", str(tmp_path / "run.yaml"), f"train.output_dir={tmp_path / 'out'}"])
    assert "not a mapping of sections" in one_line_error(code, capsys.readouterr().err)


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
