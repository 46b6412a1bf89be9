"""The bundle directory `mgca-export` writes and `runtime.Segmenter` reads (docs/inference-contract.md).

```
bundle/
  manifest.json        # written last: a directory without it is not a (finished) bundle
  model.onnx           # fp32, always
  model.int8.onnx      # optional, QDQ static int8
  model.fp16.engine    # optional, TensorRT fp16 (built on the machine that runs it)
  model.int8.engine    # optional, TensorRT int8 from model.int8.onnx
  text_cache.npz       # optional, the vocabulary's embeddings
```
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
from pathlib import Path
from typing import Any

from ._files import atomic_path

BUNDLE_FORMAT = "mgca-bundle/1"
MANIFEST = "manifest.json"
FILES = {
    "onnx": "model.onnx",
    "onnx_int8": "model.int8.onnx",
    "trt_fp16": "model.fp16.engine",
    "trt_int8": "model.int8.engine",
    "text_cache": "text_cache.npz",
}


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def start_bundle(out: str | Path) -> Path:
    """Create `out` (or reuse it), removing a previous export's manifest and model files first, so an
    interrupted re-export never leaves a manifest that describes files of another export."""
    root = Path(out).expanduser()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--out {root} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    for name in FILES.values():
        (root / name).unlink(missing_ok=True)
    return root


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for module in ("torch", "onnx", "onnxruntime", "onnxscript", "open_clip"):
        try:
            mod = __import__(module)
            out[module] = str(getattr(mod, "__version__", "?"))
        except Exception:  # noqa: BLE001 - informational only
            continue
    try:
        from importlib.metadata import version

        out["mgca"] = version("mgca")
    except Exception:  # noqa: BLE001 - not installed as a distribution (source checkout)
        pass
    return out


def build_manifest(model, config, window: int, inference: dict[str, Any], models: dict[str, str | None],
                   text_cache: str | None, parity: dict[str, Any], decoder_sha256: str,
                   extra: dict[str, Any] | None = None, root: Path | None = None) -> dict[str, Any]:
    """The manifest dict (contract fields first, then provenance)."""
    backbone = model.backbone
    identity = backbone.identity.to_dict()
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "arch": backbone.arch,
        "embed_dim": int(backbone.embed_dim),
        "patch_size": int(backbone.patch_size),
        "output_stride": int(model.output_stride),
        "window": int(window),
        "input": {"name": "image", "dtype": "float32", "layout": "NCHW", "normalized": True,
                  "mean": [float(v) for v in backbone.mean], "std": [float(v) for v in backbone.std],
                  "dynamic_batch": True, "shape": ["N", 3, int(window), int(window)]},
        "output": {"name": "embeddings", "dtype": "float32", "layout": "NCHW", "l2_normalized": True,
                   "shape": ["N", int(backbone.embed_dim), int(window) // int(model.output_stride),
                             int(window) // int(model.output_stride)]},
        "backbone": identity,
        "decoder_sha256": decoder_sha256,
        "decoder": dataclasses.asdict(config.decoder) if config is not None else None,
        "inference": dict(inference),
        "models": {key: models.get(key) for key in ("onnx", "onnx_int8", "trt_fp16", "trt_int8")},
        "text_cache": text_cache,
        "parity": parity,
    }
    if root is not None:
        names = [n for n in list(manifest["models"].values()) + [text_cache] if n]
        manifest["files_sha256"] = {name: file_sha256(root / name) for name in names if (root / name).is_file()}
    manifest["exporter"] = {"tool": "mgca-export", "opset": 18, **versions()}
    manifest.update(extra or {})
    return manifest


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> Path:
    root = Path(root)
    path = root / MANIFEST
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(_finite(manifest), handle, indent=2, allow_nan=False, default=_jsonable)
        handle.write("\n")
    return path


def _finite(value: Any) -> Any:
    """NaN/inf (e.g. an undefined mIoU) become null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = ["BUNDLE_FORMAT", "MANIFEST", "FILES", "build_manifest", "write_manifest", "start_bundle", "file_sha256", "versions"]
