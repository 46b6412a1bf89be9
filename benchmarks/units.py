"""Time adaptive semantic units (assignment, pooling, scoring) per image on CPU torch.

    python benchmarks/units.py [--channels 512] [--classes 150] [--threads N]

Embedding maps up to 128x256 (L = 32768, a 1024x2048 input at output stride 8); M in {16, 36, 121, L}.
M = L is the pixel-unit shortcut (no assignment); "L*" times the literal algorithm with a meta-point on
every pixel, only where the L x L similarity is affordable.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mgca.inference.units import assign_pixels, pool_units, unit_scores
from runtime.contract import meta_point_indices

MAPS = ((28, 28), (56, 56), (56, 84), (128, 256))
GENERIC_MAX_L = 3136  # 56 x 56, the paper's "pixel" row; beyond it L x L is too slow to be worth timing


def timed(fn: Callable[[], object], budget_s: float = 0.4, max_runs: int = 20) -> float:
    """Best-of-N milliseconds of `fn` after one warm-up run (robust to other processes on a shared CPU)."""
    fn()
    runs = []
    start = time.perf_counter()
    while len(runs) < max_runs and (len(runs) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1000)
    return min(runs)


def bench_row(embeddings: torch.Tensor, classes: torch.Tensor, m: int | str) -> tuple[str, str, str, str]:
    """(assign, pool, scores, total) in ms; m="L" is the pixel shortcut, "L*" the literal algorithm."""
    _, height, width = embeddings.shape
    flat = embeddings.reshape(embeddings.shape[0], -1)
    if m == "L":
        total = timed(lambda: unit_scores(embeddings, classes, 0))
        return "-", "-", f"{total:.1f}", f"{total:.1f}"
    count = height * width if m == "L*" else int(m)
    points = torch.tensor(meta_point_indices(height, width, count)) if m != "L*" else torch.arange(count)
    assignment = assign_pixels(flat, points)
    assign = timed(lambda: assign_pixels(flat, points))
    pool = timed(lambda: pool_units(flat, assignment, count))
    units = pool_units(flat, assignment, count)
    score = timed(lambda: (classes @ units.T)[:, assignment].reshape(-1, height, width))
    total = timed(lambda: unit_scores(embeddings, classes, count)) if m != "L*" else assign + pool + score
    return f"{assign:.1f}", f"{pool:.1f}", f"{score:.1f}", f"{total:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    classes = F.normalize(torch.randn(args.classes, args.channels, generator=generator), dim=1)
    print(f"unit assignment, CPU torch {torch.__version__}, {torch.get_num_threads()} threads, C={args.channels}, "
          f"K={args.classes} classes; ms per image (best of up to 20 runs)")
    header = f"{'map':>9} {'L':>6} {'M':>6} {'assign':>8} {'pool':>7} {'scores':>7} {'total':>8}"
    print(header)
    print("-" * len(header))
    started = time.perf_counter()
    with torch.no_grad():
        for height, width in MAPS:
            embeddings = F.normalize(torch.randn(args.channels, height, width, generator=generator), dim=0)
            length = height * width
            choices: list[int | str] = [16, 36, 121, "L"] + (["L*"] if length <= GENERIC_MAX_L else [])
            for m in choices:
                label = f"L={length}" if m == "L" else ("L*" if m == "L*" else str(m))
                print(f"{height}x{width:<6} {length:>6} {label:>6} " + " ".join(
                    f"{v:>{w}}" for v, w in zip(bench_row(embeddings, classes, m), (8, 7, 7, 8), strict=True)),
                    flush=True)
    print(f"(M=L: pixel units, no assignment; L*: a meta-point on every pixel through the generic path; "
          f"{time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
