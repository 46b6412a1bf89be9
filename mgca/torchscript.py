"""Read the weights of a TorchScript archive (OpenAI's CLIP .pt files) without running any of its code.

`torch.jit.load` executes the archive: TorchScript methods such as a module's `__setstate__` run while it
loads, and may do anything TorchScript can (create files with `torch.from_file`, for one). Yet the weights
are plain tensors: `data.pkl` pickles the module tree (one object per module, its attributes in a dict)
whose tensors point at the raw storages in `data/`. So this module unpickles `data.pkl` with an unpickler
that knows only how to rebuild tensors from those storages; every module becomes an inert record of its
attributes, no TorchScript method is ever called, and any other global in the pickle is refused. Which
attributes are parameters and buffers (what `state_dict()` would return) is read from the
`__parameters__` / `__buffers__` lists of each class in the archive's `code/`, parsed with `ast` (parsed,
never run). The result equals `torch.jit.load(path).state_dict()`, tensor for tensor
(tests/test_torchscript.py).
"""
from __future__ import annotations

import ast
import collections
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.errors import MgcaError

TRUST_HINT = ("if you trust this file, let it run its own code with --trust-torchscript "
              "(backbone.trust_torchscript=true)")

_STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class TorchScriptError(MgcaError, ValueError):
    """The archive holds something other than a module tree of plain tensors (or is damaged)."""


def is_torchscript_archive(path: str | Path) -> bool:
    """A zip with `constants.pkl` next to its `data.pkl`: what `torch.jit.save` writes (torch.save does not)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


class _ScriptObject:
    """An inert stand-in for a TorchScript object: BUILD stores its state, nothing else happens."""

    qualified_name = ""
    module = ""
    name = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state


@dataclass
class _Storage:
    flat: torch.Tensor  # 1-D tensor over the storage's bytes, in its dtype


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_ignored: Any) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2's tensor (requires_grad, hooks and metadata ignored), bounds-checked."""
    if not isinstance(storage, _Storage):
        raise TorchScriptError("a tensor in the archive does not point at a storage")
    return storage.flat.as_strided(tuple(size), tuple(stride), int(offset))


def _restore_type_tag(value: Any, _type: str) -> Any:
    return value


_SAFE_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "build_intlist"): list,
    ("torch.jit._pickle", "build_doublelist"): list,
    ("torch.jit._pickle", "build_boollist"): list,
    ("torch.jit._pickle", "build_tensorlist"): list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
}


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Rebuilds tensors from the archive's storages and stand-ins for its modules; refuses everything else."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path):
        import io

        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path
        self.classes: dict[str, type] = {}
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (_ScriptObject,),
                                               {"qualified_name": qualified, "module": module, "name": name})
            return self.classes[qualified]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise TorchScriptError(f"TorchScript archive {self.path} refers to {module}.{name}, which is not part of "
                               f"a module's weights; {TRUST_HINT}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchScriptError(f"TorchScript archive {self.path} holds an unknown persistent object; {TRUST_HINT}")
        _, dtype, key, _location, numel = pid[:5]
        if not isinstance(dtype, torch.dtype) or not isinstance(key, str) or not isinstance(numel, int):
            raise TorchScriptError(f"TorchScript archive {self.path} has a malformed storage record")
        if key not in self.storages:
            try:
                raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            except KeyError:
                raise TorchScriptError(f"TorchScript archive {self.path} lacks storage data/{key}; "
                                       "re-download it") from None
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(raw) != numel * itemsize:
                raise TorchScriptError(f"TorchScript archive {self.path}: storage data/{key} has {len(raw)} bytes, "
                                       f"its record says {numel} x {itemsize}; re-download it")
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            self.storages[key] = _Storage(flat)
        return self.storages[key]


def _class_layouts(archive: zipfile.ZipFile, prefix: str, modules: set[str]) -> dict[str, dict[str, Any]]:
    """For each TorchScript class of `modules`: its parameter and buffer names, read from the archive's code
    with `ast.parse` (a parse, never an evaluation: the lists are literals)."""
    layouts: dict[str, dict[str, Any]] = {}
    for module in modules:
        try:
            source = archive.read(f"{prefix}code/{module.replace('.', '/')}.py").decode("utf-8")
            tree = ast.parse(source)
        except (KeyError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            layout: dict[str, Any] = {"module": any(isinstance(b, ast.Name) and b.id == "Module" for b in node.bases)}
            for statement in node.body:
                if isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                        and isinstance(statement.targets[0], ast.Name) \
                        and statement.targets[0].id in ("__parameters__", "__buffers__"):
                    try:
                        layout[statement.targets[0].id] = [str(n) for n in ast.literal_eval(statement.value)]
                    except ValueError:
                        continue
            layouts[f"{module}.{node.name}"] = layout
    return layouts


def _collect(obj: _ScriptObject, prefix: str, layouts: dict[str, dict[str, Any]], out: dict[str, torch.Tensor],
             path: Path, seen: set[int] | None = None) -> None:
    """state_dict() order: this module's parameters, its buffers, then each submodule's, recursively."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        raise TorchScriptError(f"TorchScript archive {path}: its module tree has a cycle; {TRUST_HINT}")
    seen.add(id(obj))
    layout = layouts.get(obj.qualified_name)
    if layout is None:
        raise TorchScriptError(f"TorchScript archive {path}: no readable code describes class {obj.qualified_name}; "
                               f"{TRUST_HINT}")
    names = [*layout.get("__parameters__", []), *layout.get("__buffers__", [])]
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        if names:
            raise TorchScriptError(f"TorchScript archive {path}: class {obj.qualified_name} restores its weights "
                                   f"with its own code; {TRUST_HINT}")
        return  # e.g. an object restored by its own __setstate__: holds no weights, and its code is never run
    for name in names:
        value = state.get(name)
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
    for name, value in state.items():
        if isinstance(value, _ScriptObject) and layouts.get(value.qualified_name, {}).get("module"):
            _collect(value, f"{prefix}{name}.", layouts, out, path, seen)


def read_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """`torch.jit.load(path).state_dict()`, computed without running any code from the archive."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise TorchScriptError(f"{path} is not a TorchScript archive (no single <name>/data.pkl)")
            prefix = pickles[0][:-len("data.pkl")]
            order = archive.read(f"{prefix}byteorder").decode().strip() if f"{prefix}byteorder" in \
                archive.namelist() else "little"
            if order != "little":
                raise TorchScriptError(f"TorchScript archive {path} is {order}-endian; re-save it on a "
                                       "little-endian machine")
            unpickler = _TensorOnlyUnpickler(archive.read(pickles[0]), archive, prefix, path)
            root = unpickler.load()
            if not isinstance(root, _ScriptObject):
                raise TorchScriptError(f"TorchScript archive {path} does not hold a module")
            modules = {cls.module for cls in unpickler.classes.values()}
            layouts = _class_layouts(archive, prefix, modules)
    except TorchScriptError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, pickle.UnpicklingError, RuntimeError, ValueError, TypeError,
            AttributeError, IndexError, KeyError) as err:
        raise TorchScriptError(f"TorchScript archive {path} is damaged ({type(err).__name__}: "
                               f"{' '.join(str(err).split())[:200]}); re-download it") from None
    state: dict[str, torch.Tensor] = {}
    _collect(root, "", layouts, state, path)
    return state


__all__ = ["TorchScriptError", "TRUST_HINT", "is_torchscript_archive", "read_torchscript_state_dict"]
