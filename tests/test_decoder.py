"""Decoder D_v: the paper's parameter count, identity at initialisation, x2 output grid."""
from __future__ import annotations

import torch

from mgca.config import DecoderConfig
from mgca.decoder import GatedConvDecoder, build_decoder, count_parameters


def test_parameter_count_matches_paper():
    decoder = GatedConvDecoder(512)
    print(f"decoder parameters at C=512: {count_parameters(decoder):,}")
    assert count_parameters(decoder) == 2 * (512 * 512 * 9 + 512 + 1024 + 1) == 4_721_666


def test_identity_at_init_and_upsamples():
    decoder = GatedConvDecoder(16)
    x = torch.randn(2, 16, 5, 7)
    y = decoder(x)
    assert y.shape == (2, 16, 10, 14)
    torch.testing.assert_close(y, x.repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_gates_open_change_output_and_get_gradients():
    decoder = GatedConvDecoder(8)
    x = torch.randn(1, 8, 4, 4)
    decoder(x).pow(2).sum().backward()
    assert all(block.gate.grad is not None and block.gate.grad.abs() > 0 for block in decoder.blocks)


def test_none_decoder_is_identity():
    x = torch.randn(1, 8, 3, 3)
    assert build_decoder(DecoderConfig(kind="none"), 8)(x) is x
