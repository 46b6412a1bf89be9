"""Build the model a CLI evaluates: a trained checkpoint, or frozen CLIP features (`--decoder none`)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError, check_backbone_matches, config_of, load_checkpoint
from ..config import BackboneConfig, ConfigError, DecoderConfig
from ..model import MGCA, build_model


def load_inference_model(
    checkpoint: str | Path | None = None,
    decoder: str = "checkpoint",
    arch: str = "mgca-tiny",
    clip_weights: str | None = None,
    dense_mode: str | None = None,
    device: str | torch.device = "cpu",
) -> MGCA:
    """The model to run, in eval mode on `device`.

    decoder="checkpoint": the checkpoint's trained decoder. decoder="none": the frozen MaskCLIP
    baseline (paper Table 3, row 1), on the checkpoint's CLIP when one is given, else on `arch` +
    `clip_weights` (random init without weights). `dense_mode` overrides the backbone's.
    """
    if decoder not in ("checkpoint", "none"):
        raise ConfigError(f"decoder {decoder!r} is not 'checkpoint' or 'none'")
    if checkpoint is None:
        if decoder != "none":
            raise ConfigError("pass --checkpoint CKPT, or --decoder none to evaluate frozen CLIP features")
        backbone = BackboneConfig(arch=arch, checkpoint=clip_weights, dense_mode=dense_mode or "tcl")
        return build_model(backbone, DecoderConfig(kind="none")).to(device).eval()
    payload = load_checkpoint(checkpoint)
    cfg = config_of(payload)
    if clip_weights is not None:
        cfg.backbone.checkpoint = clip_weights
    if dense_mode is not None:
        cfg.backbone.dense_mode = dense_mode
    model = build_model(cfg.backbone, DecoderConfig(kind="none") if decoder == "none" else cfg.decoder)
    check_backbone_matches(payload.get("backbone", {}), model.backbone.identity.to_dict(), f"checkpoint {checkpoint}")
    if decoder == "checkpoint":
        try:
            model.decoder.load_state_dict(payload["decoder"])
        except (KeyError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint {checkpoint} decoder weights do not fit decoder config {cfg.decoder} ({str(err).splitlines()[0]})") from None
    return model.to(device).eval()


def is_random_init(model: MGCA) -> bool:
    """True when the CLIP weights came from a seed: every number is then meaningless."""
    return model.backbone.source.startswith("random-init")
