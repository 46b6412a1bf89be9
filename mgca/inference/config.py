"""Inference settings (paper 4.1 defaults), validated against the model's strides."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..config import ConfigError
from ..prompts import TEMPLATE_SETS

UnitScope = Literal["image", "window"]


@dataclass
class InferenceConfig:
    """What `docs/inference-contract.md` leaves as parameters; defaults are the paper's."""

    short_side: int = 448  # resize so the shorter side is this many pixels
    window: int = 448  # sliding-window size (square), a multiple of the patch size
    stride: int = 224  # window stride, a multiple of the output stride, <= window
    units: int = 36  # meta-points M; 0 or M >= L means pixel units
    unit_scope: UnitScope = "image"  # units over the stitched map, or per window before stitching
    background_threshold: float | None = None  # softmax threshold; set for "with background" datasets
    templates: str = "tcl"  # prompt template set, see mgca.prompts.TEMPLATE_SETS
    logit_scale: float = 100.0  # CLIP's logit scale, used only for the background softmax

    def validate(self, output_stride: int, patch_size: int) -> "InferenceConfig":
        """Raise ConfigError naming the bad value; returns self so calls can chain."""
        checks = [
            (self.short_side > 0, f"short_side must be positive, got {self.short_side}"),
            (self.window > 0 and self.window % patch_size == 0 and self.window % output_stride == 0,
             f"window {self.window} must be a positive multiple of the patch size {patch_size} and output stride {output_stride}"),
            (0 < self.stride <= self.window and self.stride % output_stride == 0,
             f"stride {self.stride} must be a multiple of the output stride {output_stride} in (0, window={self.window}]"),
            (self.units >= 0, f"units must be >= 0 (0 means pixel units), got {self.units}"),
            (self.unit_scope in ("image", "window"), f"unit_scope {self.unit_scope!r} is not 'image' or 'window'"),
            (self.background_threshold is None or 0.0 <= self.background_threshold <= 1.0,
             f"background_threshold must be in [0, 1] or None, got {self.background_threshold}"),
            (self.templates in TEMPLATE_SETS, f"unknown template set {self.templates!r}; choose one of {sorted(TEMPLATE_SETS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"inference: {message}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
