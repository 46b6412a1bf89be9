"""What made the outputs of a batch output folder, so that a rerun never mixes the results of two settings.

OUT/.mgca-output.json records the producer of the labels in the folder: the classes in label order, the background
value, the inference settings and hashes of the model and text embeddings (the caller decides what identifies its
model). A rerun with the same producer resumes. One with another producer is refused in one line naming what
differs, unless the user passes --overwrite: then the record names the new producer and says `mixed` until every
output in the folder is the new producer's (outputs are only ever replaced by their new version, never deleted
first, so an interrupted or partly failed --overwrite leaves old ones behind; the run log tells them apart).
The record also marks the folder as an output folder, so a later run reading a tree around it skips it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OutputPathError
from .files import atomic_write_text, check_writable_dir

RECORD_NAME = ".mgca-output.json"
# The record is replaced atomically (a new file each time), so the run's lock is held on a file of its own.
LOCK_NAME = ".mgca-output.lock"
FORMAT = 1


class DamagedRecordError(OutputPathError):
    """The record exists but is truncated or malformed: --overwrite may replace it."""


@dataclass(frozen=True)
class OutputRecord:
    """The producer of a folder's outputs; `mixed`: some outputs may still be an earlier producer's."""

    producer: dict[str, Any]
    mixed: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.producer)


def fingerprint(producer: dict[str, Any]) -> str:
    """A short hash of the producer (what each log row names, to tell the outputs of two producers apart)."""
    text = json.dumps(producer, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def is_output_folder(folder: Path) -> bool:
    return (folder / RECORD_NAME).is_file()


def read_record(folder: Path) -> OutputRecord | None:
    """The folder's record; None when there is none; a one-line OutputPathError when it is unreadable (saying that
    --overwrite replaces it) or is not a file."""
    path = folder / RECORD_NAME
    if path.exists() and not path.is_file():
        raise OutputPathError(f"{path} is a folder (or another non-file), where mgca keeps its record of what made "
                              "the outputs; remove it, or choose another --out")
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return OutputRecord(dict(data["producer"]), bool(data.get("mixed", False)))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DamagedRecordError(f"{path} cannot be read ({type(err).__name__}); pass --overwrite to redo the "
                                 "outputs in this folder (it replaces the record), or choose another --out") from None


def write_record(folder: Path, record: OutputRecord) -> None:
    text = json.dumps({"format": FORMAT, "producer": record.producer, "mixed": record.mixed}, indent=2, default=str)
    atomic_write_text(folder / RECORD_NAME, text + "\n")


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs, nested keys dotted."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str)
                for line in differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    if old == new:
        return []
    return [f"{prefix.rstrip('.')}: {_short(old)} -> {_short(new)}"]


def _short(value: Any, most: int = 60) -> str:
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text if len(text) <= most else text[:most - 3] + "..."


def check_record(folder: Path, producer: dict[str, Any], overwrite: bool, has_outputs: bool) -> OutputRecord:
    """The record this run works under, checked against the folder's before any work (not written yet).

    Same producer: resume. Another one, or outputs with no record at all (an older mgca): a one-line
    OutputPathError naming the difference, unless `overwrite`, which starts a `mixed` record of the new producer."""
    producer = json.loads(json.dumps(producer, default=str))  # as it reads back: tuples are lists
    try:
        old = read_record(folder)
    except DamagedRecordError:
        if not overwrite:
            raise
        return OutputRecord(producer, mixed=True)  # what made the outputs is unknown: as outputs with no record
    if old is None and not has_outputs:
        return OutputRecord(producer)
    if old is not None and old.producer == producer:
        return old
    if not overwrite:
        what = ("holds outputs with no record of what made them" if old is None else
                "holds outputs made with other settings (" + "; ".join(differences(old.producer, producer)[:3]) + ")")
        raise OutputPathError(f"--out {folder} {what}; pass --overwrite to redo them with these settings, or choose "
                              "another --out")
    return OutputRecord(producer, mixed=True)


@contextlib.contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """One run per output folder at a time: an OS lock (fcntl.flock) on OUT/.mgca-output.lock for the whole run,
    which the kernel drops when the process ends however it ends. A second run is refused in one line naming the
    running one's pid (written into the lock file while it runs, emptied at the end). Where the filesystem has no
    locks (some network mounts) the run goes on unlocked."""
    check_writable_dir(folder, "--out")
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise OutputPathError(f"--out {folder} is in use by another run (pid {holder}); wait for it to finish, "
                                  "or choose another --out") from None
        except OSError:
            yield
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


__all__ = ["LOCK_NAME", "RECORD_NAME", "DamagedRecordError", "OutputRecord", "check_record", "differences",
           "fingerprint", "is_output_folder", "output_lock", "read_record", "write_record"]
