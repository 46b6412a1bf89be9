"""Background rules on the stitched score grid, in PyTorch: the twin of `runtime.background` (its docstring and
docs/inference-contract.md, "Background rules", describe them); maps are class-first here, (K, h, w)."""
from __future__ import annotations

import torch

from runtime.contract import CLIP_LOGIT_SCALE, GROUPVIT_TOP_K, TCL_MASK_BIAS, TCL_MASK_SCALE


def top_classes(image_cos: torch.Tensor, top_k: int = GROUPVIT_TOP_K) -> torch.Tensor:
    """Indices of the image's top-k classes by its image-average cosines (ties: the lower index first)."""
    order = torch.sort(image_cos.double(), descending=True, stable=True).indices
    return order[:min(top_k, image_cos.shape[0])]


def groupvit_scores(cos: torch.Tensor, image_cos: torch.Tensor, logit_scale: float = CLIP_LOGIT_SCALE,
                    top_k: int = GROUPVIT_TOP_K) -> torch.Tensor:
    """(K, ...) cosines -> GroupViT's scores p_top * p_all along dim 0 (float32)."""
    logits = cos.float() * logit_scale
    keep = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    keep[top_classes(image_cos, top_k).to(logits.device)] = True
    shape = (-1,) + (1,) * (logits.ndim - 1)
    masked = logits.masked_fill(~keep.view(shape), float("-inf"))
    return torch.softmax(masked, dim=0) * torch.softmax(logits, dim=0)


def tcl_masks(cos: torch.Tensor) -> torch.Tensor:
    """TCL's soft masks sigmoid(10 cos - 2.5)."""
    return torch.sigmoid(cos.float() * TCL_MASK_SCALE + TCL_MASK_BIAS)


def background_channels(scores: torch.Tensor, image_cos: torch.Tensor, bg_rule: str, value: float) -> torch.Tensor:
    """(K, h, w) cosines -> (K + 1, h, w): channel 0 background, then the rule's class maps (groupvit, tcl)."""
    if bg_rule == "groupvit":
        fg = groupvit_scores(scores, image_cos)
        best = fg.max(dim=0).values
        bg = (best < min(float(value), float(best.max()))).to(fg.dtype)
    elif bg_rule == "tcl":
        fg = tcl_masks(scores)
        bg = torch.full(fg.shape[1:], float(value), dtype=fg.dtype, device=fg.device)
    else:
        raise ValueError(f"background_channels handles the groupvit and tcl rules, not {bg_rule!r}")
    return torch.cat([bg[None], fg], dim=0)


__all__ = ["top_classes", "groupvit_scores", "tcl_masks", "background_channels"]
