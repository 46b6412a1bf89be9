"""Parity of an exported graph with `MGCA.pixel_embeddings`: same windows through both, compare.

Figures (all over every pixel of every window):
* `max_abs_err`: max |onnx - torch| over all embedding values;
* `rel_err`: ||onnx - torch||_F / ||torch||_F, the relative error the fp32 gate uses (embeddings
  are unit vectors, so this is also the RMS per-pixel distance / 1);
* `min_cosine`: the worst per-pixel cosine between the two embeddings;
* `label_agreement`: the fraction of pixels whose argmax over a set of class embeddings (the
  vocabulary's text embeddings when known, else random unit vectors) is the same.

fp32 must reach `rel_err <= 1e-4` or the export fails (ParityError); int8 is only reported.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .onnx_export import INPUT_NAME, OUTPUT_NAME

FP32_REL_TOL = 1e-4


class ParityError(RuntimeError):
    """The exported graph does not compute the PyTorch model's function within tolerance."""


@dataclass
class ParityReport:
    precision: str
    num_windows: int
    max_abs_err: float
    rel_err: float
    min_cosine: float
    label_agreement: float
    num_classes: int
    tolerance: float | None = None
    per_set: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.tolerance is None or self.rel_err <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        return out

    def summary(self) -> str:
        gate = "" if self.tolerance is None else f" (limit {self.tolerance:g}: {'ok' if self.passed else 'FAILED'})"
        return (f"{self.precision} parity over {self.num_windows} windows: max abs err {self.max_abs_err:.3g}, "
                f"rel err {self.rel_err:.3g}{gate}, min cosine {self.min_cosine:.6f}, "
                f"label agreement {self.label_agreement:.4%} ({self.num_classes} classes)")


def ort_session(path: str | Path, threads: int = 0, spinning: bool = False):
    """A CPU onnxruntime session with full graph optimisation and, by default, no thread spinning
    (runtime.OrtEngine's settings)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_session(session, windows: np.ndarray, batch_size: int = 4) -> np.ndarray:
    outs = [session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(windows[i:i + batch_size])})[0]
            for i in range(0, len(windows), batch_size)]
    return np.concatenate(outs)


@torch.no_grad()
def run_torch(model: torch.nn.Module, windows: np.ndarray, batch_size: int = 4) -> np.ndarray:
    outs = [model.pixel_embeddings(torch.from_numpy(np.ascontiguousarray(windows[i:i + batch_size]))).float().numpy()
            for i in range(0, len(windows), batch_size)]
    return np.concatenate(outs)


def random_class_embeddings(num_classes: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((num_classes, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def labels_of(embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """N x C x h x w embeddings, K x C classes -> N x h x w argmax labels."""
    scores = np.einsum("nchw,kc->nkhw", embeddings, class_embeddings, optimize=True)
    return scores.argmax(axis=1)


def compare(test: np.ndarray, reference: np.ndarray, class_embeddings: np.ndarray) -> dict[str, float]:
    """Parity figures of `test` against `reference` (both N x C x h x w)."""
    test = test.astype(np.float64)
    reference = reference.astype(np.float64)
    diff = test - reference
    cos = (test * reference).sum(axis=1) / np.maximum(np.linalg.norm(test, axis=1) * np.linalg.norm(reference, axis=1), 1e-12)
    agree = labels_of(test.astype(np.float32), class_embeddings) == labels_of(reference.astype(np.float32), class_embeddings)
    return {
        "max_abs_err": float(np.abs(diff).max()),
        "rel_err": float(np.linalg.norm(diff) / max(np.linalg.norm(reference), 1e-30)),
        "min_cosine": float(cos.min()),
        "label_agreement": float(agree.mean()),
    }


def parity_windows(preprocess, images: Sequence[np.ndarray] | None, num_random: int = 2, num_synthetic: int = 2,
                   max_windows: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """The named window sets to compare on: uniform-noise images, and real images (the given ones,
    else synthetic photo-like ones), all through the inference preprocessing."""
    from calibration.reader import synthetic_images, windows_of

    rng = np.random.default_rng(seed)
    win = preprocess.window
    noise = [rng.integers(0, 256, (win, win, 3), dtype=np.uint8) for _ in range(num_random)]
    sets = {"random": windows_of(noise, preprocess, max_windows)}
    if images:
        sets["images"] = windows_of(images, preprocess, max_windows)
    elif num_synthetic:
        sets["synthetic"] = windows_of(synthetic_images(num_synthetic, (win * 3 // 4, win), seed=seed), preprocess, max_windows)
    return sets


def check_parity(model: torch.nn.Module, onnx_path: str | Path, window_sets: dict[str, np.ndarray],
                 class_embeddings: np.ndarray | None = None, precision: str = "fp32",
                 tolerance: float | None = FP32_REL_TOL, batch_size: int = 4, session=None,
                 reference: dict[str, np.ndarray] | None = None) -> ParityReport:
    """Run `onnx_path` in onnxruntime (CPU) and `model` in PyTorch on every window set and compare.

    `reference` (torch outputs per set) can be passed to avoid recomputing them for a second graph.
    Raises ParityError when `tolerance` is set and the relative error exceeds it.
    """
    session = session or ort_session(onnx_path)
    if class_embeddings is None:
        class_embeddings = random_class_embeddings(20, int(model.embed_dim))
    class_embeddings = np.asarray(class_embeddings, dtype=np.float32)
    tests, refs, per_set = [], [], {}
    for name, windows in window_sets.items():
        ref = reference[name] if reference and name in reference else run_torch(model, windows, batch_size)
        out = run_session(session, windows, batch_size)
        if out.shape != ref.shape:
            raise ParityError(f"{onnx_path}: onnxruntime output {out.shape} differs in shape from PyTorch's {ref.shape}")
        if not np.isfinite(out).all():
            raise ParityError(f"{onnx_path}: onnxruntime output has non-finite values on the {name!r} windows")
        per_set[name] = compare(out, ref, class_embeddings)
        tests.append(out)
        refs.append(ref)
    overall = compare(np.concatenate(tests), np.concatenate(refs), class_embeddings)
    report = ParityReport(precision=precision, num_windows=sum(len(w) for w in window_sets.values()),
                          num_classes=len(class_embeddings), tolerance=tolerance, per_set=per_set, **overall)
    if not report.passed:
        raise ParityError(f"{Path(onnx_path).name} does not match the PyTorch model: {report.summary()}; "
                          "the export is wrong (do not ship it): check the torch/onnxruntime versions and re-export")
    return report


__all__ = ["ParityError", "ParityReport", "check_parity", "compare", "labels_of", "ort_session", "parity_windows",
           "random_class_embeddings", "run_session", "run_torch", "FP32_REL_TOL"]
