"""Process-group set-up for torchrun/DDP (NCCL on CUDA, gloo on CPU), and rank helpers."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment; single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of `value` across ranks (a copy; the input is untouched)."""
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / info.world_size


def gather_with_local_grad(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """`value` of every rank concatenated in rank order (dim 0); only this rank's slice stays in the graph.

    open_clip's ClipLoss without gather_with_grad: every rank then computes the same full-batch
    loss, so the gradient reaching the local slice is already the complete dL/d(local rows) and no
    backward communication is needed. (gather_with_grad's backward would sum world_size identical
    copies of it instead; DDP's averaging then needs the scale the caller applies here.)
    Every rank must pass the same shape.
    """
    if not info.enabled:
        return value
    parts = [torch.empty_like(value) for _ in range(info.world_size)]
    dist.all_gather(parts, value.detach().contiguous())
    parts[info.rank] = value
    return torch.cat(parts)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
