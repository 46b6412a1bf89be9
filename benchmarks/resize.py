"""Time the runtime's last step, grid scores -> input-resolution labels, against OpenCV's resize.

    python benchmarks/resize.py [--threads 1] [--quick]

The contract upsamples the stitched h x w x K scores bilinearly to the grid's pixel size (h os x w os), crops
it to the resized image (or extends it by its edge rows) and resizes bilinearly to the input size, then takes
the argmax over classes. Two implementations, timed side by
side on the same scores:

* "cv2 chunks": two `cv2.resize` calls per chunk of at most 128 channels (OpenCV 5 takes no more per call),
  the full H x W x K stack, then argmax (what runtime/postprocess.py did before, with the chunking added);
* "separable": runtime.postprocess.scores_to_labels: per axis one matrix of bilinear weights (the three steps
  composed), each row block reading only the 2-4 grid cells it needs, labelled block by block.

Columns: best-of-N milliseconds, the ratio, the share of pixels whose label differs, and each one's largest
score error against a float64 evaluation of the three steps (float32 rounding only).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

CV_MAX_CHANNELS = 128
# name: (input H x W, classes), at the paper's short side 448 and output stride 16
CASES = {"ADE20K 512x683": ((512, 683), (150,)), "COCO-Stuff 480x640": ((480, 640), (171,)),
         "Cityscapes 1024x2048": ((1024, 2048), (19, 150)), "1,000 classes 256x341": ((256, 341), (1000,)),
         "small 96x128": ((96, 128), (19, 150, 1000))}
QUICK = ("ADE20K 512x683", "1,000 classes 256x341", "small 96x128")


def timed(fn: Callable[[], object], budget_s: float = 1.0, max_runs: int = 10) -> float:
    """Best-of-N milliseconds after one warm-up run (robust to other processes on a shared CPU)."""
    fn()
    runs: list[float] = []
    start = time.perf_counter()
    while len(runs) < max_runs and (len(runs) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1000)
    return min(runs)


def cv2_resize(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    parts = []
    for start in range(0, maps.shape[2], CV_MAX_CHANNELS):
        part = cv2.resize(np.ascontiguousarray(maps[:, :, start:start + CV_MAX_CHANNELS]), (width, height),
                          interpolation=cv2.INTER_LINEAR)
        parts.append(part[:, :, None] if part.ndim == 2 else part)
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)


def cv2_scores(scores: np.ndarray, prepared, output_stride: int) -> np.ndarray:
    (grid_h, grid_w), (resized_h, resized_w) = prepared.grid_hw, prepared.resized_hw
    up = cv2_resize(scores, grid_h * output_stride, grid_w * output_stride)[:resized_h, :resized_w]
    up = np.pad(up, ((0, resized_h - up.shape[0]), (0, resized_w - up.shape[1]), (0, 0)), mode="edge")
    return cv2_resize(up, *prepared.original_hw)


def float64_scores(scores: np.ndarray, prepared, output_stride: int) -> np.ndarray:
    from runtime.postprocess import bilinear_weights

    def axis(index: int) -> np.ndarray:
        grid, resized, original = scores.shape[index], prepared.resized_hw[index], prepared.original_hw[index]
        up = bilinear_weights(grid * output_stride, grid)[:resized]
        up = np.concatenate([up, np.repeat(up[-1:], resized - up.shape[0], axis=0)])
        return bilinear_weights(original, resized) @ up

    return np.einsum("Hh,hwk,Ww->HWk", axis(0), scores.astype(np.float64), axis(1), optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="OpenCV and BLAS threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="only " + ", ".join(QUICK))
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy's BLAS starts its pool
    import cv2

    from runtime.contract import InferenceSettings
    from runtime.postprocess import scores_to_labels, upsampled_tiles
    from runtime.preprocess import prepare

    cv2.setNumThreads(args.threads)
    settings = InferenceSettings()  # short side 448, windows 448/224
    os_ = 16
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.2f}, OpenCV {cv2.__version__}, "
          f"numpy {np.__version__}")
    header = (f"{'input':<22} {'K':>5} {'cv2 chunks ms':>14} {'separable ms':>13} {'ratio':>7} {'labels differ':>14} "
              f"{'cv2 err':>8} {'sep err':>8}")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for name, ((height, width), class_counts) in CASES.items():
        if args.quick and name not in QUICK:
            continue
        prepared = prepare(np.zeros((height, width, 3), np.uint8), settings, os_, np.zeros(3, np.float32),
                           np.ones(3, np.float32))
        for classes in class_counts:
            scores = rng.uniform(-1, 1, (*prepared.grid_hw, classes)).astype(np.float32)
            t_cv2 = timed(lambda s=scores, p=prepared: cv2_scores(s, p, os_).argmax(axis=2))
            t_sep = timed(lambda s=scores, p=prepared: scores_to_labels(s, p, output_stride=os_))
            ours = scores_to_labels(scores, prepared, output_stride=os_)[0]
            differ = float((cv2_scores(scores, prepared, os_).argmax(axis=2) != ours).mean())
            errors = ["-", "-"]
            if height * width * classes <= 60e6:
                exact = float64_scores(scores, prepared, os_)
                separable = np.empty((height, width, classes), dtype=np.float32)
                for y0, y1, x0, x1, tile in upsampled_tiles(scores, prepared, os_):
                    separable[y0:y1, x0:x1] = tile
                errors = [f"{np.abs(s - exact).max():.1e}" for s in (cv2_scores(scores, prepared, os_), separable)]
            print(f"{name:<22} {classes:>5} {t_cv2:>14.1f} {t_sep:>13.1f} {t_cv2 / t_sep:>6.2f}x {differ:>14.2e} "
                  f"{errors[0]:>8} {errors[1]:>8}", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}; ratio = cv2 chunks / separable (> 1: separable faster)")


if __name__ == "__main__":
    main()
