"""runtime/staging.py: a folder written beside its destination replaces it whole or not at all."""
from __future__ import annotations

from pathlib import Path

import pytest


def test_a_staged_folder_replaces_its_destination_whole_or_not_at_all(tmp_path, monkeypatch):
    from runtime.staging import staged_folder

    out = tmp_path / "b"
    (out / "sub").mkdir(parents=True)
    (out / "model.onnx").write_text("old")
    (out / "README.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt), staged_folder(out, ("model.onnx",), "--out") as staging:
        (staging / "model.onnx").write_text("half")
        raise KeyboardInterrupt
    assert (out / "model.onnx").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    monkeypatch.chdir(out / "sub")  # the working folder inside the folder being replaced
    with staged_folder(out, ("model.onnx",), "--out") as staging:
        (staging / "model.onnx").write_text("new")
    assert (out / "model.onnx").read_text() == "new" and (out / "README.txt").read_text() == "mine"
    assert Path.cwd() == (out / "sub").resolve() and sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    (tmp_path / ".b.0123abcd.staging").mkdir()  # what kill -9 leaves: a staging folder, and an old folder caught
    (out).rename(tmp_path / ".b.89abcdef.old")  # between the two renames
    with staged_folder(out, ("model.onnx",), "--out") as staging:
        assert (out / "README.txt").read_text() == "mine"  # the old folder is put back first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"] and (out / "README.txt").is_file()
    assert not (out / "model.onnx").exists()  # the new bundle had none
    old = tmp_path / ".b.0a0a0a0a.old"  # killed while moving the user's files: the rest waits in the old folder
    old.mkdir()
    (old / "notes.txt").write_text("also mine")
    (old / "model.onnx").write_text("the bundle before")
    with staged_folder(out, ("model.onnx",), "--out"):
        pass
    assert (out / "notes.txt").read_text() == "also mine" and sorted(p.name for p in tmp_path.iterdir()) == ["b"]
