"""The learnable decoder D_v: x2 upsampling and two gated residual conv blocks (TCL's ResConv).

At C=512 it has 2*(512*512*9 + 512 + 1024 + 1) = 4,721,666 parameters, the paper's 4.72M.
Gates start at 0, so an untrained decoder is the identity on the upsampled CLIP features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DecoderConfig


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW map (per pixel), written with ONNX-friendly ops."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GatedConvBlock(nn.Module):
    """Pre-activation residual block: x + tanh(g) * conv3x3(gelu(LN(x)))."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = LayerNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.gate) * self.conv(F.gelu(self.norm(x)))


class GatedConvDecoder(nn.Module):
    """Upsample the CLIP grid (nearest) and refine it into pixel embeddings of the same width."""

    def __init__(self, channels: int, upsample: int = 2, num_blocks: int = 2):
        super().__init__()
        self.upsample = upsample
        self.blocks = nn.Sequential(*(GatedConvBlock(channels) for _ in range(num_blocks)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.upsample != 1:
            features = F.interpolate(features, scale_factor=self.upsample, mode="nearest")
        return self.blocks(features)


def build_decoder(cfg: DecoderConfig, channels: int) -> nn.Module:
    """The configured decoder; kind "none" keeps the frozen MaskCLIP features (the baseline row)."""
    if cfg.kind == "none":
        return nn.Identity()
    return GatedConvDecoder(channels, upsample=cfg.upsample, num_blocks=cfg.num_blocks)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def perturb_decoder(decoder: nn.Module, seed: int = 0, scale: float = 0.02) -> nn.Module:
    """Open the gates (0.5) and jitter the conv weights of an untrained decoder, in place.

    At init the gates are 0: the decoder is the identity and its conv weights get no gradient (tanh(0) = 0).
    Tests and the random-init rows of the benchmarks use this to exercise a decoder that does something.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in decoder.named_parameters():
            if name.endswith("gate"):
                param.fill_(0.5)
            elif name.endswith("conv.weight"):
                param.add_(scale * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return decoder
