"""One frame of a stream, as every video source hands it on and every stream consumer reads it.

The seam between the sources (`runtime.video_sources`: files, cameras, URLs, frame folders, iterables) and the
stream pipeline (`runtime.stream`): both import this module and nothing of each other's internals.
Plain numpy, no torch, importable from everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """A decoded frame.

    index: the frame's position in its source, 0-based; frames a live policy drops still use up their index, so
        gaps show what was dropped.
    timestamp: seconds on the source's own clock (a file's position, a camera's capture time), for outputs.
    image: H x W x 3 uint8 in RGB order.
    captured: `time.monotonic()` when the frame was read: the start of its capture-to-result latency.
    """

    index: int
    timestamp: float
    image: np.ndarray
    captured: float


__all__ = ["Frame"]
