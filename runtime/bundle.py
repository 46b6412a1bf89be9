"""The bundle directory (docs/inference-contract.md, "Bundle directory"): its manifest is written and read here.

```
bundle/
  manifest.json        # written last: a directory without it is not a (finished) bundle
  model.onnx           # fp32, always
  model.int8.onnx      # optional, QDQ static int8
  model.fp16.engine    # optional, TensorRT fp16 (built on the machine that runs it)
  model.int8.engine    # optional, TensorRT int8 from model.int8.onnx
  text_cache.npz       # optional, the vocabulary's embeddings
```
`mgca-export` computes what goes in (`export.pipeline`) and writes it with `start_bundle` + `manifest_dict` +
`write_manifest`; `runtime.Segmenter` reads it with `load_bundle`. Each fact is stored once: the window
and the other inference settings only in `inference`, the architecture only in `backbone`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contract import (
    BUNDLE_FORMAT,
    INPUT_NAME,
    MANIFEST_FILE,
    MODEL_FILES,
    MODEL_KEYS,
    OUTPUT_NAME,
    READABLE_BUNDLE_FORMATS,
    TEXT_CACHE_FILE,
    InferenceSettings,
)
from .errors import BundleError, SettingsError, one_line
from .files import atomic_path, file_sha256


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: paths resolved, the fields the runtime needs typed."""

    path: Path
    manifest: dict[str, Any]
    arch: str
    embed_dim: int
    output_stride: int
    input_name: str
    output_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    inference: InferenceSettings  # the graph's fixed window is inference.window
    models: dict[str, Path | None] = field(default_factory=dict)
    text_cache: Path | None = None
    text_sha256: str | None = None

    def model_path(self, key: str) -> Path:
        """The file of manifest `models.<key>` ("onnx", "onnx_int8", "trt_fp16", "trt_int8"), or a one-line
        BundleError."""
        if key not in MODEL_KEYS.values():
            raise BundleError(f"unknown model key {key!r}; choose one of {sorted(MODEL_KEYS.values())}")
        path = self.models.get(key)
        if path is None:
            if key.startswith("trt"):
                hint = ("build it on the GPU machine that will run it with `mgca-export --checkpoint CKPT --out DIR "
                        "--trt fp16` (or --trt int8), or use backend='onnxruntime'")
            else:
                hint = ("re-export with `mgca-export --checkpoint CKPT --out DIR --int8`" if key == "onnx_int8"
                        else "re-export the bundle")
            what = {"onnx": "fp32 ONNX", "onnx_int8": "int8 ONNX", "trt_fp16": "TensorRT fp16",
                    "trt_int8": "TensorRT int8"}[key]
            raise BundleError(f"bundle {self.path} has no {what} model (manifest models.{key} is null); {hint}")
        if not path.is_file():
            raise BundleError(f"bundle {self.path}: model file {path.name} (models.{key}) is missing; "
                              "re-export the bundle")
        return path


def _require(mapping: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in mapping:
        raise BundleError(f"{where} has no {key!r}; re-export the bundle with `mgca-export`")
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise BundleError(f"{where}: {key!r} has type {type(value).__name__}, expected "
                          f"{getattr(kind, '__name__', kind)}")
    return value


def _triple(value: Any, key: str, where: str) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
        raise BundleError(f"{where}: input.{key} must be a list of 3 numbers, got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def load_bundle(path: str | Path) -> Bundle:
    """Read `path/manifest.json`, check it and the fp32 model file; raise BundleError (one line) on any fault."""
    root = Path(path).expanduser()
    if not root.exists():
        raise BundleError(f"bundle directory {root} does not exist; make one with `mgca-export --checkpoint "
                          f"CKPT --out {root}`")
    if not root.is_dir():
        raise BundleError(f"bundle {root} is not a directory; pass the folder `mgca-export --out` wrote")
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"bundle {root} has no {MANIFEST_FILE}; it is not an mgca bundle "
                          "(make one with `mgca-export --checkpoint CKPT --out DIR`)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{manifest_path} is not valid JSON ({one_line(err)}); re-export the bundle") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object; re-export the bundle")
    where = str(manifest_path)
    fmt = manifest.get("format")
    if fmt not in READABLE_BUNDLE_FORMATS:
        raise BundleError(f"{where}: unknown bundle format {fmt!r}; this runtime reads {BUNDLE_FORMAT!r} "
                          "(re-export with a matching mgca version)")

    embed_dim = _require(manifest, "embed_dim", where, int)
    output_stride = _require(manifest, "output_stride", where, int)
    inp = _require(manifest, "input", where, dict)
    out = _require(manifest, "output", where, dict)
    models = _require(manifest, "models", where, dict)
    raw = _require(manifest, "inference", where, dict)
    _require(raw, "window", f"{where}: inference", int)
    if output_stride <= 0:
        raise BundleError(f"{where}: output_stride must be positive, got {output_stride}")
    if inp.get("layout", "NCHW") != "NCHW" or out.get("layout", "NCHW") != "NCHW":
        raise BundleError(f"{where}: only NCHW input/output layouts are supported")
    if inp.get("normalized", True) is not True:
        raise BundleError(f"{where}: input.normalized must be true (the runtime feeds mean/std-normalised images)")
    try:
        settings = InferenceSettings.from_dict(raw).validate(output_stride)
    except SettingsError as err:
        raise BundleError(f"{where}: inference {err}; re-export the bundle") from None

    resolved: dict[str, Path | None] = {}
    for key in MODEL_KEYS.values():
        name = models.get(key)
        resolved[key] = (root / name) if isinstance(name, str) and name else None
    if resolved["onnx"] is None:
        raise BundleError(f"{where}: models.onnx is not set; the fp32 ONNX model is required")
    if not resolved["onnx"].is_file():
        raise BundleError(f"bundle {root}: model file {resolved['onnx'].name} is missing; re-export the bundle")

    cache_name = manifest.get("text_cache")
    backbone = manifest.get("backbone") or {}
    return Bundle(
        path=root,
        manifest=manifest,
        arch=str(backbone.get("arch", manifest.get("arch", "unknown"))),  # mgca-bundle/1 also wrote it at the top
        embed_dim=embed_dim,
        output_stride=output_stride,
        input_name=str(inp.get("name", INPUT_NAME)),
        output_name=str(out.get("name", OUTPUT_NAME)),
        mean=_triple(inp.get("mean"), "mean", where),
        std=_triple(inp.get("std"), "std", where),
        inference=settings,
        models=resolved,
        text_cache=(root / cache_name) if isinstance(cache_name, str) and cache_name else None,
        text_sha256=backbone.get("text_sha256"),
    )


# ---------------------------------------------------------------------------------------------- writing

def start_bundle(out: str | Path) -> Path:
    """Create `out` (or reuse it), removing a previous export's manifest and model files first, so an
    interrupted re-export never leaves a manifest that describes files of another export."""
    root = Path(out).expanduser()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"bundle path {root} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST_FILE, *MODEL_FILES.values(), TEXT_CACHE_FILE):
        (root / name).unlink(missing_ok=True)
    return root


def manifest_dict(*, embed_dim: int, patch_size: int, output_stride: int, mean: tuple[float, ...],
                  std: tuple[float, ...],
                  settings: InferenceSettings, backbone: dict[str, Any], models: dict[str, str | None],
                  text_cache: str | None, **provenance: Any) -> dict[str, Any]:
    """The manifest: the contract's fields first (what `load_bundle` reads), then `provenance` in the given order
    (decoder hash and config, parity, calibration, TensorRT builds, tool versions: informational)."""
    return {
        "format": BUNDLE_FORMAT,
        "embed_dim": int(embed_dim),
        "patch_size": int(patch_size),
        "output_stride": int(output_stride),
        "input": {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW", "normalized": True,
                  "mean": [float(v) for v in mean], "std": [float(v) for v in std], "dynamic_batch": True},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "layout": "NCHW", "l2_normalized": True},
        "backbone": dict(backbone),
        "inference": settings.to_dict(),
        "models": {key: models.get(key) for key in MODEL_FILES},
        "text_cache": text_cache,
        **provenance,
    }


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> Path:
    """Write `root/manifest.json` atomically, last, with the sha256 of every file it names (`files_sha256`)."""
    root = Path(root)
    names = [n for n in [*manifest.get("models", {}).values(), manifest.get("text_cache")] if n]
    hashes = {name: file_sha256(root / name) for name in names if (root / name).is_file()}
    path = root / MANIFEST_FILE
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(_finite({**manifest, "files_sha256": hashes}), handle, indent=2, allow_nan=False, default=_jsonable)
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
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = ["Bundle", "load_bundle", "start_bundle", "manifest_dict", "write_manifest"]
