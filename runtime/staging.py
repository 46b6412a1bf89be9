"""A folder built beside its destination and swapped in only when complete: a re-export never loses a working bundle.

`staged_folder(out, replaced)` yields an empty sibling folder (`.NAME.<8 hex>.staging`) to write into. When the block
ends without an error, the sibling takes `out`'s place (two renames in the same parent folder) and every entry of
the old `out` whose name is not in `replaced` (a README, a timing cache, calibration images) moves into the new one;
the old folder is then removed. When the block fails (a parity check, Ctrl-C), the sibling is removed and `out` is
exactly as it was. Leftovers of a killed run are cleaned up when the next run starts. One run at a time per folder.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputPathError
from .files import check_writable_dir

_LEFTOVER = r"\.{name}\.[0-9a-f]{{8}}\.(staging|old)"


def _sibling(final: Path, kind: str) -> Path:
    return final.parent / f".{final.name}.{secrets.token_hex(4)}.{kind}"


def _clean_leftovers(final: Path, replaced: frozenset[str]) -> None:
    """Remove a killed run's staging folders; an old folder it left is put back (killed between the two renames) or
    emptied into `final` first (killed while moving the user's files), so no file of the user's is lost."""
    pattern = re.compile(_LEFTOVER.format(name=re.escape(final.name)))
    for path in final.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if not match or not path.is_dir() or path.is_symlink():
            continue
        if match.group(1) == "old" and not final.exists():
            os.rename(path, final)
        elif match.group(1) == "old":
            _move_kept(path, final, replaced)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _move_kept(old: Path, final: Path, replaced: frozenset[str]) -> None:
    """Move the entries of `old` not named in `replaced` into `final`, then remove `old` (only replaced files and
    names `final` holds already are left in it)."""
    for entry in old.iterdir():
        if entry.name not in replaced and not (final / entry.name).exists():
            os.rename(entry, final / entry.name)
    shutil.rmtree(old, ignore_errors=True)


def _cwd_inside(final: Path) -> Path | None:
    """The process's working folder relative to `final` when it lies inside it (renaming `final` moves it)."""
    try:
        cwd = Path.cwd()
    except OSError:
        return None
    return cwd.relative_to(final) if cwd.is_relative_to(final) else None


def _swap(staging: Path, final: Path, replaced: frozenset[str]) -> None:
    if not final.exists():
        os.rename(staging, final)
        return
    cwd = _cwd_inside(final)
    old = _sibling(final, "old")
    os.rename(final, old)
    try:
        os.rename(staging, final)
    except OSError:
        os.rename(old, final)
        raise
    _move_kept(old, final, replaced)
    if cwd is not None and (final / cwd).is_dir():
        os.chdir(final / cwd)


def check_staging_target(out: str | Path, what: str) -> Path:
    """`out` resolved, when a folder can be built beside it and swapped in (checked before the slow work starts);
    else a one-line OutputPathError."""
    final = Path(out).expanduser().resolve()
    if final.exists() and not final.is_dir():
        raise OutputPathError(f"{what} {final} exists and is not a folder; choose another path")
    try:
        check_writable_dir(final.parent, "its folder")
    except OutputPathError:
        raise OutputPathError(f"{what} {final} cannot be written: nothing can be made in {final.parent}, where the new "
                              f"{final.name} is built beside the old one; choose a folder you can write to") from None
    if final.exists():
        check_writable_dir(final, what)
    return final


@contextlib.contextmanager
def staged_folder(out: str | Path, replaced: tuple[str, ...], what: str) -> Iterator[Path]:
    """Yield an empty folder beside `out`; on success it becomes `out` (keeping `out`'s entries not named in
    `replaced`), on error it is removed and `out` is untouched. `what` names `out` in errors (e.g. "--out")."""
    final = check_staging_target(out, what)
    _clean_leftovers(final, frozenset(replaced))
    staging = _sibling(final, "staging")
    try:
        os.mkdir(staging, 0o777)  # the kernel applies the umask, as for any new folder
        if final.exists():
            os.chmod(staging, stat.S_IMODE(final.stat().st_mode))
    except OSError as err:
        raise OutputPathError(f"cannot create {staging} ({err.strerror or err}); choose a {what} in a folder you "
                              "can write to") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        _swap(staging, final, frozenset(replaced))
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputPathError(f"cannot move the new {final.name} into place ({err.strerror or err}); {final} still "
                              "holds the previous one: make its folder writable and run again") from None


__all__ = ["check_staging_target", "staged_folder"]
