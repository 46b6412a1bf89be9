"""The bundle directory (docs/inference-contract.md, "Bundle directory"): its manifest is written and read here.

```
bundle/
  manifest.json        # written last: a directory without it is not a (finished) bundle
  model.onnx           # fp32, always
  model.int8.onnx      # optional, QDQ static int8 (onnxruntime's quantize_static; TensorRT int8 is built from it)
  model.int8.nncf.onnx # optional, NNCF int8 (OpenVINO's int8)
  model.fp16.engine    # optional, TensorRT fp16 (built on the machine that runs it)
  model.int8.engine    # optional, TensorRT int8 from model.int8.onnx
  text_cache.npz       # optional, the vocabulary's embeddings
```
`mgca-export` computes what goes in (`export.pipeline`) and writes it with `staged_bundle` + `manifest_dict` +
`write_manifest`; `runtime.Segmenter` reads it with `load_bundle`. Each fact is stored once: the window
and the other inference settings only in `inference`, the architecture only in `backbone`.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .contract import (
    BUNDLE_FORMAT,
    DENSE_MODE_NAMES,
    GRAPH_ROLE_KEY,
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
from .onnx_metadata import read_onnx_metadata
from .staging import staged_folder

T = TypeVar("T")
GRAPH_BACKBONE_KEYS = ("arch", "visual_sha256", "text_sha256", "dense_mode")  # in the ONNX metadata and the manifest


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: paths resolved (and confined to the bundle folder), the fields the runtime needs typed.

    Every file the manifest names has its sha256 in `files_sha256`; `read_model` and `verify` check it when the
    file is used, so a damaged or altered file is refused instead of silently giving other labels."""

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
    files_sha256: dict[str, str] = field(default_factory=dict)

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
            elif key == "onnx_int8_nncf":
                hint = ("re-export with `mgca-export --checkpoint CKPT --out DIR --int8` where NNCF and OpenVINO are "
                        "installed (pip install 'mgca[train,openvino]'), or use precision 'bf16' / 'fp32'")
            else:
                hint = ("re-export with `mgca-export --checkpoint CKPT --out DIR --int8`" if key == "onnx_int8"
                        else "re-export the bundle")
            what = {"onnx": "fp32 ONNX", "onnx_int8": "int8 ONNX", "onnx_int8_nncf": "NNCF int8 ONNX (OpenVINO)",
                    "trt_fp16": "TensorRT fp16", "trt_int8": "TensorRT int8"}[key]
            raise BundleError(f"bundle {self.path} has no {what} model (manifest models.{key} is null); {hint}")
        if not path.is_file():
            raise BundleError(f"bundle {self.path}: model file {path.name} (models.{key}) is missing; "
                              "re-export the bundle")
        return path

    def available_models(self) -> set[str]:
        """The manifest model keys whose files are in the bundle folder."""
        return {key for key, path in self.models.items() if path is not None and path.is_file()}

    def open_model(self, key: str, build: Callable[[Path, bytes], T]) -> T:
        """`build(path, bytes)` of model `key`, returned only when those bytes match the manifest's sha256.

        The file is read once; the engine is built from exactly the bytes that are verified, while their hash
        is computed on a second thread (hashlib releases the GIL): for ViT-B/16 (345 MB) hashing alone takes
        about as long as creating the onnxruntime session, so overlapping them hides most of it."""
        path = self.model_path(key)
        data = _read_bytes(path, self.path)
        with ThreadPoolExecutor(1, thread_name_prefix="mgca-sha256") as pool:
            digest = pool.submit(lambda: hashlib.sha256(data).hexdigest())
            try:
                engine = build(path, data)
            except Exception:
                self._check_sha256(path, digest.result())  # a damaged file is reported as damaged
                raise
            self._check_sha256(path, digest.result())
        if key.startswith("onnx"):
            self._check_graph_backbone(path, data, key)
        return engine

    def _check_graph_backbone(self, path: Path, data: bytes, key: str) -> None:
        """The backbone and the role (manifest `models` key) the exporter recorded in the graph's metadata are the
        manifest's: a graph of another CLIP, or model files swapped, is refused even when the sha256 in the manifest
        was edited to match (graphs exported before roles were recorded have none, and are not checked for it)."""
        try:
            recorded = read_onnx_metadata(data)
        except ValueError:
            raise BundleError(f"bundle {self.path}: {path.name} is not an ONNX model; re-export the bundle") from None
        role = recorded.get(GRAPH_ROLE_KEY)
        if role is not None and role != key:
            raise BundleError(f"bundle {self.path}: {path.name} holds the graph exported as models.{role} "
                              f"({MODEL_FILES.get(role, role)}), the manifest lists it as models.{key}: the model "
                              "files were swapped or renamed; re-export the bundle")
        backbone = self.manifest.get("backbone") or {}
        for key in GRAPH_BACKBONE_KEYS:
            if key in recorded and key in backbone and recorded[key] != str(backbone[key]):
                raise BundleError(f"bundle {self.path}: {path.name} was exported from another backbone than the "
                                  f"manifest's ({key} {recorded[key][:12]} vs {str(backbone[key])[:12]}); "
                                  "re-export the bundle")

    def verify(self, path: Path) -> Path:
        """`path` after checking it against its sha256 in the manifest (it must be one of the bundle's files)."""
        try:
            digest = file_sha256(path)
        except OSError as err:
            raise BundleError(f"bundle {self.path}: cannot read {path.name} ({err.strerror or err}); "
                              "make the bundle readable") from None
        self._check_sha256(path, digest)
        return path

    def _check_sha256(self, path: Path, digest: str) -> None:
        expected = self.files_sha256.get(path.name)
        if digest != expected:
            raise BundleError(f"bundle {self.path}: {path.name} does not match its sha256 in {MANIFEST_FILE} "
                              f"({digest[:12]} vs {str(expected)[:12]}): the file was damaged or altered; "
                              "re-export the bundle")


def _read_bytes(path: Path, root: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise BundleError(f"bundle {root}: cannot read {path.name} ({err.strerror or err}); make the bundle "
                          f"readable (chmod -R u+rX {root})") from None


def _require(mapping: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in mapping:
        raise BundleError(f"{where} has no {key!r}; re-export the bundle with `mgca-export`")
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise BundleError(f"{where}: {key!r} has type {type(value).__name__}, expected "
                          f"{getattr(kind, '__name__', kind)}")
    return value


def _triple(value: Any, key: str, where: str, positive: bool = False) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 \
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise BundleError(f"{where}: input.{key} must be a list of 3 numbers, got {value!r}")
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in value):
        need = "positive finite" if positive else "finite"
        raise BundleError(f"{where}: input.{key} must hold 3 {need} numbers, got {value!r}; re-export the bundle")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _bundle_file(root: Path, name: Any, what: str, where: str) -> Path | None:
    """root/name for a plain file name that stays inside the bundle folder (no folders, `..`, absolute paths or
    links out of it), None for null; else a BundleError."""
    if name is None or name == "":
        return None
    if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
        raise BundleError(f"{where}: {what} must be a file name inside the bundle folder, got {name!r}; "
                          "re-export the bundle")
    path = root / name
    if path.exists() and not path.resolve().is_relative_to(root.resolve()):
        raise BundleError(f"{where}: {what} {name!r} links outside the bundle folder; copy the file into the bundle "
                          "or re-export it")
    return path


def load_bundle(path: str | Path) -> Bundle:
    """Read `path/manifest.json`, check it, the paths it names and the fp32 model file's presence; raise BundleError
    (one line) on any fault. File hashes are checked when a file is used (`Bundle.read_model`, `Bundle.verify`)."""
    root = Path(path).expanduser()
    try:
        return _load_bundle(root)
    except OSError as err:
        raise BundleError(f"cannot read bundle {root} ({err.strerror or type(err).__name__}: {err.filename or root}); "
                          f"make it readable (chmod -R u+rX {root})") from None


def _load_bundle(root: Path) -> Bundle:
    if not root.exists():
        raise BundleError(f"bundle directory {root} does not exist; make one with `mgca-export --checkpoint "
                          f"CKPT --out {root}`")
    if not root.is_dir():
        raise BundleError(f"bundle {root} is not a directory; pass the folder `mgca-export --out` wrote")
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"bundle {root} has no {MANIFEST_FILE}; it is not an mgca bundle "
                          "(make one with `mgca-export --checkpoint CKPT --out DIR`)")
    text = manifest_path.read_bytes()  # an unreadable file is an OSError: reported by load_bundle as such
    try:
        manifest = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
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
    backbone = _require(manifest, "backbone", where, dict)
    hashes = _require(manifest, "files_sha256", where, dict)
    _require(raw, "window", f"{where}: inference", int)
    if embed_dim <= 0 or output_stride <= 0:
        raise BundleError(f"{where}: embed_dim and output_stride must be positive, got {embed_dim} and "
                          f"{output_stride}")
    if "window" in manifest and manifest["window"] != raw["window"]:  # mgca-bundle/1 kept a copy at the top
        raise BundleError(f"{where}: window {manifest['window']!r} and inference.window {raw['window']!r} differ; "
                          "re-export the bundle")
    if inp.get("layout", "NCHW") != "NCHW" or out.get("layout", "NCHW") != "NCHW":
        raise BundleError(f"{where}: only NCHW input/output layouts are supported")
    if inp.get("normalized", True) is not True:
        raise BundleError(f"{where}: input.normalized must be true (the runtime feeds mean/std-normalised images)")
    try:
        settings = InferenceSettings.from_dict(raw).validate(output_stride)
    except SettingsError as err:
        raise BundleError(f"{where}: inference {err}; re-export the bundle") from None
    if backbone.get("dense_mode") not in (None, *DENSE_MODE_NAMES):
        raise BundleError(f"{where}: backbone.dense_mode {backbone.get('dense_mode')!r} is not one of "
                          f"{list(DENSE_MODE_NAMES)}; re-export the bundle")
    text_sha256 = backbone.get("text_sha256")
    if not isinstance(text_sha256, str) or not text_sha256:
        raise BundleError(f"{where}: backbone.text_sha256 is missing, so no text cache could be checked against "
                          "the bundle's CLIP; re-export the bundle")

    resolved = {key: _bundle_file(root, models.get(key), f"models.{key}", where) for key in MODEL_KEYS.values()}
    if resolved["onnx"] is None:
        raise BundleError(f"{where}: models.onnx is not set; the fp32 ONNX model is required")
    if not resolved["onnx"].is_file():
        raise BundleError(f"bundle {root}: model file {resolved['onnx'].name} is missing; re-export the bundle")
    cache = _bundle_file(root, manifest.get("text_cache"), "text_cache", where)
    for file in [*resolved.values(), cache]:
        digest = hashes.get(file.name) if file is not None else None
        if file is not None and not (isinstance(digest, str) and len(digest) == 64):
            raise BundleError(f"{where}: files_sha256 has no sha256 for {file.name}, so its integrity cannot be "
                              "checked; re-export the bundle")
    return Bundle(
        path=root,
        manifest=manifest,
        arch=str(backbone.get("arch", manifest.get("arch", "unknown"))),  # mgca-bundle/1 also wrote it at the top
        embed_dim=embed_dim,
        output_stride=output_stride,
        input_name=str(inp.get("name", INPUT_NAME)),
        output_name=str(out.get("name", OUTPUT_NAME)),
        mean=_triple(inp.get("mean"), "mean", where),
        std=_triple(inp.get("std"), "std", where, positive=True),
        inference=settings,
        models=resolved,
        text_cache=cache,
        text_sha256=text_sha256,
        files_sha256={str(k): str(v) for k, v in hashes.items()},
    )


# ---------------------------------------------------------------------------------------------- writing

BUNDLE_FILES = (MANIFEST_FILE, *MODEL_FILES.values(), TEXT_CACHE_FILE)  # what a re-export replaces


def staged_bundle(out: str | Path):
    """Context manager: an empty folder beside `out` to write the new bundle into, swapped in for `out` only when
    the block ends without an error (`runtime.staging`): a re-export that fails its parity check or is interrupted
    leaves the working bundle as it was. Files in `out` that are not bundle files stay."""
    return staged_folder(out, BUNDLE_FILES, "bundle folder")


def is_bundle_file(path: str | Path) -> bool:
    """Whether `path` is one of a bundle's own files (in a folder holding a manifest): writing it by hand would leave
    a manifest whose sha256 no longer matches, so writers refuse it."""
    path = Path(path).expanduser()
    return path.name in BUNDLE_FILES and (path.parent / MANIFEST_FILE).is_file()


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


__all__ = ["BUNDLE_FILES", "Bundle", "is_bundle_file", "load_bundle", "staged_bundle", "manifest_dict",
           "write_manifest"]
