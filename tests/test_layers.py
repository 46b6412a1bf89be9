"""The import layers, read from the source (no imports run): runtime at the bottom, calibration on it, mgca's
library never importing its own command-line modules."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .support import REPO


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved against its package)."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    if path.name == "__init__.py":
        package = path.relative_to(REPO).parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def modules_of(package: str, exclude: str | None = None) -> list[Path]:
    return [p for p in sorted((REPO / package).rglob("*.py")) if not (exclude and p.is_relative_to(REPO / exclude))]


def offenders(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(REPO)} imports {name}" for path in files for name in sorted(imported_modules(path))
            if name.split(".")[0] in forbidden or any(name == f or name.startswith(f + ".") for f in forbidden)]


@pytest.mark.parametrize("package, forbidden", [
    ("runtime", ("torch", "mgca", "export", "calibration", "transformers")),
    ("calibration", ("torch", "mgca", "export", "transformers")),
])
def test_lower_layers_do_not_import_upper_ones(package, forbidden):
    assert not offenders(modules_of(package), forbidden)


def test_hugging_face_checkpoints_are_read_without_transformers():
    """mgca.hf_clip renames tensors itself: transformers is a test and training extra, never needed to load."""
    assert not offenders(modules_of("mgca") + modules_of("export"), ("transformers",))


def test_mgca_library_does_not_import_its_cli():
    assert not offenders(modules_of("mgca", exclude="mgca/cli"), ("mgca.cli",))


def test_the_check_sees_relative_imports():
    assert "mgca.evalsets.open_dataset" in imported_modules(REPO / "mgca" / "quality.py")
    assert "runtime.contract.InferenceSettings" in imported_modules(REPO / "runtime" / "__init__.py")
