"""Atomic file writes, output-path checks and file hashes: the one place the project writes user files.

Every file of a bundle, a text cache, a checkpoint or the CLIP cache is written through `atomic_path`: a
temporary file in the target folder, flushed to disk, then renamed over the target, so an interrupted write
never leaves half a file nor loses the old one. The temporary file is created with mode 0666 and the
kernel applies the process umask, as for any `open(path, "w")` (so 0644 under the usual umask 022):
no umask is read or changed, which would race with other threads creating files meanwhile.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputPathError

CREATE_MODE = 0o666  # minus the umask, by the kernel: what open(path, "w") gives


TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # the names _create_temporary gives: .NAME.<8 hex>.tmp


def _create_temporary(folder: Path, name: str) -> Path:
    """A new empty file next to `name` in `folder`, created exclusively with CREATE_MODE & ~umask."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), CREATE_MODE)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name for {name} in {folder}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path` to write; on success it is flushed to disk and replaces `path`,
    on error it is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path.parent, path.name)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_temporaries(folder: Path, recursive: bool = True) -> int:
    """Remove the temporary files that writes killed before their rename (kill -9, power loss) left in `folder`
    (and below it); how many. Only one run may write into a folder at a time: another's would go too."""
    removed = 0
    found = (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")) if folder.is_dir() else ()
    for path in found:
        if TEMPORARY.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def atomic_write_bytes(path: str | Path, data) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- output checks

def check_writable_dir(folder: str | Path, what: str) -> Path:
    """Create `folder` if needed and prove a file can be made in it, before any long work starts; else a one-line
    OutputPathError naming `what` (e.g. "train.output_dir")."""
    folder = Path(folder).expanduser()
    try:
        if folder.exists() and not folder.is_dir():
            raise OutputPathError(f"{what} {folder} exists and is not a folder; choose another path")
        folder.mkdir(parents=True, exist_ok=True)
        _create_temporary(folder, "write-test").unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise OutputPathError(f"{what} {folder} cannot be written ({reason}); choose a folder you can write "
                              "to") from None
    return folder


def check_writable_file(path: str | Path, what: str, inputs: tuple[str | Path, ...] = ()) -> Path:
    """`path` when a file can be written there without replacing one of `inputs`, checked before the work starts;
    else a one-line OutputPathError naming `what` (e.g. "--json")."""
    path = Path(path).expanduser()
    for source in inputs:
        if same_file(path, Path(source)):
            raise OutputPathError(f"{what} {path} is the input file {source}; it would be overwritten: choose another "
                                  "output path")
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give a file path")
    check_writable_dir(path.parent, f"the folder of {what}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {path} exists and is read-only; choose another path or make it writable")
    return path


def read_text_file(path: str | Path, what: str, error: type[Exception] = OutputPathError) -> str:
    """The UTF-8 text of a file the user named (a byte-order mark dropped), or a one-line `error` saying whether it
    cannot be read (permissions, a folder) or is not UTF-8 text: a config, class, palette or template file."""
    path = Path(path).expanduser()
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise error(f"{what} {path} cannot be read ({err.strerror or type(err).__name__}); make it readable "
                    f"(chmod u+r {path}) or pass another file") from None
    except UnicodeDecodeError as err:
        raise error(f"{what} {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None


def files_below(root: str | Path) -> list[Path]:
    """Every file below `root`, through linked sub-folders too (Path.rglob skips them silently), each real folder
    entered once so a link to an ancestor cannot loop; sorted, named by the path they were reached by."""
    root = Path(root)
    seen: set[str] = set()
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        found.extend(Path(folder) / name for name in files)
    return sorted(found)


NAME_MAX, PATH_MAX = 255, 4096  # bytes in one path component / a whole path, as Linux and macOS allow


def is_existing_file(text: str) -> bool:
    """Whether `text` names an existing file. A string that cannot be a path (empty, a NUL, a component or the whole
    longer than the OS allows) is not one, decided without asking the OS, which would raise ENAMETOOLONG instead
    of answering (an argument that is a file or an inline list, like --classes)."""
    path = os.path.expanduser(text)
    encoded = os.fsencode(path)
    if not path or b"\0" in encoded or len(encoded) >= PATH_MAX or any(len(part) > NAME_MAX
                                                                      for part in encoded.split(b"/")):
        return False
    try:
        return os.path.isfile(path)
    except (OSError, ValueError):
        return False


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (symlinks, `..` and hard links included)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.expanduser().resolve() == b.expanduser().resolve()


__all__ = ["CREATE_MODE", "atomic_path", "atomic_write_bytes", "atomic_write_text", "file_sha256",
           "check_writable_dir", "check_writable_file", "files_below", "is_existing_file", "read_text_file",
           "remove_temporaries", "same_file"]
