"""Hardening, second round, part two (issue 30): each test fails without its check (docs/reliability.md).

Items 2's tests (re-exports) live in tests/test_export.py beside the exporter's other tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .support import blocky_image, one_line_error
from .test_evalsets_folder import labelled_folder

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
