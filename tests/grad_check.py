"""A fixed global batch and the decoder gradients a Trainer computes for it.

Shared by test_train.py (single process) and its 2-process gloo test, which runs this module under
torchrun (`python -m torch.distributed.run --nproc_per_node 2 -m tests.grad_check OUT`, from the
checkout): each rank feeds its contiguous share of the same batch in micro-batches and saves the
decoder gradients, so the test can compare them with one process seeing it all.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from mgca.config import load_config
from mgca.decoder import perturb_decoder
from mgca.train import Trainer, embedded_config_path

GLOBAL_BATCH = 16
SHAPES = ("circle", "square", "triangle", "star")
COLOURS = ("red", "green", "blue", "yellow")


def fixed_batch(size: int = GLOBAL_BATCH, image_size: int = 224) -> dict:
    """Random normalised images and distinct captions, the same in every process."""
    generator = torch.Generator().manual_seed(1234)
    images = torch.randn(size, 3, image_size, image_size, generator=generator)
    captions = [f"a photo of a {COLOURS[i % 4]} {SHAPES[i // 4 % 4]} number {i}" for i in range(size)]
    return {"images": images, "captions": captions}


def make_trainer(output_dir: Path, batch_size: int, *extra: str) -> Trainer:
    # Pinned here, not inherited from the embedded default: a random-init mgca-tiny, no CLIP pretraining.
    cfg = load_config(embedded_config_path(),
                      ["backbone.arch=mgca-tiny", "pretrain.enabled=false", "data.image_size=224",
                                               "data.synthetic_size=48", f"train.batch_size={batch_size}",
                                               f"train.global_batch={GLOBAL_BATCH}", "train.precision=fp32",
                                               "train.compile=off", f"train.output_dir={output_dir}", *extra])
    trainer = Trainer(cfg)
    perturb_decoder(trainer.model.decoder)  # at init the conv weights get no gradient (tanh(0) = 0)
    return trainer


def decoder_gradients(trainer: Trainer, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Feed this rank's contiguous share of `batch` in micro-batches, backprop the step's loss.

    Returns the decoder's parameter gradients and the logged loss terms."""
    share = len(batch["captions"]) // trainer.info.world_size
    start = trainer.info.rank * share
    micro = trainer.cfg.train.batch_size
    for offset in range(start, start + share, micro):
        trainer._micro_step({"images": batch["images"][offset:offset + micro],
                             "captions": batch["captions"][offset:offset + micro]})
    losses = trainer._backward()
    grads = {name: p.grad.detach().clone() for name, p in trainer.model.decoder.named_parameters()}
    return grads, {key: float(value) for key, value in losses.items()}


def main(output: str) -> None:
    """torchrun entry: float64 gradients of the fixed batch, one file per rank."""
    torch.set_default_dtype(torch.float64)
    trainer = make_trainer(Path(output).parent / "run", 4)
    grads, losses = decoder_gradients(trainer, fixed_batch())
    torch.save({"grads": grads, "losses": losses, "accum": trainer.accum}, f"{output}.rank{trainer.info.rank}")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
