"""`python -m mgca.train`: train the MGCA decoder on image-caption pairs.

    python -m mgca.train                                  # embedded default: tiny CLIP, synthetic data
    python -m mgca.train --quick                          # the same, shortened to a few minutes (smaller figures)
    python -m mgca.train --config configs/vit-b16-cc3m.yaml backbone.checkpoint=/weights/ViT-B-16.pt
    torchrun --nproc_per_node 4 -m mgca.train --config ... train.global_batch=1024

The CLIP towers are frozen; only the decoder is optimised (AdamW, warm-up + cosine). Each
optimizer step gathers micro-batches until `train.global_batch` images were seen across all
processes, and the loss is computed once over that whole global batch: every image has every
caption of all micro-batches and all ranks as negatives, exactly as one big batch would
(gradient cache, `mgca.grad_cache`: the decoder runs twice per micro-batch, the frozen CLIP once).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from runtime.errors import run_cli
from runtime.files import check_writable_dir, same_file

from .checkpoint import CheckpointError, check_backbone_matches, config_of, load_checkpoint, save_checkpoint
from .clip_backbone import is_bundled_arch
from .config import Config, ConfigError, config_to_dict, load_config, validate_config
from .decoder import count_parameters
from .device import resolve_device, resolve_precision_name
from .distributed import DistInfo, all_reduce_mean, barrier, init_distributed, shutdown
from .embedded import ensure_clip_weights, run_benchmark
from .grad_cache import GradCache
from .losses import MGCALoss
from .model import MGCA, build_model
from .pairs import build_dataloader, build_train_transform
from .plotting import plot_loss_curve
from .recipe import check_same_recipe
from .schedule import build_scheduler

LOSS_TERMS = ("loss", "obj", "reg", "pix")
NORM_TERMS = ("v_norm", "t_norm")  # mean L2 norms of V (per pixel) and T (per caption): S uses raw dot products


@dataclass
class TrainState:
    """Everything a resumed run needs to continue the exact same schedule."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch the next step belongs to
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class TrainResult:
    output_dir: Path
    checkpoint: Path
    loss_curve: Path | None
    history: list[dict[str, float]]


PRECISION_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. auto: bf16 where the device computes it natively, else fp32
    (`mgca.device.resolve_precision_name`)."""
    return PRECISION_DTYPES[resolve_precision_name(precision, device)]


def accumulation_steps(global_batch: int, batch_size: int, world_size: int) -> int:
    per_step = batch_size * world_size
    if global_batch <= 0:
        return 1
    if global_batch % per_step:
        raise ConfigError(f"train.global_batch={global_batch} is not a multiple of batch_size*world_size={per_step}; "
                          "choose a global batch divisible by it")
    return global_batch // per_step


def fix_thread_count(count: int) -> None:
    """Use `count` torch intra-op threads (0 leaves torch's default): results then repeat bit for bit."""
    if count:
        torch.set_num_threads(count)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(decoder: nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW with weight decay on conv weights only (norms, biases and gates are not decayed)."""
    decay = [p for p in decoder.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in decoder.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas)


def epoch_batches(cfg: Config, transform, info: DistInfo, epoch: int, start_batch: int) -> tuple[Iterator[dict], int]:
    """Micro-batches of `epoch` from `start_batch` on, and the epoch's micro-batch count."""
    loader = build_dataloader(cfg.data, transform, cfg.train.batch_size, rank=info.rank, world_size=info.world_size,
                              seed=cfg.train.seed, epoch=epoch, start_batch=start_batch)
    return iter(loader), len(loader) + start_batch


def check_output_dir(cfg: Config) -> Path:
    """`train.output_dir`, once it is known to be writable and holding no earlier run this one would overwrite:
    checked before any work, so a mistake costs a second, not an epoch (or a 1,200-step checkpoint)."""
    out = Path(cfg.train.output_dir).expanduser()
    last = out / "last.pt"
    resume = cfg.train.resume
    continues = resume == "auto" or (resume is not None and same_file(Path(resume), last))
    if last.is_file() and continues and not cfg.train.overwrite:  # a changed recipe is refused now, not after
        check_same_recipe(config_of(load_checkpoint(last)), cfg, str(last))  # the CLIP pretraining
    if last.is_file() and not continues and not cfg.train.overwrite:
        try:
            steps = f" of {load_checkpoint(last)['train_state']['step']:,} steps"
        except (CheckpointError, KeyError, TypeError):
            steps = ""
        raise ConfigError(f"{last} holds an earlier run{steps}, which this run would overwrite; continue it with "
                          "train.resume=auto, choose a new train.output_dir, or pass --overwrite "
                          "(train.overwrite=true) to replace it")
    return check_writable_dir(out, "train.output_dir")


class Trainer:
    """Owns the model, optimizer, schedule and state of one training run."""

    def __init__(self, cfg: Config):
        self.cfg = validate_config(cfg)
        check_output_dir(cfg)
        self.device = resolve_device(cfg.train.device)
        self.info = init_distributed(self.device.type)
        if self.device.type == "cuda" and self.info.enabled:
            self.device = torch.device("cuda", self.info.local_rank)
        if not cfg.data.source:
            raise ConfigError("data.source is not set; give webdataset shards, a folder or csv/tsv of image,caption "
                              "pairs, or 'synthetic'")
        self.output_dir = Path(cfg.train.output_dir)
        self.autocast_dtype = resolve_precision(cfg.train.precision, self.device)
        self.accum = accumulation_steps(cfg.train.global_batch, cfg.train.batch_size, self.info.world_size)

        fix_thread_count(cfg.train.num_threads)
        seed_everything(cfg.train.seed)
        self.model: MGCA = build_model(cfg.backbone, cfg.decoder).to(self.device)
        patch = int(self.model.backbone.patch_size)
        if cfg.data.image_size % patch:
            raise ConfigError(f"data.image_size={cfg.data.image_size} is not a multiple of the patch size {patch} of "
                              f"{self.model.backbone.arch}; use {cfg.data.image_size // patch * patch or patch} or "
                              f"{(cfg.data.image_size // patch + 1) * patch}")
        if cfg.backbone.checkpoint is None and not is_bundled_arch(cfg.backbone.arch) and self.info.is_main:
            print(f"mgca.train: warning: {cfg.backbone.arch} is randomly initialised (backbone.checkpoint not set); "
                  "the decoder learns nothing useful on random CLIP features", file=sys.stderr, flush=True)
        if count_parameters(self.model.decoder) == 0:
            raise ConfigError("decoder.kind='none' has nothing to train; use decoder.kind=gated_conv")
        self.decoder = self.model.decoder
        if self.info.enabled:
            ids = [self.info.local_rank] if self.device.type == "cuda" else None
            self.decoder = nn.parallel.DistributedDataParallel(self.model.decoder, device_ids=ids)
        self.forward_decoder = self.decoder
        if cfg.train.compile == "on" or (cfg.train.compile == "auto" and self.device.type == "cuda"):
            self.forward_decoder = torch.compile(self.decoder)
        self.loss_fn = MGCALoss(cfg.loss)
        self.optimizer = build_optimizer(self.model.decoder, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        no_sync = self.decoder.no_sync if self.info.enabled else contextlib.nullcontext
        self.grad_cache = GradCache(self.forward_decoder, self.loss_fn, self.info, self.accum, self._autocast, no_sync)

        self.transform = build_train_transform(cfg.data, mean=self.model.backbone.mean, std=self.model.backbone.std)
        _, batches_per_epoch = epoch_batches(cfg, self.transform, self.info, 0, 0)
        self.steps_per_epoch = batches_per_epoch // self.accum
        if self.steps_per_epoch == 0:
            raise ConfigError(f"one epoch has {batches_per_epoch} micro-batches, fewer than the {self.accum} an "
                              "optimizer step needs; "
                              "use more data or a smaller train.global_batch / train.batch_size")
        self.total_steps = cfg.optim.epochs * self.steps_per_epoch
        warmup = round(cfg.optim.warmup_epochs * self.steps_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, warmup, self.total_steps)
        self.state = TrainState()
        if cfg.train.resume and not (cfg.train.resume == "auto" and cfg.train.overwrite):  # overwrite: start afresh
            self._resume(cfg.train.resume)

    # ------------------------------------------------------------------ checkpoints
    def _payload(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.cfg),
            "backbone": self.model.backbone.identity.to_dict(),
            "decoder": self.model.decoder.state_dict(),
            "decoder_parameters": count_parameters(self.model.decoder),
            "train_state": {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "step": self.state.step,
                "epoch": self.state.epoch,
                "batch_in_epoch": self.state.batch_in_epoch,
                "history": self.state.history,
                "torch_rng": torch.get_rng_state(),
            },
        }

    def save(self, name: str = "last.pt") -> Path:
        path = self.output_dir / name
        if self.info.is_main:
            save_checkpoint(path, self._payload())
        barrier(self.info)
        return path

    def _resume(self, resume: str) -> None:
        path = self.output_dir / "last.pt" if resume == "auto" else Path(resume)
        if resume == "auto" and not path.is_file():
            return  # nothing to resume yet: start fresh
        payload = load_checkpoint(path)
        old = config_of(payload)
        ways_out = "choose a new train.output_dir, or pass --overwrite (train.overwrite=true) to replace that run"
        try:
            check_backbone_matches(payload["backbone"], self.model.backbone.identity.to_dict(), f"checkpoint {path}")
        except CheckpointError:
            raise CheckpointError(f"cannot resume {path}: it was trained on other CLIP weights than "
                                  f"{self.model.backbone.source}; {ways_out}") from None
        check_same_recipe(old, self.cfg, str(path))
        if "train_state" not in payload:
            raise CheckpointError(f"{path} has no training state (an exported decoder?); "
                                  "resume from output_dir/last.pt")
        state = payload["train_state"]
        self.model.decoder.load_state_dict(payload["decoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.state = TrainState(state["step"], state["epoch"], state["batch_in_epoch"], list(state["history"]))

    # ------------------------------------------------------------------ steps
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _epoch_batches(self, epoch: int, start_batch: int) -> Iterator[dict]:
        """Micro-batches of `epoch` from `start_batch` on (a seam for replaying recorded frozen outputs)."""
        return epoch_batches(self.cfg, self.transform, self.info, epoch, start_batch)[0]

    def _frozen_outputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen CLIP's dense features (b, C, h, w) and caption embeddings (b, C) of one micro-batch."""
        images = batch["images"].to(self.device, non_blocking=True)
        with self._autocast():
            text = self.model.encode_captions(batch["captions"])
            features = self.model.backbone.dense_features(images)
        return features, text

    def _micro_step(self, batch: dict) -> None:
        """Frozen CLIP once per micro-batch; the decoder output waits in the gradient cache for the step."""
        self.grad_cache.add(*self._frozen_outputs(batch))

    def _backward(self) -> dict[str, torch.Tensor]:
        """Gradients of the loss over the whole global batch (all micro-batches, all ranks)."""
        return self.grad_cache.backward(self.scaler.scale)

    def _optimizer_step(self) -> dict[str, torch.Tensor]:
        """Backward of the full-batch loss, then one AdamW and schedule step; returns the loss terms."""
        losses = self._backward()
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.decoder.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return losses

    def _check_replicas_in_sync(self) -> None:
        """DDP invariant: every rank holds the same decoder weights (cheap at 4.7M parameters)."""
        flat = torch.cat([p.detach().reshape(-1).float() for p in self.model.decoder.parameters()])
        reference = flat.clone()
        torch.distributed.broadcast(reference, src=0)
        drift = (flat - reference).abs().max()
        torch.distributed.all_reduce(drift, op=torch.distributed.ReduceOp.MAX)
        if drift > 0:
            raise RuntimeError(f"DDP replicas drifted apart (max weight difference {float(drift):.3g})")
        if self.info.is_main:
            print(f"mgca.train: {self.info.world_size} DDP replicas in sync", flush=True)

    def _stop_step(self) -> int:
        return min(self.total_steps, self.cfg.train.max_steps) if self.cfg.train.max_steps > 0 else self.total_steps

    def fit(self) -> TrainResult:
        cfg = self.cfg
        stop = self._stop_step()
        checkpoint_every = cfg.train.checkpoint_every or self.steps_per_epoch
        global_batch = cfg.train.batch_size * self.info.world_size * self.accum
        if self.info.is_main:
            precision = next(name for name, dtype in PRECISION_DTYPES.items() if dtype == self.autocast_dtype)
            print(f"mgca.train: {self.model.backbone.arch} ({self.model.backbone.source}), "
                  f"decoder {count_parameters(self.model.decoder):,} params, data {cfg.data.source}, "
                  f"device {self.device}, precision {precision}, world {self.info.world_size}, "
                  f"global batch {global_batch} = {cfg.train.batch_size} x {self.info.world_size} x {self.accum} "
                  f"accum, {self.steps_per_epoch} steps/epoch, {self.total_steps} steps total", flush=True)
        bar = tqdm(total=stop, initial=self.state.step, desc="train", unit="step", disable=not self.info.is_main,
                   dynamic_ncols=True, file=sys.stderr)
        tick, images_seen = time.perf_counter(), 0
        while self.state.step < stop:
            epoch = self.state.epoch
            batches = self._epoch_batches(epoch, self.state.batch_in_epoch)
            usable = self.steps_per_epoch * self.accum  # a trailing partial accumulation is dropped
            for batch in batches:
                if self.state.step >= stop:
                    break
                self.state.batch_in_epoch += 1
                self._micro_step(batch)
                images_seen += len(batch["captions"]) * self.info.world_size
                if self.state.batch_in_epoch % self.accum:
                    continue
                lr = self.scheduler.get_last_lr()[0]
                losses = self._optimizer_step()
                self.state.step += 1
                record = {"step": self.state.step, "epoch": epoch, "lr": lr}
                # Full-batch values, the same on every rank; the mean only guards against float noise.
                record.update({k: float(all_reduce_mean(losses[k], self.info)) for k in (*LOSS_TERMS, *NORM_TERMS)})
                elapsed = time.perf_counter() - tick
                record["images_per_s"] = images_seen / max(elapsed, 1e-9)
                self.state.history.append(record)
                tick, images_seen = time.perf_counter(), 0
                if not all(math.isfinite(record[k]) for k in LOSS_TERMS):
                    raise FloatingPointError(f"loss became {record['loss']} at step {self.state.step}; lower optim.lr "
                                             "or use train.precision=fp32")
                bar.update(1)
                shown = {k: f"{record[k]:.3f}" for k in LOSS_TERMS}
                bar.set_postfix(shown | {"img/s": f"{record['images_per_s']:.1f}"})
                epoch_done = self.state.batch_in_epoch >= usable
                if epoch_done:
                    self.state.epoch, self.state.batch_in_epoch = epoch + 1, 0
                if self.state.step % checkpoint_every == 0 or self.state.step == stop:
                    self.save()
                if epoch_done:
                    break
            else:
                if self.state.batch_in_epoch < usable:
                    raise RuntimeError(f"epoch {epoch} ended after {self.state.batch_in_epoch} of {usable} "
                                       "micro-batches; the data source shrank during training")
        bar.close()
        if self.info.enabled:
            self._check_replicas_in_sync()
        checkpoint = self.save()
        curve = None
        if self.info.is_main:
            curve = plot_loss_curve(self.state.history, self.output_dir / "loss_curve.png")
            (self.output_dir / "history.json").write_text(json.dumps(self.state.history, indent=1))
            first, last = self.state.history[0]["loss"], self.state.history[-1]["loss"]
            print(f"mgca.train: done, {self.state.step} steps, loss {first:.4f} -> {last:.4f}; checkpoint "
                  f"{checkpoint}, loss curve {curve}", flush=True)
        return TrainResult(self.output_dir, checkpoint, curve, self.state.history)




def train(cfg: Config) -> TrainResult:
    """Pretrain a tiny CLIP if asked (and none is given), train the decoder, then the synthetic benchmark if asked."""
    fix_thread_count(cfg.train.num_threads)
    note = ensure_clip_weights(cfg)
    if note:
        print(f"mgca.train: {note}", flush=True)
    trainer = Trainer(cfg)
    try:
        result = trainer.fit()
        if cfg.benchmark.enabled and trainer.info.is_main:
            table, json_path, pictures = run_benchmark(cfg, trainer.model, trainer.device, trainer.output_dir)
            print(f"mgca.train: synthetic segmentation benchmark (mIoU %, {json_path}):\n{table}", flush=True)
            print(f"mgca.train: held-out segmentations, frozen CLIP vs trained decoder: {pictures[0]} (objects), "
                  f"{pictures[1]} (objects + stuff)", flush=True)
        return result
    finally:
        shutdown(trainer.info)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mgca.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file (defaults: the embedded tiny run)")
    parser.add_argument("--clip", metavar="ARCH",
                        help="CLIP architecture (open_clip name, e.g. ViT-B-16); same as backbone.arch=ARCH")
    parser.add_argument("--weights", metavar="FILE",
                        help="local CLIP weights (OpenAI .pt, open_clip .pt/.safetensors, or a transformers "
                        "CLIPModel folder, whose config.json gives the architecture); "
                        "same as backbone.checkpoint=FILE, and no tiny CLIP is pretrained")
    parser.add_argument("--trust-torchscript", action="store_true",
                        help="let a TorchScript CLIP archive run its own code while loading (same as "
                        "backbone.trust_torchscript=true); by default only its tensors are read")
    parser.add_argument("--quick", action="store_true",
                        help="the embedded default shortened to a few minutes on 2 cores (fewer pretraining and "
                        f"decoder steps, a smaller benchmark, into {QUICK_OUTPUT}): smaller figures, the same method")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run in train.output_dir (same as train.overwrite=true)")
    parser.add_argument("overrides", nargs="*",
                        help="section.key=value overrides, e.g. train.batch_size=16 optim.epochs=2")
    return parser.parse_args(argv)


# `--quick`: the embedded default with these overrides (the user's own come after them). Its tiny CLIP gets its own
# cache key (pretrain.steps is part of it) and its run its own folder, so neither touches the full run's.
QUICK_OUTPUT = "runs/quick"
QUICK_OVERRIDES = ("pretrain.steps=150", "pretrain.warmup_steps=15", "data.synthetic_size=12800",
                   "benchmark.count=100", f"train.output_dir={QUICK_OUTPUT}")


def quick_note(cfg: Config) -> str:
    """What --quick left out, from the two configs themselves, and where the full run's figures are."""
    full = load_config(embedded_config_path())

    def steps(c: Config) -> str:
        decoder = c.optim.epochs * (c.data.synthetic_size // (c.train.global_batch or c.train.batch_size))
        return f"{c.pretrain.steps:,} pretraining and {decoder:,} decoder steps"

    return (f"this was --quick: {steps(cfg)} instead of {steps(full)}, {cfg.benchmark.count} held-out images "
            f"instead of {full.benchmark.count}, so its figures are smaller than the full run's; `python -m "
            "mgca.train` gives those (docs/results.md, \"The synthetic miniature\", has them with their commands)")


def embedded_config_path() -> Path:
    """The packaged config of the embedded default run (tiny CLIP, synthetic data)."""
    return Path(__file__).with_name("configs") / "embedded.yaml"


def config_from_args(args: argparse.Namespace) -> Config:
    """The run's config: --config (else the embedded default), then the overrides and the shortcut flags."""
    config_path = args.config or embedded_config_path()
    if getattr(args, "quick", False) and args.config is not None:
        raise ConfigError("--quick shortens the embedded default; it does not apply to --config (set that file's "
                          "steps instead)")
    overrides = [*QUICK_OVERRIDES] if getattr(args, "quick", False) else []
    overrides += list(args.overrides)
    overrides += [f"backbone.arch={args.clip}"] if args.clip else []
    overrides += [f"backbone.checkpoint={args.weights}"] if args.weights else []
    overrides += ["backbone.trust_torchscript=true"] if args.trust_torchscript else []
    overrides += ["train.overwrite=true"] if args.overwrite else []
    if args.config is None:
        changed = f", with {' '.join(overrides)}" if overrides else ""
        print(f"mgca.train: no --config given, running the embedded default ({config_path.name}: a tiny "
              "CLIP pretrained on "
              f"synthetic pairs, then the MGCA decoder on top, then the synthetic benchmark{changed})", flush=True)
    return load_config(config_path, overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> None:
        cfg = config_from_args(args)
        check_output_dir(cfg)  # before the CLIP pretraining, not only before the decoder training
        train(cfg)
        if args.quick:
            print(f"mgca.train: {quick_note(cfg)}", flush=True)

    return run_cli("mgca.train", run, interrupted="interrupted; resume with train.resume=auto")


if __name__ == "__main__":
    sys.exit(main())
