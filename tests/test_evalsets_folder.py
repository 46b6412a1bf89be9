"""mgca/evalsets/folder.py: `mgca-eval --dataset folder` reads a labelled folder with the user's own ids (issue 29)."""
from __future__ import annotations

import numpy as np
import pytest

from mgca.cli import eval as eval_cli

from .support import labelled_folder, one_line_error


@pytest.mark.parametrize("extra, needle", [
    (["--background", "ignore", "--ignore-index", "0"], "--background ignore already leaves id 0"),
    (["--ignore-index", "2"], "--ignore-index 2 is the id of class 'dog'"),
    (["--background", "threshold", "--ignore-index", "1"], "--ignore-index 1 is the id of class 'cat'"),
])
def test_an_ignore_index_that_is_a_class_id_is_refused(tmp_path, capsys, extra, needle):
    """The issue's case: with --background ignore --ignore-index 0, cat became the ignore id after the zero-label
    shift and was never scored (IoU 0.0, Acc None), silently."""
    root = labelled_folder(tmp_path / "data")
    code = eval_cli.main(["--dataset", "folder", "--root", str(root), "--classes", str(root / "classes.txt"),
                          "--decoder", "none", "--arch", "mgca-tiny", "--short-side", "64", "--window", "64",
                          "--stride", "32", "--device", "cpu", "--no-progress", *extra])
    assert needle in one_line_error(code, capsys.readouterr().err)


def test_an_ignore_index_outside_the_classes_keeps_every_class_scored(tmp_path):
    from mgca.evalsets import FolderSource, open_folder

    root = labelled_folder(tmp_path / "data")
    dataset = open_folder(FolderSource(root / "classes.txt", root, ignore_index=4, background="ignore"))
    label = dataset[0].label
    assert dataset.spec.classes == ("cat", "dog", "road") and sorted(np.unique(label).tolist()) == [0, 1, 2, 4]
