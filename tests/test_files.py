"""runtime/files.py: the one atomic writer; files keep the usual modes and the process umask is left alone."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_have_the_usual_mode(tmp_path, tiny_model, tiny_config, umask):
    from mgca.checkpoint import atomic_torch_save, save_checkpoint
    from mgca.config import config_to_dict
    from runtime.text_cache import write_text_cache

    previous = os.umask(umask)
    try:
        written = [
            save_checkpoint(tmp_path / "last.pt", {"config": config_to_dict(tiny_config), "decoder": {}}),
            atomic_torch_save(tmp_path / "clip_cache" / "tiny.pt", tiny_model.backbone.clip.state_dict()),
            write_text_cache(tmp_path / "cache.npz", np.eye(2, 64), ["a", "b"], ["{}"],
                             tiny_model.backbone.identity.to_dict()),
        ]
    finally:
        os.umask(previous)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_atomic_writes_leave_the_process_umask_alone(tmp_path, monkeypatch):
    """The temporary file gets its mode from the kernel: no os.umask round trip, which races with other threads
    creating files (they would get the temporary umask)."""
    from runtime.files import atomic_write_bytes

    def no_umask(*args):
        raise AssertionError("os.umask changed the process-wide umask")

    monkeypatch.setattr(os, "umask", no_umask)
    atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert (tmp_path / "x.bin").read_bytes() == b"data"


def test_bundle_files_have_the_usual_mode(bundle):
    umask = os.umask(0)
    os.umask(umask)
    for path in bundle.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
