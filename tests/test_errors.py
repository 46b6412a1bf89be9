"""runtime/errors.py: one user-facing error type, one line on the command line, tracebacks kept for bugs."""
from __future__ import annotations

import numpy as np
import pytest

from runtime import Segmenter

from .support import ONNX_CPU, REPO, one_line_exit_2


def project_exception_classes() -> list[type]:
    """Every exception class defined in the project's modules (imported, so they exist)."""
    import importlib
    import pkgutil

    found = []
    for package in ("runtime", "calibration", "mgca", "export"):
        module = importlib.import_module(package)
        names = [package] + [f"{package}.{m.name}" for m in pkgutil.walk_packages(module.__path__)]
        for name in names:
            if name.startswith("mgca.cli") or name.endswith("__main__"):
                continue
            for value in vars(importlib.import_module(name)).values():
                if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == name:
                    found.append(value)
    return found


def test_every_project_error_is_an_mgca_error():
    from runtime.errors import MgcaError

    classes = project_exception_classes()
    assert len(classes) >= 19
    assert [c.__qualname__ for c in classes if not issubclass(c, MgcaError)] == []
    assert "torch" not in (REPO / "runtime" / "errors.py").read_text()


def test_clis_print_user_errors_in_one_line_and_keep_tracebacks_for_bugs(tmp_path, voc_tree, capsys, monkeypatch):
    from export.cli import main as export_main
    from mgca.cli import eval as eval_cli

    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not a checkpoint")
    one_line_exit_2(export_main(["--checkpoint", str(broken), "--out", str(tmp_path / "b")]),
                    capsys.readouterr().err, "corrupt or truncated")
    one_line_exit_2(eval_cli.main(["--dataset", "voc21", "--root", str(tmp_path), "--checkpoint", str(broken)]),
                    capsys.readouterr().err, "voc21")

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(eval_cli, "apply_protocol", bug)
    with pytest.raises(ZeroDivisionError):  # not a user error: the traceback is kept
        eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--decoder", "none"])


def test_runtime_errors_share_the_base(bundle, tmp_path):
    from runtime.errors import MgcaError

    with pytest.raises(MgcaError):
        Segmenter(tmp_path / "missing")
    with pytest.raises(MgcaError):
        Segmenter(bundle, **ONNX_CPU).segment(np.zeros((4, 4, 3), np.float32))
