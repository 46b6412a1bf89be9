"""runtime/batch.py below the CLI: what is checked before any image is read (issue 29)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from runtime.batch import BatchOutput, ImageTask
from runtime.errors import OutputPathError

from .support import as_unprivileged_user


def test_a_read_only_labels_folder_is_found_before_any_work(world_folder):
    """It gave a raw PermissionError traceback in the middle of the run."""
    out = world_folder / "out"
    (out / "labels").mkdir(parents=True)
    out.chmod(0o777)
    (out / "labels").chmod(0o555)
    output = BatchOutput(out, ("cat",))
    with as_unprivileged_user(), pytest.raises(OutputPathError, match=r"labels cannot be written \(Permission denied"):
        output.check_targets([ImageTask(str(world_folder / "a.png"), "a")])


def test_targets_in_writable_folders_pass(world_folder):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(world_folder / "a.png")
    BatchOutput(world_folder / "out", ("cat",)).check_targets([ImageTask(str(world_folder / "a.png"), "x/y/a")])
    assert not (world_folder / "out").exists()  # checking writes nothing where nothing was
