"""`SegmentationPredictor`: image in, label map out (set the vocabulary once, predict many images).

Follows docs/inference-contract.md step by step; runtime/ implements the same page with numpy.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from runtime.contract import CLIP_LOGIT_SCALE
from runtime.text_cache import check_class_names, check_distinct_embeddings

from ..device import resolve_device
from ..prompts import get_templates, template_average
from .background import background_channels
from .config import InferenceConfig
from .pamr import PAMR
from .temporal import TorchTemporalState, carried_units, smooth_scores
from .units import Units, image_units, unit_embedding_map, unit_scores
from .windows import Preprocessed, crop_windows, grid_image, preprocess, stitch


def upsample_scores(scores: torch.Tensor, pre: Preprocessed) -> torch.Tensor:
    """(K, gh, gw) grid maps -> (K, H, W): bilinear to the grid's pixel size, cropped to the resized image or
    extended by its edge rows/columns (< os pixels), bilinear to the original."""
    (grid_h, grid_w), os_ = pre.grid_size, pre.output_stride
    full = F.interpolate(scores[None], size=(grid_h * os_, grid_w * os_), mode="bilinear", align_corners=False)
    full = full[:, :, :pre.resized_size[0], :pre.resized_size[1]]
    pad_h, pad_w = pre.resized_size[0] - full.shape[2], pre.resized_size[1] - full.shape[3]
    if pad_h or pad_w:
        full = F.pad(full, (0, pad_w, 0, pad_h), mode="replicate")
    if pre.resized_size != pre.original_size:
        full = F.interpolate(full, size=pre.original_size, mode="bilinear", align_corners=False)
    return full[0]


def labels_from_scores(scores: torch.Tensor, background_threshold: float | None = None,
                       logit_scale: float = CLIP_LOGIT_SCALE) -> torch.Tensor:
    """(K, H, W) -> (H, W) labels; with a threshold (the `softmax` background rule), 0 is background and the K
    classes become 1..K (a pixel is background when its best softmax(scores * logit_scale) probability is below it)."""
    if background_threshold is None:
        return scores.max(dim=0).indices  # same labels as argmax(dim=0) (first maximum), 2-3x faster on CPU
    probs = torch.softmax(scores * logit_scale, dim=0)
    best, index = probs.max(dim=0)
    return torch.where(best < background_threshold, torch.zeros_like(index), index + 1)


class SegmentationPredictor:
    """A model plus an InferenceConfig; `set_classes` once, then `predict(image)` per image."""

    def __init__(self, model: torch.nn.Module, config: InferenceConfig | None = None,
                 device: str | torch.device = "cpu"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        backbone = model.backbone
        self.config = (config or InferenceConfig()).validate(model.output_stride, backbone.patch_size)
        self.output_stride = int(model.output_stride)
        self.mean, self.std = tuple(backbone.mean), tuple(backbone.std)
        self.class_names: tuple[str, ...] = ()
        self.class_embeddings: torch.Tensor | None = None
        self._text_cache: dict[tuple, torch.Tensor] = {}
        self.pamr = PAMR(self.config.pamr, self.config.pamr_dilations) if self.config.pamr else None

    @torch.no_grad()
    def set_classes(self, class_names: Sequence[str], prompts: Sequence[str | None] | None = None) -> None:
        """Embed the vocabulary with the configured templates, averaged as `mgca.prompts.template_average` says for
        the set (cached per vocabulary); `prompts[k]`, when given, is class k's own text instead of the templates."""
        names = class_names if isinstance(class_names, (str, bytes)) else tuple(class_names)
        check_class_names(names, "class names")  # a list of distinct, non-empty names (not a plain string)
        if not names or any(not isinstance(n, str) for n in names):
            raise ValueError(f"class names must be a non-empty list of non-empty strings, got {list(names)!r}")
        prompts = tuple(prompts) if prompts is not None else None
        key = (names, prompts, self.config.templates)
        if key not in self._text_cache:
            templates, average = get_templates(self.config.templates), template_average(self.config.templates)
            self.set_class_embeddings(self.model.backbone.class_embeddings(names, templates, average=average,
                                                                           prompts=prompts), names)
            self._text_cache[key] = self.class_embeddings
        self.class_embeddings, self.class_names = self._text_cache[key], names

    def set_class_embeddings(self, embeddings: torch.Tensor, class_names: Sequence[str]) -> None:
        """Use precomputed (K, C) embeddings, e.g. from a text cache (re-normalised, moved to the device)."""
        if embeddings.ndim != 2 or embeddings.shape[0] != len(class_names):
            raise ValueError(f"embeddings {tuple(embeddings.shape)} do not match {len(class_names)} class names")
        check_distinct_embeddings(embeddings.detach().float().cpu().numpy(), tuple(class_names), "class names")
        self.class_embeddings = F.normalize(embeddings.float(), dim=-1).to(self.device)
        self.class_names = tuple(class_names)

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> tuple[Preprocessed, torch.Tensor]:
        """Preprocess, run every window in one batch, stitch: (sizes, (C, gh, gw) normalised map).

        With unit_scope "window", each window's valid grid is replaced by its unit embeddings before
        stitching (units never see a window's zero padding).
        """
        cfg = self.config
        pre = preprocess(image, cfg, self.mean, self.std, self.output_stride)
        crops = crop_windows(pre.tensor, pre.boxes, cfg.window).to(self.device)
        grids = self.model.pixel_embeddings(crops).float()
        transform = (lambda grid: unit_embedding_map(grid, cfg.units)) if cfg.unit_scope == "window" else None
        return pre, stitch(grids, pre.boxes, pre.grid_size, self.output_stride, transform)

    def _image_scope_units(self, units: int | None) -> int:
        """Units applied to the stitched map: `units`, else the config's (0 when units are per window)."""
        if units is not None:
            return units
        return self.config.units if self.config.unit_scope == "image" else 0

    @torch.no_grad()
    def image_units(self, embeddings: torch.Tensor, units: int | None = None) -> Units | None:
        """The stitched map's semantic units (image scope; None for pixel units), for `assigned=` below.

        They depend on the image only: compute them once, then query every vocabulary with them."""
        return image_units(embeddings, self._image_scope_units(units))

    @torch.no_grad()
    def grid_scores_from_embedding(self, pre: Preprocessed, embeddings: torch.Tensor, units: int | None = None,
                                   assigned: Units | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The cheap half of prediction: an `embed` result queried against the current vocabulary.

        Returns (K, gh, gw) cosine scores on the stitched grid after units and PAMR, and (K,) cosines
        of the image-average embedding (the stitched map's mean, L2-normalised; the groupvit rule's
        top-5 come from it). Embed an image once, then query any number of vocabularies
        (`set_classes`) or unit counts (`units`, image scope; default: the config's); `assigned`,
        this map's `image_units(embeddings, units)`, skips assigning the pixels again.
        """
        if self.class_embeddings is None:
            raise RuntimeError("call set_classes(names) before predicting")
        scores = unit_scores(embeddings, self.class_embeddings, self._image_scope_units(units), assigned)
        image_cos = self.class_embeddings @ F.normalize(embeddings.mean(dim=(1, 2)), dim=0)
        if self.pamr is not None:
            scores = self.pamr(grid_image(pre).to(scores)[None], scores[None])[0]
        return scores, image_cos

    @torch.no_grad()
    def grid_scores(self, image: np.ndarray) -> tuple[Preprocessed, torch.Tensor, torch.Tensor]:
        """(sizes, grid scores, image cosines) of one image: `embed`, then `grid_scores_from_embedding`."""
        pre, embeddings = self.embed(image)
        return (pre, *self.grid_scores_from_embedding(pre, embeddings))

    @torch.no_grad()
    def predict_scores(self, image: np.ndarray) -> torch.Tensor:
        """(K, H, W) cosine scores at the original image size (on the predictor's device; PAMR-refined when on)."""
        pre, scores, _ = self.grid_scores(image)
        return upsample_scores(scores, pre)

    def temporal_state(self, mode: str | None = None) -> TorchTemporalState:
        """A new stream's memory for `predict(..., state=)` (the config's `temporal` mode, or `mode`); the twin of
        runtime.Segmenter.temporal_state."""
        return TorchTemporalState(self.config.temporal if mode is None else mode)

    @torch.no_grad()
    def labels_from_embedding(self, pre: Preprocessed, embeddings: torch.Tensor, units: int | None = None,
                              assigned: Units | None = None, state: TorchTemporalState | None = None) -> np.ndarray:
        """(H, W) int64 labels of an `embed` result: class indices, or 0 = background and 1..K when a
        background value is set (the config's bg_rule decides: groupvit and tcl on the grid, softmax
        at full resolution). `units` and `assigned` as in `grid_scores_from_embedding`. `state`: a stream's
        `temporal_state()`, given every frame in order (None or mode "off": the frame alone)."""
        cfg = self.config
        if state is not None and state.mode != "off":
            state.begin((pre.resized_size, pre.grid_size, self.class_names, self._image_scope_units(units)))
            if state.carries_units and assigned is None:
                assigned = carried_units(embeddings, self._image_scope_units(units), state)
        scores, image_cos = self.grid_scores_from_embedding(pre, embeddings, units, assigned)
        if state is not None and state.smooths:
            scores = smooth_scores(scores, pre.tensor, state, self.output_stride, self.std)
        if state is not None and state.mode != "off":
            state.frames += 1
        if cfg.background_threshold is not None and cfg.bg_rule != "softmax":
            channels = background_channels(scores, image_cos, cfg.bg_rule, cfg.background_threshold)
            labels = labels_from_scores(upsample_scores(channels, pre))
        else:
            labels = labels_from_scores(upsample_scores(scores, pre), cfg.background_threshold, cfg.logit_scale)
        return labels.cpu().numpy().astype(np.int64)

    @torch.no_grad()
    def predict(self, image: np.ndarray, state: TorchTemporalState | None = None) -> np.ndarray:
        """(H, W) int64 labels (see `labels_from_embedding`; `state` for the frames of a stream)."""
        return self.labels_from_embedding(*self.embed(image), state=state)

    __call__ = predict
