"""Decoder D_v: the paper's parameter count, identity at initialisation, x2 output grid."""
from __future__ import annotations

import pytest
import torch

from mgca.config import DecoderConfig
from mgca.decoder import GatedConvDecoder, build_decoder, count_parameters, perturb_decoder


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


def reference_forward(decoder: GatedConvDecoder, x: torch.Tensor) -> torch.Tensor:
    """The spec's formula as written: nearest upsampling, then every block on the large map."""
    x = torch.nn.functional.interpolate(x, scale_factor=decoder.upsample, mode="nearest")
    return decoder.blocks(x)


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (7, 4)])
def test_first_block_on_the_small_grid_equals_the_formula(factor, size):
    """The first block runs before upsampling (per-phase summed taps): outputs and gradients must be the
    formula's on any grid, at every factor, borders included."""
    decoder = perturb_decoder(GatedConvDecoder(6, upsample=factor), seed=factor, scale=0.3)
    x = torch.randn(2, 6, *size, dtype=torch.float64, requires_grad=True)
    decoder = decoder.double()
    ours, theirs = decoder(x), reference_forward(decoder, x)
    assert ours.shape == (2, 6, size[0] * factor, size[1] * factor)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    weights = torch.randn_like(ours)
    grads = torch.autograd.grad((ours * weights).sum(), [x, *decoder.parameters()])
    reference_grads = torch.autograd.grad((theirs * weights).sum(), [x, *decoder.parameters()])
    for got, want in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_small_grid_form_does_fewer_multiply_adds():
    """Why it exists: at x2 the first conv's multiply-adds drop 2.25x (16 taps per small-grid pixel instead of 4 x 9),
    so the two convs' drop from 18 to 13 parts."""
    from torch.utils.flop_counter import FlopCounterMode

    decoder = GatedConvDecoder(32)
    x = torch.randn(1, 32, 14, 14)
    with FlopCounterMode(display=False) as ours:
        decoder(x)
    with FlopCounterMode(display=False) as formula:
        reference_forward(decoder, x)
    assert ours.get_total_flops() * 18 == formula.get_total_flops() * 13
