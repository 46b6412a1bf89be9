"""Inference settings of the PyTorch path: the contract's `InferenceSettings` plus what only evaluation needs."""
from __future__ import annotations

from dataclasses import dataclass

from runtime.contract import CLIP_LOGIT_SCALE, InferenceSettings
from runtime.errors import SettingsError

from ..config import ConfigError
from ..prompts import DEFAULT_TEMPLATE_SET, get_templates


@dataclass(frozen=True)
class InferenceConfig(InferenceSettings):
    """`runtime.contract.InferenceSettings` (short side, window, stride, units, unit scope: the paper's
    defaults, one definition shared with the runtime) and the evaluation-side extras."""

    background_threshold: float | None = None  # the bg_rule's value; set for "with background" datasets only
    templates: str = DEFAULT_TEMPLATE_SET  # prompt template set, see mgca.prompts.TEMPLATE_SETS
    logit_scale: float = CLIP_LOGIT_SCALE  # the softmax rule's scale (groupvit uses CLIP's 100, as GroupViT)

    def validate(self, output_stride: int, patch_size: int | None = None) -> InferenceConfig:
        """Raise ConfigError naming the bad value; returns self so calls can chain."""
        try:
            super().validate(output_stride, patch_size)
        except SettingsError as err:
            raise ConfigError(f"inference: {err}") from None
        if self.background_threshold is not None and not 0.0 <= self.background_threshold <= 1.0:
            raise ConfigError("inference: background_threshold must be in [0, 1] or None, got "
                              f"{self.background_threshold}")
        try:
            get_templates(self.templates)
        except ConfigError as err:
            raise ConfigError(f"inference: {err}") from None
        return self
