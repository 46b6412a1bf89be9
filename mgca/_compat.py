"""Import open_clip on a CPU-only torch.

PyPI's torchvision 0.28.0 is a CUDA build. With the CPU torch wheel its C extension
fails to load, and `torchvision/_meta_registrations.py` then raises
``operator torchvision::nms does not exist`` at import (pytorch/pytorch#122494).
open_clip imports torchvision for its transforms, so we define the two op schemas that
module registers fake kernels for, and nothing else. mgca never calls those ops; where
torchvision loads normally (its extension is present) this shim does nothing.
"""
from __future__ import annotations

import os
import sys
from types import ModuleType

import torch

_MISSING_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_shim_library: torch.library.Library | None = None


def _torchvision_ops_registered() -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018 - attribute lookup is the check
        return True
    except (AttributeError, RuntimeError):
        return False


def ensure_torchvision_importable() -> None:
    """Import torchvision, defining its missing op schemas first if its C extension cannot load."""
    global _shim_library
    if "torchvision" in sys.modules and _shim_library is None:
        return
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if not _torchvision_ops_registered():
        _shim_library = torch.library.Library("torchvision", "DEF")
        for schema in _MISSING_OP_SCHEMAS:
            _shim_library.define(schema)
    import torchvision  # noqa: F401


def import_open_clip() -> ModuleType:
    """open_clip, imported offline: no hub look-ups, torchvision made importable."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ensure_torchvision_importable()
    import open_clip

    return open_clip
