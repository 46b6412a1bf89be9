"""Where PAMR runs, and what it costs: mgca's stitched score grid (TCL's resolution) against NACLIP's full resolution.

    python benchmarks/pamr_placement.py          # a VOC-sized 375 x 500 image, 21 classes, 10 iterations (~1 min)
    python benchmarks/pamr_placement.py --size 1024x2048 --classes 19

Both placements timed side by side in one run, numpy (runtime.pamr, what runtime.Segmenter runs) and PyTorch
(mgca.inference.pamr, what SegmentationPredictor runs), TCL's dilations. The score values do not change the
cost; the image is random.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgca.inference.pamr import PAMR
from runtime.contract import DEFAULT_SETTINGS, PAMR_DILATIONS, resized_shape, settings_layout
from runtime.pamr import PAMR_ITERATIONS, pamr


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="375x500", help="original image HxW (default a VOC image, 375x500)")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--iterations", type=int, default=PAMR_ITERATIONS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    resized = resized_shape(height, width, DEFAULT_SETTINGS.short_side, DEFAULT_SETTINGS.long_side)
    grid = settings_layout(*resized, DEFAULT_SETTINGS, 8).grid_hw
    rng = np.random.default_rng(0)
    rows = []
    places = (("stitched grid (mgca, TCL's resolution)", grid), ("full resolution (NACLIP)", (height, width)))
    for name, (h, w) in places:
        image = rng.normal(size=(h, w, 3)).astype(np.float32)
        scores = rng.normal(size=(h, w, args.classes)).astype(np.float32)
        seconds_np = best_of(lambda image=image, scores=scores: pamr(image, scores, args.iterations, PAMR_DILATIONS),
                             args.repeats)
        module = PAMR(args.iterations, PAMR_DILATIONS)
        timage = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
        tscores = torch.from_numpy(scores).permute(2, 0, 1)[None].contiguous()
        seconds_torch = best_of(lambda m=module, i=timage, s=tscores: m(i, s), args.repeats)
        rows.append((name, f"{h}x{w}", seconds_np, seconds_torch))
    print(f"PAMR, {args.iterations} iterations, dilations {PAMR_DILATIONS}, {args.classes} classes, image {height}x"
          f"{width} (resized {resized[0]}x{resized[1]}), best of {args.repeats}, "
          f"torch threads {torch.get_num_threads()}")
    print("| where | map | numpy ms | x grid | PyTorch ms | x grid |\n|---|---|---|---|---|---|")
    for name, size, seconds_np, seconds_torch in rows:
        print(f"| {name} | {size} | {1e3 * seconds_np:.1f} | {seconds_np / rows[0][2]:.1f} | "
              f"{1e3 * seconds_torch:.1f} | {seconds_torch / rows[0][3]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
