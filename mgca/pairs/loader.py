"""Batches for training: `{"images": (B, 3, H, W) float, "captions": list[str]}`, resumable mid-epoch.

The data of batch b of epoch e on rank r depends only on (seed, e, r, b): map-style data is
ordered by `DistributedSampler` (seeded, `set_epoch(e)`), shard streams by their seeded plan,
and every per-sample random choice by rng(seed, e, sample). A resumed run asks for
`start_batch=b` and gets exactly the batches b, b+1, ... the interrupted run would have seen.
Captions stay strings (already original-or-noun-prompt); the model tokenises them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from ..config import DataConfig
from .captions import CaptionDataset, build_caption_dataset
from .errors import SkipCounter
from .shards import WebDatasetCaptions


def collate_captions(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"images": torch.stack([item["image"] for item in items]), "captions": [item["caption"] for item in items]}


class SkipFirst(Sampler[int]):
    """The indices of `sampler` after the first `skip` (the batches a resumed run already used)."""

    def __init__(self, sampler: Sampler[int], skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]


def build_dataloader(cfg: DataConfig, transform: Callable[..., Any] | None, batch_size: int, *, rank: int = 0,
                     world_size: int = 1,
                     seed: int | None = None, epoch: int = 0, start_batch: int = 0, drop_last: bool = True,
                     shuffle: bool = True,
                     skips: SkipCounter | None = None) -> DataLoader:
    """This rank's batches of `epoch` from batch `start_batch` on; `len(loader)` counts the ones left.

    Every rank gets the same number of batches. `seed` (default `cfg.seed`) fixes the order, crops
    and caption choices; build a new loader per epoch. Skip counts: `loader.dataset.skips`.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    seed = cfg.seed if seed is None else seed
    dataset = build_caption_dataset(cfg, transform, rank=rank, world_size=world_size, seed=seed,
                                    shuffle_buffer=1000 if shuffle else 0, skips=skips)
    if dataset.sampler is not None:
        dataset.sampler.prepare()  # spaCy loads here: a missing model fails now, in one line; forked workers inherit it
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    common: dict[str, Any] = {"batch_size": batch_size, "drop_last": drop_last, "collate_fn": collate_captions,
                              "num_workers": cfg.num_workers, "pin_memory": torch.cuda.is_available(),
                              "generator": generator}
    if isinstance(dataset, WebDatasetCaptions):
        dataset.configure(batch_size, epoch=epoch, start_batch=start_batch, drop_last=drop_last)
        return DataLoader(dataset, **common)
    assert isinstance(dataset, CaptionDataset)
    dataset.set_epoch(epoch)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, sampler=SkipFirst(sampler, start_batch * batch_size) if start_batch else sampler,
                      **common)
