"""The import layers, read from the source (no imports run): runtime at the bottom, calibration on it, mgca's
library never importing its own command-line modules."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
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


FIRST_PARTY = ("mgca", "export", "runtime", "calibration", "tests", "benchmarks")


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions() -> set[str]:
    """Every distribution pyproject.toml names: the base dependencies and every extra (normalised names)."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    requirements = [*project["dependencies"], *(requirement for extra in extras for requirement in extra)]
    return {_normalised(re.match(r"[A-Za-z0-9._-]+", requirement).group()) for requirement in requirements}


def undeclared_imports(files: list[Path], declared: set[str], providers: dict[str, list[str]]) -> list[str]:
    """'file imports X (from distribution D)' for each third-party import no declared distribution provides.
    A module that is not installed here counts as declared when a declared distribution has its name (tensorrt)."""
    found = []
    for path in files:
        for top in sorted({name.split(".")[0] for name in imported_modules(path)}):
            if not top or top in sys.stdlib_module_names or top in FIRST_PARTY:
                continue
            owners = {_normalised(d) for d in providers.get(top, [])} or {_normalised(top)}
            if not owners & declared:
                found.append(f"{path.relative_to(REPO)} imports {top} (from {', '.join(sorted(owners))}), which "
                             "no dependency or extra of pyproject.toml declares")
    return found


def test_every_imported_package_is_declared():
    """A package the tests (or the packages) import but pyproject.toml does not declare only works on a machine
    that happens to have it: `.ci/run` installs into a fresh venv, and this names the file and the package."""
    files = [p for package in ("tests", "mgca", "export", "runtime", "calibration") for p in modules_of(package)]
    missing = undeclared_imports(files, declared_distributions(), importlib.metadata.packages_distributions())
    assert not missing, "\n".join(missing)


def test_the_declaration_check_sees_an_undeclared_import(tmp_path):
    module = REPO / "tests" / "support.py"  # a real file, so its path is under the repository
    providers = importlib.metadata.packages_distributions()
    assert not undeclared_imports([module], declared_distributions(), providers)
    assert undeclared_imports([module], declared_distributions() - {"numpy"}, providers) == [
        "tests/support.py imports numpy (from numpy), which no dependency or extra of pyproject.toml declares"]
