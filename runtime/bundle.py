"""Read and validate an exported bundle directory (see docs/inference-contract.md, "Bundle directory")."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import BundleError, one_line

BUNDLE_FORMAT = "mgca-bundle/1"
# manifest `models` key for each (backend, precision) the runtime can run
MODEL_KEYS = MappingProxyType({("onnxruntime", "fp32"): "onnx", ("onnxruntime", "int8"): "onnx_int8",
                                ("tensorrt", "fp16"): "trt_fp16", ("tensorrt", "int8"): "trt_int8"})  # read-only: no module state


@dataclass(frozen=True)
class InferenceSettings:
    """How images are cut and scored: the manifest's `inference` block, possibly overridden."""

    short_side: int = 448
    window: int = 448
    stride: int = 224
    units: int = 36
    unit_scope: str = "image"

    def validate(self, output_stride: int, where: str) -> "InferenceSettings":
        for name in ("short_side", "window", "stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise BundleError(f"{where}: inference.{name} must be a positive integer, got {value!r}")
        if self.window % output_stride or self.stride % output_stride:
            raise BundleError(f"{where}: window {self.window} and stride {self.stride} must be multiples of the output stride {output_stride}")
        if self.stride > self.window:
            raise BundleError(f"{where}: stride {self.stride} is larger than the window {self.window}; windows would leave gaps")
        if not isinstance(self.units, int) or self.units < 0:
            raise BundleError(f"{where}: inference.units must be an integer >= 0 (0 = pixel units), got {self.units!r}")
        if self.unit_scope not in ("image", "window"):
            raise BundleError(f"{where}: inference.unit_scope must be 'image' or 'window', got {self.unit_scope!r}")
        return self


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: paths resolved, the fields the runtime needs typed."""

    path: Path
    manifest: dict[str, Any]
    arch: str
    embed_dim: int
    patch_size: int
    output_stride: int
    window: int
    input_name: str
    output_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dynamic_batch: bool
    inference: InferenceSettings
    models: dict[str, Path | None] = field(default_factory=dict)
    text_cache: Path | None = None
    text_sha256: str | None = None

    def model_path(self, key: str) -> Path:
        """The file of manifest `models.<key>` ("onnx", "onnx_int8", "trt_fp16", "trt_int8"), or a one-line BundleError."""
        if key not in MODEL_KEYS.values():
            raise BundleError(f"unknown model key {key!r}; choose one of {sorted(MODEL_KEYS.values())}")
        path = self.models.get(key)
        if path is None:
            if key.startswith("trt"):
                hint = "build it on the GPU machine that will run it with `mgca-export --checkpoint CKPT --out DIR --trt fp16` (or --trt int8), or use backend='onnxruntime'"
            else:
                hint = "re-export with `mgca-export --checkpoint CKPT --out DIR --int8`" if key == "onnx_int8" else "re-export the bundle"
            what = {"onnx": "fp32 ONNX", "onnx_int8": "int8 ONNX", "trt_fp16": "TensorRT fp16", "trt_int8": "TensorRT int8"}[key]
            raise BundleError(f"bundle {self.path} has no {what} model (manifest models.{key} is null); {hint}")
        if not path.is_file():
            raise BundleError(f"bundle {self.path}: model file {path.name} (models.{key}) is missing; re-export the bundle")
        return path


def _require(mapping: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in mapping:
        raise BundleError(f"{where} has no {key!r}; re-export the bundle with `mgca-export`")
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise BundleError(f"{where}: {key!r} has type {type(value).__name__}, expected {getattr(kind, '__name__', kind)}")
    return value


def _triple(value: Any, key: str, where: str) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
        raise BundleError(f"{where}: input.{key} must be a list of 3 numbers, got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def load_bundle(path: str | Path) -> Bundle:
    """Read `path/manifest.json`, check it and the fp32 model file; raise BundleError (one line) on any fault."""
    root = Path(path).expanduser()
    if not root.exists():
        raise BundleError(f"bundle directory {root} does not exist; make one with `mgca-export --checkpoint CKPT --out {root}`")
    if not root.is_dir():
        raise BundleError(f"bundle {root} is not a directory; pass the folder `mgca-export --out` wrote")
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise BundleError(f"bundle {root} has no manifest.json; it is not an mgca bundle (make one with `mgca-export --checkpoint CKPT --out DIR`)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{manifest_path} is not valid JSON ({one_line(err)}); re-export the bundle") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object; re-export the bundle")
    where = str(manifest_path)
    fmt = manifest.get("format")
    if fmt != BUNDLE_FORMAT:
        raise BundleError(f"{where}: unknown bundle format {fmt!r}; this runtime reads {BUNDLE_FORMAT!r} (re-export with a matching mgca version)")

    embed_dim = _require(manifest, "embed_dim", where, int)
    output_stride = _require(manifest, "output_stride", where, int)
    window = _require(manifest, "window", where, int)
    patch_size = manifest.get("patch_size", output_stride)
    inp = _require(manifest, "input", where, dict)
    out = _require(manifest, "output", where, dict)
    models = _require(manifest, "models", where, dict)
    if output_stride <= 0 or window <= 0 or window % output_stride:
        raise BundleError(f"{where}: window {window} must be a positive multiple of output_stride {output_stride}")
    if inp.get("layout", "NCHW") != "NCHW" or out.get("layout", "NCHW") != "NCHW":
        raise BundleError(f"{where}: only NCHW input/output layouts are supported")
    if inp.get("normalized", True) is not True:
        raise BundleError(f"{where}: input.normalized must be true (the runtime feeds mean/std-normalised images)")

    raw = manifest.get("inference") or {}
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: 'inference' must be an object")
    known = {"short_side", "window", "stride", "units", "unit_scope"}
    settings = InferenceSettings(**{k: v for k, v in raw.items() if k in known})
    if settings.window != window:
        raise BundleError(f"{where}: inference.window {settings.window} differs from the exported window {window}")
    settings.validate(output_stride, where)

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
        arch=str(manifest.get("arch", backbone.get("arch", "unknown"))),
        embed_dim=embed_dim,
        patch_size=int(patch_size),
        output_stride=output_stride,
        window=window,
        input_name=str(inp.get("name", "image")),
        output_name=str(out.get("name", "embeddings")),
        mean=_triple(inp.get("mean"), "mean", where),
        std=_triple(inp.get("std"), "std", where),
        dynamic_batch=bool(inp.get("dynamic_batch", True)),
        inference=settings,
        models=resolved,
        text_cache=(root / cache_name) if isinstance(cache_name, str) and cache_name else None,
        text_sha256=backbone.get("text_sha256"),
    )


__all__ = ["Bundle", "BUNDLE_FORMAT", "InferenceSettings", "load_bundle"]
