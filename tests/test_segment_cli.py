"""`mgca-segment` on folders, globs and list files (mgca/cli/segment.py over runtime/batch.py): where outputs go,
what a rerun may reuse, and the one-line errors of issue 29."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from mgca.cli import segment as segment_cli

from .support import blocky_image, one_line_error

CLASSES = "cat,dog,road,sky"


def segment(inputs: list[str | Path], out: Path, bundle: Path, *extra: str, classes: str = CLASSES) -> int:
    return segment_cli.main([*map(str, inputs), "--classes", classes, "--engine", str(bundle), "--out", str(out),
                             "--no-progress", *extra])


def photo(path: Path, seed: int = 0, size: tuple[int, int] = (40, 56)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blocky_image(np.random.default_rng(seed), *size)).save(path)
    return path


def summary_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def files_below(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ item 1: confinement

def test_a_list_with_dotdot_lines_writes_only_inside_out(bundle, tmp_path, monkeypatch, capsys):
    """The issue's case: `../photos/b.png` and `../../X/a.png` in D/lists/list.txt went to out/photos/b.png and over
    the input X/a.png itself."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "D" / "photos" / "b.png", 1)
    photo(tmp_path / "X" / "a.png", 2)
    listing = tmp_path / "D" / "lists" / "list.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text("../photos/b.png\n../../X/a.png\n")
    before = files_below(tmp_path)
    assert segment(["D/lists/list.txt"], Path("out"), bundle) == 0, capsys.readouterr().err
    after = files_below(tmp_path)
    assert {name: data for name, data in after.items() if not name.startswith("out/")} == before
    assert sorted(p.relative_to(tmp_path / "out" / "labels").as_posix()
                  for p in (tmp_path / "out" / "labels").rglob("*.png")) == ["a.png", "b.png"]
    assert sorted(row["labels"] for row in summary_rows(tmp_path / "out" / "summary.csv")) == [
        "labels/a.png", "labels/b.png"]


def test_a_link_out_of_out_is_refused_before_any_work(bundle, tmp_path, capsys):
    photo(tmp_path / "in" / "p.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "labels").symlink_to(elsewhere)
    err = one_line_error(segment([tmp_path / "in"], tmp_path / "out", bundle), capsys.readouterr().err)
    assert "outside --out" in err and "remove the link" in err
    assert not list(elsewhere.iterdir())
