"""MGCA = frozen CLIP backbone + trainable decoder; the one place that maps images to pixel embeddings."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .clip_backbone import FrozenCLIP, build_backbone
from .config import BackboneConfig, DecoderConfig
from .decoder import build_decoder, count_parameters


class MGCA(nn.Module):
    """Images -> decoder pixel embeddings V (Eq. 1); captions -> text embeddings T."""

    def __init__(self, backbone: FrozenCLIP, decoder: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    @property
    def output_stride(self) -> int:
        """Input pixels per embedding pixel (8 for ViT-B/16 with the x2 decoder)."""
        upsample = getattr(self.decoder, "upsample", 1)
        return self.backbone.patch_size // upsample

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C, h, w) pixel embeddings, not normalised."""
        return self.decoder(self.backbone.dense_features(images))

    def pixel_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised pixel embeddings, what inference and the exported graph produce."""
        return F.normalize(self(images), dim=1)

    def encode_captions(self, captions: list[str]) -> torch.Tensor:
        return self.backbone.encode_text(captions)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the decoder: the backbone is frozen and identified by hash instead."""
        return self.decoder.state_dict()


def build_model(backbone_cfg: BackboneConfig, decoder_cfg: DecoderConfig) -> MGCA:
    backbone = build_backbone(backbone_cfg)
    return MGCA(backbone, build_decoder(decoder_cfg, backbone.embed_dim))


__all__ = ["MGCA", "build_model", "count_parameters"]
