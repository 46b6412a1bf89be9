"""Exact large-batch MGCA gradients from micro-batches and DDP ranks (GradCache, Gao et al. 2021).

Every MGCA loss term couples each image with every caption of the batch, so the loss of a
global batch is not the sum of its micro-batch losses: accumulating per-micro-batch gradients
would shrink the negatives to one micro-batch. Instead, one optimizer step runs in three phases:

1. `add`, per micro-batch: the decoder runs WITHOUT grad on the frozen backbone's features; the
   features and the pixel embeddings V are kept (the backbone never runs twice).
2. `backward`: V and T of all micro-batches (and, under DDP, of all ranks, gathered with the
   local slice as a leaf) give the full-batch loss once; its backward stops at V, giving dL/dV.
3. The decoder re-runs WITH grad, one micro-batch at a time, and V.backward(dL/dV) puts the exact
   full-batch gradient into the parameters (DDP `no_sync` on all but the last micro-batch).

Scaling: every rank computes the same full-batch loss L, so its dL/dV_local is complete; DDP
averages parameter gradients over ranks, so the cached gradient is multiplied by world_size to
make the average the sum over ranks, i.e. dL/dθ. No 1/accum factor: L is already the mean over
the global batch. An fp16 GradScaler scales L in phase 2, so phase 3 carries the scaled gradient.

Memory per rank: the backbone features and fp32 V of the local micro-batches, plus the gathered
fp32 V of the global batch and its gradient during phase 2 (B·L·C·4 bytes each: 1.6 GB at
B=1024, L=784, C=512); decoder activations for one micro-batch at a time. A step of a single
micro-batch keeps its graph from phase 1 and skips the re-forward, which makes it exactly the
plain forward/backward step.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor

from .distributed import DistInfo, gather_with_local_grad
from .losses import MGCALoss


def at_least_fp32(x: Tensor) -> Tensor:
    """Half precision up to float32 (the loss and its cached gradient stay accurate); float64 kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def pixel_rows(embedding_map: Tensor) -> Tensor:
    """(B, C, h, w) decoder output -> (B, L, C) V in at least float32, the layout the loss reads."""
    return at_least_fp32(embedding_map.flatten(2).transpose(1, 2))


NEGLIGIBLE = 1e-12


def drop_negligible(grad: Tensor) -> Tensor:
    """Zero the entries below NEGLIGIBLE x the largest magnitude of `grad`.

    The object term alone backpropagates through softmax probabilities as small as 1e-40: about 10%
    of its pixel gradient is subnormal, and x86 convolution backward runs 5x slower on subnormals
    (flushing them with `torch.set_flush_denormal` only won back a quarter of that). Entries 1e-12
    below the largest cannot move a float32 sum that holds the largest, so dropping them changes the
    update by rounding noise at most.
    """
    return torch.where(grad.abs() < grad.abs().amax() * NEGLIGIBLE, torch.zeros_like(grad), grad)


class GradCache:
    """Collects the micro-batches of one optimizer step, then backpropagates the full-batch loss."""

    def __init__(self, forward: Callable[[Tensor], Tensor], loss_fn: MGCALoss, info: DistInfo,
                 micro_batches: int, autocast: Callable[[], contextlib.AbstractContextManager],
                 no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        self.forward = forward
        self.loss_fn = loss_fn
        self.info = info
        self.micro_batches = micro_batches
        self.autocast = autocast
        self.no_sync = no_sync
        self.features: list[Tensor] = []
        self.pixels: list[Tensor] = []
        self.texts: list[Tensor] = []

    @property
    def keeps_graph(self) -> bool:
        """One micro-batch per step: keep its graph instead of re-running the decoder."""
        return self.micro_batches == 1

    def __len__(self) -> int:
        return len(self.pixels)

    def add(self, features: Tensor, text: Tensor) -> None:
        """Phase 1 for one micro-batch: frozen-backbone `features` (b, C, h, w) and captions `text` (b, C)."""
        grad = contextlib.nullcontext() if self.keeps_graph else torch.no_grad()
        with grad, self.autocast():
            pixels = pixel_rows(self.forward(features))
        self.features.append(features)
        self.pixels.append(pixels)
        self.texts.append(at_least_fp32(text.detach()))

    def backward(self, scale_loss: Callable[[Tensor], Tensor] = lambda loss: loss) -> dict[str, Tensor]:
        """Phases 2-3: parameter gradients of the full-batch loss; returns its (detached) terms and
        the mean norms of V and T. `scale_loss` is the GradScaler's `scale` under fp16."""
        if len(self) != self.micro_batches:
            raise RuntimeError(f"gradient cache holds {len(self)} micro-batches, the step needs {self.micro_batches}")
        features, sizes = self.features, [len(p) for p in self.pixels]
        graphs = [p if p.requires_grad else None for p in self.pixels]
        local = torch.cat([p.detach() for p in self.pixels]).requires_grad_()
        text = gather_with_local_grad(torch.cat(self.texts), self.info)
        self.features, self.pixels, self.texts = [], [], []  # the concatenated copy is all phase 2 needs
        pixels = gather_with_local_grad(local, self.info)
        with self.autocast():
            losses = self.loss_fn(pixels, text)
        scale_loss(losses["loss"]).backward()
        with torch.no_grad():
            norms = {"v_norm": pixels.norm(dim=-1).mean(), "t_norm": text.norm(dim=-1).mean()}
        grads = drop_negligible(local.grad * self.info.world_size).split(sizes)
        del pixels, local
        for index, (cached_features, graph, grad) in enumerate(zip(features, graphs, grads, strict=True)):
            last = index == len(grads) - 1
            with contextlib.nullcontext() if last else self.no_sync():
                if graph is not None:
                    graph.backward(grad)
                else:
                    with self.autocast():
                        fresh = pixel_rows(self.forward(cached_features))
                    fresh.backward(grad)
        return {key: value.detach() for key, value in losses.items()} | norms
