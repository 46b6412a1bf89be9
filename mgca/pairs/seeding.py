"""Per-sample random streams derived from (seed, epoch, sample identity).

Crops and noun-prompt choices come from these rather than from global RNG state, so a sample
looks the same whichever worker or rank loads it, and a resumed run replays the exact epoch.
"""
from __future__ import annotations

import zlib

import numpy as np


def sample_rng(seed: int, epoch: int, *keys: int) -> np.random.Generator:
    """An independent generator for one sample; `keys` identify it (index, pass, hash...)."""
    return np.random.default_rng([seed % 2**63, epoch, *(k % 2**63 for k in keys)])


def stable_hash(text: str) -> int:
    """A process-independent hash (Python's `hash` of str is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))
