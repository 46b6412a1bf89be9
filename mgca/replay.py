"""Train several decoders on one recorded stream of frozen-CLIP outputs.

The CLIP is frozen, so decoders that differ only in their loss terms see exactly the same dense
features and caption embeddings at every step of one data stream. Computing them once and
replaying them skips the data generation, the text tower and the image tower for every decoder
after the first, about two thirds of a step of the embedded recipe on CPU. The ablation uses it.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .config import Config, config_to_dict
from .train import Trainer

# Sections that decide the frozen outputs of every micro-batch: the CLIP and its dense mode, the data
# stream, and the micro-batch size, seed, device and precision. Loss, optimizer and decoder may differ.
STREAM_SECTIONS = ("backbone", "data")
STREAM_TRAIN_FIELDS = ("batch_size", "seed", "device", "precision", "global_batch", "num_threads")


def stream_key(cfg: Config) -> dict:
    """What two runs must share to see the same frozen outputs."""
    full = config_to_dict(cfg)
    return {**{name: full[name] for name in STREAM_SECTIONS},
            "train": {name: full["train"][name] for name in STREAM_TRAIN_FIELDS}}


@dataclass
class FrozenStream:
    """Frozen outputs recorded by the first trainer of a stream, keyed by (epoch, micro-batch)."""

    key: dict | None = None
    batches: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, int]] = field(default_factory=dict)


class ReplayTrainer(Trainer):
    """A Trainer that replays the frozen outputs `stream` holds, and records into it those it computes.

    An epoch is replayed only when the stream holds all of it from where this run stands (a run resumed
    past the recorded part, or a longer schedule, renders and records its data as usual).
    """

    def __init__(self, cfg: Config, stream: FrozenStream):
        super().__init__(cfg)
        key = stream_key(self.cfg)
        if stream.key is not None and stream.key != key:
            raise ValueError("this run's CLIP, data or batch settings differ from the recorded stream's; "
                             "use a new FrozenStream")
        stream.key = key
        self.stream = stream
        self.replayed_batches = 0

    def _epoch_batches(self, epoch: int, start_batch: int) -> Iterator[dict]:
        usable = self.steps_per_epoch * self.accum
        if all((epoch, index) in self.stream.batches for index in range(start_batch, usable)):
            for index in range(start_batch, usable):
                features, text, size = self.stream.batches[(epoch, index)]
                self.replayed_batches += 1
                yield {"captions": [""] * size, "replayed": (features, text)}
            return
        for index, batch in enumerate(super()._epoch_batches(epoch, start_batch), start=start_batch):
            yield batch | {"stream_position": (epoch, index)}

    def _frozen_outputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "replayed" in batch:
            return batch["replayed"]
        features, text = super()._frozen_outputs(batch)
        self.stream.batches[batch["stream_position"]] = (features, text, len(batch["captions"]))
        return features, text
