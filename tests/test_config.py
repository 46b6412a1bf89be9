"""Configuration: YAML + overrides, type coercion, one-line errors for bad keys and values."""
from __future__ import annotations

import pytest

from mgca.config import Config, ConfigError, config_from_dict, config_to_dict, load_config


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
