"""MGCA training objective: object-, region- and pixel-level cross-modal alignment (paper Eq. 3-8).

Everything is derived from the pixel-to-text similarities S[i, j, p] = V[i, p] · T[j] (Eq. 2)
of every image i against every caption j in the batch. S has shape (B, B, L), too large to keep
at the paper's batch of 1024, so it can be computed `chunk_size` images at a time: each chunk is
reduced at once to three (chunk, B) logit matrices and recomputed in the backward pass
(activation checkpointing), so peak memory scales with the chunk, not with B.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import LossConfig


def mask_size(fraction: float, total: int) -> int:
    """ceil(fraction · total), clamped to [1, total].

    Rounding before the ceiling keeps float noise (0.15 * 20 = 3.0000000000000004) from adding a
    pixel; the clamp keeps a region non-empty, since an empty one has no direction for s(·,·).
    """
    return min(max(math.ceil(round(fraction * total, 9)), 1), total)


def object_mask(prob: Tensor, k: float) -> Tensor:
    """Eq. 3: boolean mask of the top ceil(k·L) entries of `prob` along its last dim (L)."""
    idx = prob.topk(mask_size(k, prob.shape[-1]), dim=-1).indices
    return torch.zeros_like(prob, dtype=torch.bool).scatter_(-1, idx, True)


def semi_hard_positive(sim: Tensor, mask: Tensor, object_size: int, k_pix: float) -> Tensor:
    """Eq. 7's S+: per row, the value ranked ceil(k_pix·object_size) (1-based, descending) among
    the `object_size` masked entries of `sim`; k_pix = 0 picks the most similar, 1 the least.

    The size is passed in, not counted from `mask`, to avoid a device sync.
    """
    rank = mask_size(k_pix, object_size)
    inside = sim.masked_fill(~mask, float("-inf"))
    return inside.topk(rank, dim=-1).values[..., -1]


def pairwise_cosine(x: Tensor, y: Tensor) -> Tensor:
    """s(x, y) along the last dim, broadcasting the leading dims."""
    return (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(-1)


def symmetric_info_nce(logits: Tensor) -> Tensor:
    """-1/B Σ_i (log softmax_row(i)[i] + log softmax_col(i)[i]): positives on the diagonal."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)


class PairLogits(NamedTuple):
    """Cosine / scaled similarities of a chunk of images (rows) against all B texts (columns)."""

    obj: Tensor | None  # s(R[i,i], T[j])   (Eq. 5)
    reg: Tensor | None  # s(R[i,j], T[j])   (Eq. 6; column i gives the text side)
    pix: Tensor | None  # S+[i] on the diagonal, S-[i,j] = max_p S[i,j,p]/f elsewhere (Eq. 7)


class MGCALoss(nn.Module):
    """L = L_obj + L_reg + L_pix (Eq. 8) over a batch of pixel embeddings and caption embeddings."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg

    def forward(self, pixels: Tensor, text: Tensor) -> dict[str, Tensor]:
        """pixels V: (B, L, C) decoder pixel embeddings (NOT normalised); text T: (B, C) caption
        embeddings (NOT normalised). Returns {"loss", "obj", "reg", "pix"} as scalars; disabled
        terms are 0 tensors so logging code sees the same keys every step."""
        cfg = self.cfg
        channels = pixels.shape[-1]
        # Reductions run in at least float32 whatever the inputs, so half precision stays stable.
        work_dtype = torch.promote_types(torch.promote_types(pixels.dtype, text.dtype), torch.float32)
        pixels, text = pixels.to(work_dtype), text.to(work_dtype)
        if cfg.normalize:  # an experiment switch (spec): S from unit vectors; off by default, the paper's S is raw dots
            pixels, text = F.normalize(pixels, dim=-1), F.normalize(text, dim=-1)
        zero = pixels.new_zeros(())
        if not (cfg.use_obj or cfg.use_reg or cfg.use_pix):
            return {"loss": zero, "obj": zero, "reg": zero, "pix": zero}

        scale = cfg.scale if cfg.scale is not None else 5.0 * math.sqrt(channels)
        logits = self._all_pair_logits(pixels, text, scale)
        terms = {
            "obj": symmetric_info_nce(logits.obj / cfg.tau) if cfg.use_obj else zero,
            "reg": symmetric_info_nce(logits.reg / cfg.tau) if cfg.use_reg else zero,
            "pix": symmetric_info_nce(logits.pix / cfg.tau) if cfg.use_pix else zero,
        }
        return {"loss": terms["obj"] + terms["reg"] + terms["pix"], **terms}

    def _all_pair_logits(self, pixels: Tensor, text: Tensor, scale: float) -> PairLogits:
        """(B, B) logit matrices, assembled from row chunks of images."""
        batch = pixels.shape[0]
        chunk = self.cfg.chunk_size
        if chunk <= 0 or chunk >= batch:
            return self._chunk_logits(pixels, text, 0, scale)
        needs_grad = torch.is_grad_enabled() and (pixels.requires_grad or text.requires_grad)
        parts = []
        for start in range(0, batch, chunk):
            block = pixels[start:start + chunk]
            if needs_grad:
                # Recompute S for this chunk in backward instead of storing it: that is the point of chunking.
                parts.append(checkpoint(self._chunk_logits, block, text, start, scale, use_reentrant=False))
            else:
                parts.append(self._chunk_logits(block, text, start, scale))
        return PairLogits(*(None if column[0] is None else torch.cat(column) for column in zip(*parts, strict=True)))

    def _chunk_logits(self, block: Tensor, text: Tensor, start: int, scale: float) -> PairLogits:
        """Logit rows for images start .. start+len(block)-1 against all texts."""
        cfg = self.cfg
        rows = torch.arange(block.shape[0], device=block.device)
        diag = rows + start  # column of each row's own caption
        # S[i, j, p] (Eq. 2). Under autocast the matmuls run in low precision; cast back for the reductions.
        sim = torch.matmul(block, text.t()).transpose(1, 2).to(block.dtype)  # (c, B, L)
        sim_diag = sim[rows, diag]  # (c, L)
        positive_mask = object_mask(sim_diag.softmax(dim=-1), cfg.k_obj)  # M[i, i], the text-described object

        obj = reg = pix = None
        if cfg.use_obj or cfg.use_reg:
            prob = sim.softmax(dim=-1)
            mask = object_mask(prob, cfg.k_neg)  # hard negative regions M[i, j], i != j
            mask[rows, diag] = positive_mask
            # Eq. 4, R[i, j] = Σ_p V[i, p] Prob[i, j, p] M[i, j, p], reduced to cosines right away.
            regions = torch.matmul(prob * mask, block).to(block.dtype)  # (c, B, C)
            if cfg.use_reg:
                reg = pairwise_cosine(regions, text)
            if cfg.use_obj:
                obj = (F.normalize(regions[rows, diag], dim=-1) @ F.normalize(text, dim=-1).t()).to(block.dtype)
        if cfg.use_pix:
            object_size = mask_size(cfg.k_obj, sim.shape[-1])
            positive = semi_hard_positive(sim_diag, positive_mask, object_size, cfg.k_pix) / scale
            hardest = sim.max(dim=-1).values / scale
            is_diag = diag.unsqueeze(1) == torch.arange(text.shape[0], device=block.device)
            pix = torch.where(is_diag, positive.unsqueeze(1), hardest)
        return PairLogits(obj, reg, pix)
