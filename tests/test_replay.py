"""mgca.replay: decoders trained on a replayed frozen stream equal decoders trained the plain way."""
from __future__ import annotations

import pytest
import torch

import mgca.train
from mgca.grad_cache import drop_negligible
from mgca.replay import FrozenStream, ReplayTrainer
from mgca.train import Trainer

from .support import fast_config


def _decoder_after(trainer: Trainer) -> dict[str, torch.Tensor]:
    trainer.fit()
    return {k: v.clone() for k, v in trainer.model.decoder.state_dict().items()}


@pytest.mark.parametrize("second_losses", [["loss.use_obj=false"], ["loss.use_pix=false", "loss.use_reg=false"]])
def test_replayed_rows_equal_plain_training_bit_for_bit(tmp_path, monkeypatch, second_losses):
    stream = FrozenStream()
    recorder = ReplayTrainer(fast_config(tmp_path / "a", "train.num_threads=1"), stream)
    recorded = _decoder_after(recorder)
    assert recorder.replayed_batches == 0
    assert len(stream.batches) == 12  # 2 epochs x 48 pairs / batch 8
    plain = _decoder_after(Trainer(fast_config(tmp_path / "b", "train.num_threads=1", *second_losses)))

    def no_data(*args, **kwargs):
        raise AssertionError("a replaying trainer generated data")

    replaying = ReplayTrainer(fast_config(tmp_path / "c", "train.num_threads=1", *second_losses), stream)
    monkeypatch.setattr(mgca.train, "epoch_batches", no_data)
    replayed = _decoder_after(replaying)
    assert replaying.replayed_batches == 12
    assert all(torch.equal(replayed[k], plain[k]) for k in plain)
    assert not all(torch.equal(replayed[k], recorded[k]) for k in plain)  # the loss set did change the decoder


def test_a_stream_refuses_a_run_with_other_frozen_outputs(tmp_path):
    stream = FrozenStream()
    ReplayTrainer(fast_config(tmp_path / "a", "train.max_steps=1"), stream).fit()
    with pytest.raises(ValueError, match="differ from the recorded stream"):
        ReplayTrainer(fast_config(tmp_path / "b", "train.seed=1"), stream)
    with pytest.raises(ValueError, match="differ from the recorded stream"):
        ReplayTrainer(fast_config(tmp_path / "c", "backbone.dense_mode=sclip"), stream)
    ReplayTrainer(fast_config(tmp_path / "d", "optim.lr=1e-3", "loss.use_obj=false"), stream)  # loss/optim may differ


def test_negligible_gradient_entries_are_dropped():
    grad = torch.tensor([1.0, -1e-40, 1e-13, -1e-11, 0.0, -0.5])
    assert torch.equal(drop_negligible(grad), torch.tensor([1.0, 0.0, 0.0, -1e-11, 0.0, -0.5]))
    assert torch.equal(drop_negligible(torch.zeros(3)), torch.zeros(3))


def test_a_stream_shorter_than_the_run_is_not_replayed(tmp_path):
    stream = FrozenStream()
    ReplayTrainer(fast_config(tmp_path / "a", "train.max_steps=2"), stream).fit()  # records 2 of 12 batches
    longer = ReplayTrainer(fast_config(tmp_path / "b"), stream)
    assert len(longer.fit().history) == 12 and longer.replayed_batches == 0 and len(stream.batches) == 12
