"""PAMR, pixel-adaptive mask refinement, as a torch module (runs on the model's device).

The computation, its defaults and its sources are described in `runtime/pamr.py`, the numpy twin
the lean runtime uses; tests/test_pamr.py checks that the two agree. Off by default: the paper's
protocol has no post-processing.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from runtime.pamr import PAMR_DILATIONS, PAMR_ITERATIONS, check_dilations, neighbour_offsets


def _shifted(padded: torch.Tensor, pad: int, offset: tuple[int, int], height: int, width: int) -> torch.Tensor:
    dy, dx = offset
    return padded[..., pad + dy:pad + dy + height, pad + dx:pad + dx + width]


class PAMR(nn.Module):
    """scores (B, K, h, w) refined by image (B, C, H, W) affinities -> (B, K, H, W)."""

    def __init__(self, iterations: int = PAMR_ITERATIONS, dilations: Sequence[int] = PAMR_DILATIONS):
        super().__init__()
        if iterations < 0:
            raise ValueError(f"PAMR iterations must be >= 0, got {iterations}")
        self.iterations = int(iterations)
        self.dilations = check_dilations(dilations)
        self.offsets = neighbour_offsets(self.dilations)
        self.pad = max(self.dilations)

    def extra_repr(self) -> str:
        return f"iterations={self.iterations}, dilations={self.dilations}"

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, [self.pad] * 4, mode="replicate")

    def affinity(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, P, H, W) neighbour weights, a softmax over the P neighbours."""
        height, width = image.shape[-2:]
        padded = self._padded(image)
        patch = [(0, 0)] * len(self.dilations) + self.offsets  # every dilation's 3 x 3 patch, centre included
        values = torch.stack([_shifted(padded, self.pad, o, height, width) for o in patch], dim=2)
        scale = 1e-8 + 0.1 * values.std(dim=2)  # unbiased, as the reference
        logits = torch.stack([(-(image - _shifted(padded, self.pad, o, height, width)).abs() / scale).mean(dim=1)
                              for o in self.offsets], dim=1)
        return torch.softmax(logits, dim=1)

    @torch.no_grad()
    def forward(self, image: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or scores.ndim != 4 or image.shape[0] != scores.shape[0]:
            raise ValueError(
                f"PAMR needs image (B, C, H, W) and scores (B, K, h, w), "
                f"got {tuple(image.shape)} and {tuple(scores.shape)}"
            )
        height, width = image.shape[-2:]
        scores = F.interpolate(scores.to(image.dtype), size=(height, width), mode="bilinear", align_corners=True)
        if self.iterations == 0:
            return scores
        affinity = self.affinity(image)
        for _ in range(self.iterations):
            padded = self._padded(scores)
            refined = torch.zeros_like(scores)
            for p, offset in enumerate(self.offsets):
                refined += affinity[:, p:p + 1] * _shifted(padded, self.pad, offset, height, width)
            scores = refined
        return scores


__all__ = ["PAMR", "PAMR_DILATIONS", "PAMR_ITERATIONS"]
