"""The learnable decoder D_v: x2 upsampling and two gated residual conv blocks (TCL's ResConv).

At C=512 it has 2*(512*512*9 + 512 + 1024 + 1) = 4,721,666 parameters, the paper's 4.72M.
Gates start at 0, so an untrained decoder is the identity on the upsampled CLIP features.

The first block runs on the CLIP grid, not the upsampled one: LayerNorm and GELU act per pixel, so they commute
with nearest upsampling, and a 3x3 conv over a nearest-upsampled map is, for each of the factor**2 output phases,
a conv of at most 2x2 summed taps on the small map. Same parameters and outputs (to float rounding), 2.25x fewer
multiply-adds in that conv at factor 2: the decoder is most of a small tower's cost at the edge.
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

    def forward_upsampled(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        """forward(nearest_upsample(x, factor)), computed on x's grid (see the module docstring)."""
        residual = F.interpolate(x, scale_factor=factor, mode="nearest")
        return residual + torch.tanh(self.gate) * upsampled_conv3x3(F.gelu(self.norm(x)), self.conv, factor)


def _phase_taps(phase: int, factor: int) -> tuple[int, list[list[int]]]:
    """For output row `phase` (mod factor) of a 3x3 conv over an x`factor` nearest-upsampled map: the first
    small-map row offset it reads, and per offset the kernel rows that land there."""
    offsets = [(phase + k - 1) // factor for k in range(3)]
    first = offsets[0]
    rows: list[list[int]] = [[] for _ in range(offsets[-1] - first + 1)]
    for k, offset in enumerate(offsets):
        rows[offset - first].append(k)
    return first, rows


def upsampled_conv3x3(x: torch.Tensor, conv: nn.Conv2d, factor: int) -> torch.Tensor:
    """conv(nearest_upsample(x, factor)) for a 3x3, padding-1 conv, without building the upsampled input.

    Each output phase (a, b) is a conv on x with the 3x3 kernel's taps summed into at most 2x2; the phases are
    interleaved by pixel_shuffle (ONNX DepthToSpace). Zero padding of the large map is zero padding of the small
    one, so borders match too.
    """
    weight, bias = conv.weight, conv.bias
    height, width = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    phases = []
    for a in range(factor):
        row0, rows = _phase_taps(a, factor)
        for b in range(factor):
            col0, cols = _phase_taps(b, factor)
            kernel = torch.stack([torch.stack([weight[:, :, r][:, :, :, c].sum(dim=(2, 3)) for c in cols], dim=-1)
                                  for r in rows], dim=-2)
            window = padded[:, :, 1 + row0:1 + row0 + height + len(rows) - 1,
                            1 + col0:1 + col0 + width + len(cols) - 1]
            phases.append(F.conv2d(window, kernel, bias))
    stacked = torch.stack(phases, dim=2)  # (N, C, factor*factor, H, W): channel-major, as pixel_shuffle reads
    return F.pixel_shuffle(stacked.flatten(1, 2), factor)


class GatedConvDecoder(nn.Module):
    """Upsample the CLIP grid (nearest) and refine it into pixel embeddings of the same width."""

    def __init__(self, channels: int, upsample: int = 2, num_blocks: int = 2):
        super().__init__()
        self.upsample = upsample
        self.blocks = nn.Sequential(*(GatedConvBlock(channels) for _ in range(num_blocks)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        blocks = list(self.blocks)
        if self.upsample != 1:
            if not blocks:
                return F.interpolate(features, scale_factor=self.upsample, mode="nearest")
            features = blocks.pop(0).forward_upsampled(features, self.upsample)
        for block in blocks:
            features = block(features)
        return features


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
