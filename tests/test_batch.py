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


@pytest.mark.parametrize("lose_log", [False, True])
def test_a_damaged_label_png_is_redone_not_counted(bundle, tmp_path, capsys, lose_log):
    """A damaged label PNG in OUT counted as done, then crashed the summary with UnidentifiedImageError."""
    from runtime.batch import LOG_NAME

    from .support import segment, three_photos

    photos, out = three_photos(tmp_path / "photos"), tmp_path / "out"
    assert segment([photos], out, bundle) == 0
    damaged = sorted((out / "labels").rglob("*.png"))[1]
    whole = damaged.read_bytes()
    damaged.write_bytes(whole[: len(whole) // 2])
    if lose_log:
        (out / LOG_NAME).unlink()  # an earlier run's outputs without their log lines
    capsys.readouterr()
    assert segment([photos], out, bundle) == 0, capsys.readouterr().err
    assert "1 images segmented, 2 already done, 0 failed" in capsys.readouterr().out
    assert damaged.read_bytes() == whole
