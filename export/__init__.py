"""export: `mgca-export` — a trained model -> bundle (ONNX fp32, int8 QDQ ONNX, TensorRT engines, text cache, manifest).

    from export import ExportOptions, export_bundle
    export_bundle(model, "bundle/", ExportOptions(vocab=["road", "sky"], int8=True))

Modules: `pipeline` (`export_bundle`, the whole export), `onnx_export` (the graph), `parity` (ONNX vs
PyTorch), `text_cache` (vocabulary embeddings), `tensorrt_build` (optional TensorRT engines), `cli`
(`main`: arguments -> ExportOptions). The bundle's format is `runtime.bundle`'s and `runtime.text_cache`'s.
Imports torch and mgca; `runtime/` never imports this package. See export/README.md.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ExportOptions", "ExportOptionsError", "ExportResult", "export_bundle"]


def __getattr__(name: str) -> Any:
    """The pipeline's names, imported on first use: `mgca-export` imports this package before its `main` runs,
    and torch and onnx load in seconds during which Ctrl-C must still end in one line (`runtime.errors.run_cli`)."""
    if name in __all__:
        return getattr(importlib.import_module(".pipeline", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
