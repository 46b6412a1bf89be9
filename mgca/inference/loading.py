"""Build the model a CLI evaluates: a trained checkpoint, or frozen CLIP features (`--decoder none`)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_model
from ..config import BackboneConfig, ConfigError, DecoderConfig
from ..model import MGCA, build_model


def load_inference_model(
    checkpoint: str | Path | None = None,
    decoder: str = "checkpoint",
    arch: str = "mgca-tiny",
    clip_weights: str | None = None,
    dense_mode: str | None = None,
    device: str | torch.device = "cpu",
    trust_torchscript: bool = False,
) -> MGCA:
    """The model to run, in eval mode on `device`.

    decoder="checkpoint": the checkpoint's trained decoder. decoder="none": the frozen MaskCLIP
    baseline (paper Table 3, row 1), on the checkpoint's CLIP when one is given, else on `arch` +
    `clip_weights` (random init without weights). `dense_mode` overrides the backbone's. `trust_torchscript`
    lets a TorchScript CLIP archive run its own code while loading (default: only its tensors are read).
    """
    if decoder not in ("checkpoint", "none"):
        raise ConfigError(f"decoder {decoder!r} is not 'checkpoint' or 'none'")
    if checkpoint is None:
        if decoder != "none":
            raise ConfigError("pass --checkpoint CKPT, or --decoder none to evaluate frozen CLIP features")
        backbone = BackboneConfig(arch=arch, checkpoint=clip_weights, dense_mode=dense_mode or "tcl",
                                  trust_torchscript=trust_torchscript)
        return build_model(backbone, DecoderConfig(kind="none")).to(device).eval()
    model, _ = load_model(checkpoint, clip_weights, device, dense_mode=dense_mode, with_decoder=decoder == "checkpoint",
                          trust_torchscript=trust_torchscript)
    return model


def is_random_init(model: MGCA) -> bool:
    """True when the CLIP weights came from a seed: every number is then meaningless."""
    return model.backbone.source.startswith("random-init")
