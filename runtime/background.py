"""Background rules on the stitched score grid, in numpy (docs/inference-contract.md, "Background rules").

VOC21, Context60 and COCO-Object have a "background" class that no text names. The `groupvit` and `tcl`
rules turn the K cosine maps of one image into K + 1 channels (background first) that are upsampled like
the scores and argmax-ed, as GroupViT's and TCL's `encode_decode` outputs go through mmseg's resize and
argmax; the `softmax` rule (mgca's earlier one) thresholds at full resolution in `postprocess.py`.
`mgca.inference.background` is the torch twin; tests/test_background.py checks both against a float64 loop.
"""
from __future__ import annotations

import numpy as np

from .contract import CLIP_LOGIT_SCALE, GROUPVIT_TOP_K, TCL_MASK_BIAS, TCL_MASK_SCALE


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_classes(image_cos: np.ndarray, top_k: int = GROUPVIT_TOP_K) -> np.ndarray:
    """Indices of the image's top-k classes by its image-average cosines (ties: the lower index first)."""
    return np.argsort(-np.asarray(image_cos, dtype=np.float64), kind="stable")[:min(top_k, image_cos.shape[-1])]


def groupvit_scores(cos: np.ndarray, image_cos: np.ndarray, logit_scale: float = CLIP_LOGIT_SCALE,
                    top_k: int = GROUPVIT_TOP_K) -> np.ndarray:
    """GroupViT's per-group score (`group_vit_seg.py`), for every row of `cos` (..., K): p_top * p_all, where
    p_all = softmax(scale cos) over all classes and p_top the same softmax over the image's top-k classes only
    (0 elsewhere). float32 in, float32 out (computed in float32, as the torch twin)."""
    logits = np.asarray(cos, dtype=np.float32) * np.float32(logit_scale)
    keep = np.zeros(logits.shape[-1], dtype=bool)
    keep[top_classes(image_cos, top_k)] = True
    masked = np.where(keep, logits, -np.inf).astype(np.float32)
    return (_softmax(masked) * _softmax(logits)).astype(np.float32)


def tcl_masks(cos: np.ndarray) -> np.ndarray:
    """TCL's soft masks sigmoid(w cos + b) with its fixed w = 10, b = -2.5 (MGCA learns no w, b)."""
    z = np.asarray(cos, dtype=np.float32) * np.float32(TCL_MASK_SCALE) + np.float32(TCL_MASK_BIAS)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def background_channels(scores: np.ndarray, image_cos: np.ndarray, bg_rule: str, value: float) -> np.ndarray:
    """h x w x K cosine scores -> h x w x (K + 1): channel 0 background, then the rule's class maps.

    groupvit: the GroupViT scores; background channel 1 where a cell's best score < min(value, the image's best
    score over its cells) else 0 (scores are <= 1, so it wins exactly there). Cells of one unit share their
    scores, so this is GroupViT's rule per unit (units) or per pixel (pixel units).
    tcl: TCL's masks and a constant channel `value` (0.5; 0.4 with PAMR)."""
    if bg_rule == "groupvit":
        fg = groupvit_scores(scores, image_cos)
        best = fg.max(axis=-1)
        bg = (best < min(float(value), float(best.max()))).astype(np.float32)
    elif bg_rule == "tcl":
        fg = tcl_masks(scores)
        bg = np.full(fg.shape[:-1], value, dtype=np.float32)
    else:
        raise ValueError(f"background_channels handles the groupvit and tcl rules, not {bg_rule!r}")
    return np.ascontiguousarray(np.concatenate([bg[..., None], fg], axis=-1))


__all__ = ["top_classes", "groupvit_scores", "tcl_masks", "background_channels"]
