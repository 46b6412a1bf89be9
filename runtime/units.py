"""Adaptive semantic units (docs/inference-contract.md, paper 3.3) in numpy: pixel-to-meta-point assignment with
numpy or FAISS (identical labels, ties to the lowest index), unit pooling and scores. The meta-points
themselves (grid and positions) come from `runtime.contract`.

Why numpy and FAISS give identical labels: both compute float32 cosine similarities whose error is at
most ~C * 2^-24 for unit vectors. A pixel whose best similarity beats the runner-up by more than
`tie_eps(C)` (twice that bound, with margin) has the same, true winner in both. Every other pixel is
settled by one shared exact step: the candidates within `tie_eps` of its best are re-scored in float64,
position-independently, and the highest wins, ties going to the lowest meta-point index.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from .contract import meta_point_indices, uses_pixel_units

try:  # faiss is a dependency of the runtime, but the numpy path keeps working without it
    import faiss  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - exercised only where faiss is absent
    faiss = None


# OpenBLAS runs a GEMM single-threaded when m*n*k <= 65536 * 4 (interface/gemm.c). Its threaded GEMM on
# these skinny shapes was erratic on 2 shared cores (0.2 ms -> 8 ms for 6272x64 @ 64x19), so products are
# cut into row blocks under that size: single-threaded, steady, and concurrent callers still use every core.
_GEMM_SINGLE_THREAD_MNK = 65536 * 4


def matmul_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (L x C) @ b (C x N) as row blocks small enough for a single-threaded BLAS call each."""
    rows = _GEMM_SINGLE_THREAD_MNK // max(1, a.shape[1] * b.shape[1])
    if rows < 8 or a.shape[0] <= rows:  # wide products (hundreds of units): BLAS threading pays off
        return a @ b
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    for start in range(0, a.shape[0], rows):
        np.matmul(a[start:start + rows], b, out=out[start:start + rows])
    return out


def matmul_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (m x k) @ b (k x N) for few rows and a wide b, as column blocks small enough for a single-threaded
    BLAS call each (the score upsampling's row blocks: m ~ 10, k ~ 3, N = W x K)."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    columns = max(1, _GEMM_SINGLE_THREAD_MNK // max(1, a.shape[0] * a.shape[1]))
    for start in range(0, b.shape[1], columns):
        np.matmul(a, b[:, start:start + columns], out=out[:, start:start + columns])
    return out


def tie_eps(channels: int) -> float:
    """Similarity gap below which a pixel's winner is re-checked exactly (>= 2x the float32 error bound)."""
    return 4.0 * channels * 2.0 ** -24


def _refine(x_near: np.ndarray, points: np.ndarray, sims_near: np.ndarray, eps: float) -> np.ndarray:
    """Exact winners for near-tie pixels: float64 scores of every candidate within eps of the float32 best."""
    top = sims_near.max(axis=1, keepdims=True)
    rows, cols = np.nonzero(sims_near >= top - eps)
    exact = np.full(sims_near.shape, -np.inf, dtype=np.float64)
    chunk = max(1, (1 << 22) // max(points.shape[1], 1))
    for start in range(0, rows.size, chunk):
        r, c = rows[start:start + chunk], cols[start:start + chunk]
        prod = x_near[r].astype(np.float64) * points[c].astype(np.float64)
        exact[r, c] = prod.sum(axis=1)  # pairwise sum of one row: the same bits wherever the pair sits
    return exact.argmax(axis=1)  # first maximum = lowest index on exact ties


def assign_numpy(x: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Index of the most similar meta-point for every row of x (L x C) among points (M x C)."""
    count = points.shape[0]
    if count == 1:
        return np.zeros(x.shape[0], dtype=np.int64)
    sims = matmul_rows(x, np.ascontiguousarray(points.T))
    best = sims.argmax(axis=1)
    rows = np.arange(x.shape[0])
    top1 = sims[rows, best].copy()
    sims[rows, best] = -np.inf
    near = np.flatnonzero(top1 - sims.max(axis=1) <= tie_eps(x.shape[1]))
    if near.size:
        sims[rows[near], best[near]] = top1[near]
        best[near] = _refine(x[near], points, sims[near], tie_eps(x.shape[1]))
    return best


def faiss_gpu_available() -> bool:
    """True when the installed faiss is a GPU build and sees a CUDA device."""
    if faiss is None or not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        return faiss.get_num_gpus() > 0
    except Exception:  # a broken CUDA setup means no GPU
        return False


@contextmanager
def omp_thread_cap(num_threads: int | None) -> Iterator[None]:
    """Cap the OpenMP team of FAISS (and of the OpenMP OpenBLAS it ships) for parallel regions that the
    *calling* thread starts, then restore it. OpenMP keeps nthreads-var per thread (libgomp gives a thread
    its own copy on the first write), so other threads, other Segmenters and later calls see no change."""
    if num_threads is None or faiss is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(num_threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def assign_faiss(x: np.ndarray, points: np.ndarray, gpu: bool = False, num_threads: int | None = None,
                 gpu_resources=None) -> np.ndarray:
    """Same labels as `assign_numpy`, from a FAISS inner-product search for the top 2 meta-points.

    num_threads caps FAISS' OpenMP threads for this call only; gpu_resources lets a caller reuse its
    (per-thread) StandardGpuResources, else a fresh one is made for the call."""
    if faiss is None:
        raise ImportError("faiss is not installed; pip install faiss-cpu (or use assignment='numpy')")
    count = points.shape[0]
    if count == 1:
        return np.zeros(x.shape[0], dtype=np.int64)
    if gpu:
        index = faiss.GpuIndexFlatIP(gpu_resources or faiss.StandardGpuResources(), points.shape[1])
    else:
        index = faiss.IndexFlatIP(points.shape[1])
    with omp_thread_cap(num_threads):
        index.add(np.ascontiguousarray(points, dtype=np.float32))
        dist, ids = index.search(np.ascontiguousarray(x, dtype=np.float32), 2)
    best = ids[:, 0].astype(np.int64)
    eps = tie_eps(x.shape[1])
    near = np.flatnonzero(dist[:, 0] - dist[:, 1] <= eps)
    if near.size:
        x_near = x[near]
        best[near] = _refine(x_near, points, x_near @ points.T, eps)
    return best


class FaissAssigner:
    """`assign_faiss` bound to one owner's settings: its thread cap and its own per-thread GPU resources
    (GpuResources are not shared between threads), so nothing is cached at module level."""

    def __init__(self, gpu: bool = False, num_threads: int | None = None):
        self.gpu, self.num_threads = gpu, num_threads
        self._local = threading.local()

    def __call__(self, x: np.ndarray, points: np.ndarray) -> np.ndarray:
        resources = None
        if self.gpu:
            resources = getattr(self._local, "resources", None)
            if resources is None:
                resources = self._local.resources = faiss.StandardGpuResources()
        return assign_faiss(x, points, self.gpu, self.num_threads, resources)


ASSIGNMENT_METHODS = ("numpy", "faiss", "faiss-gpu")


def make_assigner(method: str, num_threads: int | None = None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The assignment callable for "numpy", "faiss" or "faiss-gpu", owned by the caller (no shared state)."""
    if method == "numpy":
        return assign_numpy
    if method in ("faiss", "faiss-gpu"):
        return FaissAssigner(gpu=method == "faiss-gpu", num_threads=num_threads)
    raise ValueError(f"unknown assignment {method!r}; choose one of {ASSIGNMENT_METHODS}")


def unit_embeddings(x: np.ndarray, assignment: np.ndarray, count: int) -> np.ndarray:
    """Mean of each unit's pixel embeddings, L2-normalised (M x C), as a one-hot (M x L) product.

    The product is a numpy einsum, not a BLAS matmul: OpenBLAS's threaded sgemm on this tall-K shape
    (K = L pixels) took 55-120 ms on 2 loaded cores against 2.5-11 ms for the single-threaded einsum.
    """
    onehot = np.zeros((count, x.shape[0]), dtype=np.float32)
    onehot[assignment, np.arange(x.shape[0])] = 1.0
    sums = np.einsum("ml,lc->mc", onehot, x, optimize=False)
    counts = onehot.sum(axis=1, keepdims=True)
    means = sums / np.maximum(counts, 1.0)
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), np.float32(1e-12))


def pool_units(x: np.ndarray, height: int, width: int, units: int, assign: Callable,
               points: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(unit embeddings M x C, per-pixel unit index L) for an h x w map flattened to x (L x C),
    or None when every pixel is its own unit (units == 0 or units >= L). `points`: M x C meta-points in place of
    the grid's pixels (a stream's carried units, runtime.temporal)."""
    if uses_pixel_units(units, height, width):
        return None
    if points is None:
        points = np.ascontiguousarray(x[np.asarray(meta_point_indices(height, width, units), dtype=np.int64)])
    assignment = assign(x, points)
    return unit_embeddings(x, assignment, points.shape[0]), assignment


def pixel_scores(x: np.ndarray, height: int, width: int, units: int, text: np.ndarray, assign: Callable,
                 pooled: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Cosine scores h x w x K of a normalised map x (L x C) against class embeddings text (K x C); `pooled`: the
    map's `pool_units` when already made."""
    pooled = pooled if pooled is not None else pool_units(x, height, width, units, assign)
    if pooled is None:
        scores = matmul_rows(x, np.ascontiguousarray(text.T))
    else:
        unit_emb, assignment = pooled
        scores = (unit_emb @ text.T)[assignment]
    return scores.reshape(height, width, text.shape[0])


def measure_assigners(pixels: int, channels: int, units: int, methods: list[str], repeats: int = 2,
                      seed: int = 0, num_threads: int | None = None) -> dict[str, float]:
    """Median seconds per assignment for each method on random unit vectors of the given size."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((pixels, channels), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    points = np.ascontiguousarray(x[:: max(1, pixels // max(units, 1))][:units])
    timings = {}
    for name in methods:
        fn = make_assigner(name, num_threads)
        fn(x, points)  # warm-up (FAISS/BLAS thread pools, GPU context)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x, points)
            samples.append(time.perf_counter() - start)
        timings[name] = float(np.median(samples))
    return timings


__all__ = ["matmul_rows", "matmul_columns", "tie_eps", "assign_numpy", "assign_faiss", "faiss_gpu_available",
           "omp_thread_cap", "FaissAssigner", "ASSIGNMENT_METHODS", "make_assigner", "unit_embeddings", "pool_units",
           "pixel_scores", "measure_assigners"]
