"""mgca/cli/args.py: the command-line flags of the inference settings, generated from the contract's one
declaration (runtime.contract.SETTING_SPECS) for mgca-eval, mgca-segment and mgca-export alike."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def parsers() -> dict[str, argparse.ArgumentParser]:
    from export.cli import export_parser
    from mgca.cli import eval as eval_cli
    from mgca.cli import segment as segment_cli

    return {"mgca-eval": eval_cli.build_parser(), "mgca-segment": segment_cli.build_parser(),
            "mgca-export": export_parser()}


REQUIRED = {"mgca-eval": ["--dataset", "voc21"], "mgca-segment": ["photo.jpg", "--classes", "cat"],
            "mgca-export": ["--checkpoint", "c.pt", "--out", "b"]}


@pytest.mark.parametrize("prog", sorted(REQUIRED))
@pytest.mark.parametrize("flags, message", [
    (["--pamr", "100000000"], "at most 100"),  # hung every call
    (["--units", "1000000"], "at most 1024"),  # a 14.6 TiB allocation
    (["--pamr-dilations", "1,1000000"], "at most 128"),  # a 43.7 TiB allocation
    (["--short-side", "100000"], "at most 4096"),
])
def test_out_of_range_flags_are_usage_errors(prog, flags, message, capsys):
    """Issue 29 item 8, flag side: every CLI refuses a value outside the setting's declared range, naming it."""
    with pytest.raises(SystemExit) as info:
        parsers()[prog].parse_args(REQUIRED[prog] + flags)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err.strip().splitlines()[-1], err


def test_every_cli_has_one_flag_per_declared_setting():
    """The flags are the declaration's: a setting added to the contract appears in every CLI, unset (None)."""
    from runtime.contract import SETTING_SPECS

    for prog, parser in parsers().items():
        args = parser.parse_args(REQUIRED[prog])
        for name in SETTING_SPECS:
            assert getattr(args, name) is None, (prog, name)
        flags = {option for action in parser._actions for option in action.option_strings}
        assert {f"--{name.replace('_', '-')}" for name in SETTING_SPECS} <= flags, prog


def test_given_flags_become_the_overrides():
    from mgca.cli.args import engine_args, settings_overrides

    args = parsers()["mgca-segment"].parse_args(["p.jpg", "--classes", "cat", "--units", "0", "--pamr-dilations",
                                                 "8,16", "--padding", "image", "--engine", "B"])
    assert settings_overrides(args) == {"units": 0, "padding": "image", "pamr_dilations": (8, 16)}
    kwargs = engine_args(args)
    assert kwargs["settings"] == settings_overrides(args) and "units" not in kwargs  # engine choices stay apart
    assert kwargs["backend"] == "auto"


def test_trust_torchscript_is_declared_once():
    sources = [p.read_text() for p in (REPO / "mgca" / "cli").glob("*.py")] + [(REPO / "export" / "cli.py").read_text()]
    assert sum(text.count('"--trust-torchscript"') for text in sources) == 1


def test_docs_table_is_the_declaration():
    """docs/inference-contract.md shows the table generated from the declaration: a new setting updates it."""
    from mgca.cli.args import settings_table

    assert settings_table() in (REPO / "docs" / "inference-contract.md").read_text()


@pytest.mark.parametrize("prog", ["mgca-eval", "mgca-segment"])
@pytest.mark.parametrize("flags, message", [
    (["--templates", "plain", "--engine", "BUNDLE"], "--templates plain cannot apply to --engine"),
    (["--templates", "no-such-set", "--engine", "BUNDLE"], "--templates no-such-set cannot apply to --engine"),
    (["--precision", "int8", "--checkpoint", "CKPT"], "--precision applies to an exported engine only"),
    (["--backend", "openvino", "--checkpoint", "CKPT"], "--backend applies to an exported engine only"),
    (["--text-cache", "cache.npz", "--checkpoint", "CKPT"], "--text-cache applies to an exported engine only"),
])
def test_a_flag_is_applied_or_refused_never_ignored(prog, flags, message, bundle, tiny_checkpoint, voc_tree, tmp_path,
                                                    capsys):
    """--templates other than the engine's text cache's, and the engine's flags without --engine, were ignored
    (--templates matching the cache is applied: tests/test_own_data.py's engine run)."""
    import numpy as np
    from PIL import Image

    from mgca.cli import eval as eval_cli
    from mgca.cli import segment as segment_cli

    from .support import blocky_image, one_line_error

    photo = tmp_path / "photo.png"
    Image.fromarray(blocky_image(np.random.default_rng(0), 40, 56)).save(photo)
    flags = [str(bundle) if f == "BUNDLE" else str(tiny_checkpoint) if f == "CKPT" else f for f in flags]
    if prog == "mgca-eval":
        code = eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--no-progress", *flags])
    else:
        code = segment_cli.main([str(photo), "--classes", "cat,dog", "--out", str(tmp_path / "o.png"), *flags])
    assert message in one_line_error(code, capsys.readouterr().err)
    assert not (tmp_path / "o.png").exists()
