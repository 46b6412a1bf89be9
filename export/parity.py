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

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.engines import OrtEngine, in_batches
from runtime.errors import MgcaError
from runtime.postprocess import pixel_cosines, window_labels

FP32_REL_TOL = 1e-4


class ParityError(MgcaError, RuntimeError):
    """The exported graph does not compute the PyTorch model's function within tolerance (exit status 1)."""

    exit_code = 1


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


@torch.no_grad()
def run_torch(model: torch.nn.Module, windows: np.ndarray, batch_size: int = 4) -> np.ndarray:
    """`model.pixel_embeddings` of `windows`, `batch_size` at a time, as the engine runs them."""
    def run(batch: np.ndarray) -> np.ndarray:
        return model.pixel_embeddings(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()

    return in_batches(run, windows, batch_size)


def random_class_embeddings(num_classes: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((num_classes, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def compare(test: np.ndarray, reference: np.ndarray, class_embeddings: np.ndarray) -> dict[str, float]:
    """Parity figures of `test` against `reference` (both N x C x h x w)."""
    test = test.astype(np.float64)
    reference = reference.astype(np.float64)
    diff = test - reference
    cos = pixel_cosines(test, reference)
    test_labels = window_labels(test.astype(np.float32), class_embeddings)
    agree = test_labels == window_labels(reference.astype(np.float32), class_embeddings)
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
        sets["synthetic"] = windows_of(synthetic_images(num_synthetic, (win * 3 // 4, win), seed=seed), preprocess,
                                       max_windows)
    return sets


def check_parity(model: torch.nn.Module, onnx_path: str | Path, window_sets: dict[str, np.ndarray],
                 class_embeddings: np.ndarray | None = None, precision: str = "fp32",
                 tolerance: float | None = FP32_REL_TOL, batch_size: int = 4, engine: OrtEngine | None = None,
                 reference: dict[str, np.ndarray] | None = None) -> ParityReport:
    """Run `onnx_path` in onnxruntime (CPU, the runtime's `OrtEngine`) and `model` in PyTorch on every window set
    and compare.

    `engine` (an OrtEngine of `onnx_path`) and `reference` (torch outputs per set) can be passed to avoid
    building or recomputing them for a second graph.
    Raises ParityError when `tolerance` is set and the relative error exceeds it.
    """
    engine = engine or OrtEngine(onnx_path, device="cpu")
    if class_embeddings is None:
        class_embeddings = random_class_embeddings(20, int(model.embed_dim))
    class_embeddings = np.asarray(class_embeddings, dtype=np.float32)
    tests, refs, per_set = [], [], {}
    for name, windows in window_sets.items():
        ref = reference[name] if reference and name in reference else run_torch(model, windows, batch_size)
        out = engine.run(windows, batch_size)
        if out.shape != ref.shape:
            raise ParityError(f"{onnx_path}: onnxruntime output {out.shape} differs in shape from PyTorch's "
                              f"{ref.shape}")
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


__all__ = ["ParityError", "ParityReport", "check_parity", "compare", "parity_windows", "random_class_embeddings",
           "run_torch", "FP32_REL_TOL"]
