"""Shared fixtures: a tiny random-init MGCA model and a checkpoint of it, built once per session."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mgca.checkpoint import save_checkpoint  # noqa: E402
from mgca.config import Config, config_to_dict  # noqa: E402
from mgca.model import build_model  # noqa: E402


def perturb_decoder(model, seed: int = 0) -> None:
    """Open the gates and jitter the convs so the decoder is not the identity it starts as."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.decoder.named_parameters():
            if name.endswith("gate"):
                param.fill_(0.5)
            elif name.endswith("conv.weight"):
                param.add_(0.02 * torch.randn(param.shape, generator=generator))


@pytest.fixture(scope="session")
def tiny_config() -> Config:
    return Config()


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    torch.manual_seed(0)  # decoder init draws from the global RNG: keep the fixture the same every run
    model = build_model(tiny_config.backbone, tiny_config.decoder)
    perturb_decoder(model)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model, tiny_config):
    """A checkpoint file of `tiny_model` in the format `python -m mgca.train` writes."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {
        "config": config_to_dict(tiny_config),
        "backbone": tiny_model.backbone.identity.to_dict(),
        "decoder": tiny_model.decoder.state_dict(),
    })
    return path
