"""Evaluation on clips: per-frame mIoU and the temporal figures (runtime.video_metrics) of one or more temporal
modes, the expensive half of each frame computed once.

    from mgca.video_evaluation import evaluate_video
    scores, seconds = evaluate_video(open_sequences("synthetic-video", root), seg.encode,
                                     lambda enc, state: seg.decode(enc, state=state).labels, seg.temporal_state,
                                     modes=("off", "ema"))

`encode(frame)` runs once per frame (the engine), `decode(encoded, state)` once per frame and mode with that mode's
stream state (`new_state(mode)`, one per clip), and the optical flow between consecutive frames (TC) once per pair.
Torch-free (numpy, OpenCV, tqdm): an exported engine is evaluated in the lean install.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from runtime.video_metrics import VideoMetrics, VideoScore, optical_flow

from .evaluation import settings_line


def evaluate_video(dataset, encode: Callable[[np.ndarray], Any], decode: Callable[[Any, Any], np.ndarray],
                   new_state: Callable[[str], Any], modes: Sequence[str] = ("off",), limit: int | None = None,
                   progress: bool = True, flow: bool = True) -> tuple[dict[str, VideoMetrics], float]:
    """({mode: VideoMetrics}, seconds) over the first `limit` clips (None: all) of a SequenceDataset."""
    spec = dataset.spec
    scores = {mode: VideoScore(spec.num_classes, spec.ignore_index) for mode in modes}
    clips = dataset.clips if limit is None else dataset.clips[:limit]
    start = time.perf_counter()
    bar = tqdm(total=sum(len(c) for c in clips), desc=f"eval {spec.name}", unit="frame", disable=not progress,
               file=sys.stderr)
    for clip in clips:
        states = {mode: new_state(mode) for mode in modes}
        for score in scores.values():
            score.start()
        previous = None
        for sample in clip:
            motion = optical_flow(previous, sample.image) if flow and previous is not None else None
            encoded = encode(sample.image)
            for mode in modes:
                scores[mode].update(np.asarray(decode(encoded, states[mode])), sample.label, motion)
            previous = sample.image
            bar.update(1)
    bar.close()
    return {mode: score.compute(spec.classes) for mode, score in scores.items()}, time.perf_counter() - start


def footage_metrics(frames: Iterable[np.ndarray], encode: Callable[[np.ndarray], Any],
                    decode: Callable[[Any, Any], np.ndarray], new_state: Callable[[str], Any],
                    modes: Sequence[str] = ("off",), limit: int | None = None) -> dict[str, VideoMetrics]:
    """TC and label-free flicker of each mode on unlabelled footage (one clip of RGB frames)."""
    scores = {mode: VideoScore() for mode in modes}
    states = {mode: new_state(mode) for mode in modes}
    previous = None
    for index, frame in enumerate(frames):
        if limit is not None and index >= limit:
            break
        motion = optical_flow(previous, frame) if previous is not None else None
        encoded = encode(frame)
        for mode in modes:
            scores[mode].update(np.asarray(decode(encoded, states[mode])), None, motion)
        previous = frame
    return {mode: score.compute() for mode, score in scores.items()}


def video_report(dataset, info: dict[str, Any], metrics: dict[str, VideoMetrics],
                 seconds: float) -> tuple[str, dict[str, Any]]:
    """The text mgca-eval prints for clips and the record it writes as JSON (fractions in [0, 1])."""
    first = next(iter(metrics.values()))
    lines = [f"dataset: {dataset.spec.name} ({dataset.spec.title}), {first.sequences} clips, {first.frames} frames "
             f"under {dataset.root}",
             f"engine: {info.get('engine')} on {info.get('device')}, " + settings_line(info["inference"]),
             f"{'temporal':<10}{'mIoU':>8}{'VC8':>8}{'VC16':>8}{'flicker':>9}{'TC':>8}"]

    def pct(value: float) -> str:
        return "-" if value != value else f"{100 * value:.2f}"
    for mode, m in metrics.items():
        lines.append(f"{mode:<10}{pct(m.miou):>8}{pct(m.vc8):>8}{pct(m.vc16):>8}{pct(m.flicker):>9}{pct(m.tc):>8}")
    lines.append(f"(percent; {seconds:.1f} s)")
    record = {"dataset": dataset.spec.name, "root": str(dataset.root), "seconds": round(seconds, 3), **info,
              "rows": [{"temporal": mode, **m.to_dict()} for mode, m in metrics.items()]}
    return "\n".join(lines), record


__all__ = ["evaluate_video", "footage_metrics", "video_report"]
