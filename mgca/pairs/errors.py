"""Data errors and skip bookkeeping.

A long training run must never die on one bad sample, but silently dropping data hides broken
shards; so every skip is counted (per process) and the first few of each kind are reported.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from runtime.errors import MgcaError


class DataError(MgcaError, ValueError):
    """A data source is missing or unusable; the message says which and how to fix it."""


class CorruptImage(DataError):
    """An image file or tar member could not be decoded (truncated, not an image, ...)."""


SKIP_KINDS = ("corrupt_images", "empty_captions", "missing_images")


@dataclass
class SkipCounter:
    """Samples skipped by one dataset in this process, by reason.

    Counts live in the process that read the sample: with `num_workers > 0` each DataLoader
    worker counts its own (the warnings it prints still show up), with 0 the dataset's counter
    is exact.
    """

    corrupt_images: int = 0
    empty_captions: int = 0
    missing_images: int = 0
    warn_limit: int = 5  # stderr lines per kind, so a bad shard does not flood the log
    name: str = "mgca.pairs"
    _warned: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def add(self, kind: str, detail: str = "", count: int = 1) -> None:
        if kind not in SKIP_KINDS:
            raise KeyError(f"unknown skip kind {kind!r}; one of {SKIP_KINDS}")
        setattr(self, kind, getattr(self, kind) + count)
        shown = self._warned.get(kind, 0)
        if detail and shown < self.warn_limit:
            self._warned[kind] = shown + 1
            more = " (further ones are counted, not shown)" if shown + 1 == self.warn_limit else ""
            print(f"{self.name}: skipping {kind.replace('_', ' ')[:-1]}: {detail}{more}", file=sys.stderr, flush=True)

    @property
    def total(self) -> int:
        return sum(getattr(self, kind) for kind in SKIP_KINDS)

    def as_dict(self) -> dict[str, int]:
        return {kind: getattr(self, kind) for kind in SKIP_KINDS}
