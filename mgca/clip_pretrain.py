"""Pretrain a tiny CLIP contrastively on the synthetic image-caption pairs.

No real CLIP weights exist on the machines this project is built on, and a randomly
initialised frozen CLIP teaches a decoder nothing. So the embedded default first gives itself
a CLIP the way OpenAI did, at toy scale: an open_clip `CLIP` trained with the symmetric InfoNCE
loss on generated "a red circle next to a blue square" pairs. The result is saved as an ordinary
open_clip state dict and loaded back through the same path as real weights
(`backbone.checkpoint`), so everything downstream runs exactly as it would with ViT-B/16.

The weights are cached under `pretrain.cache_dir`, keyed by a hash of everything that shapes
them (architecture and pretraining config): a second run reuses them in a second.
"""
from __future__ import annotations

import hashlib
import json
import math
import pickle
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import atomic_torch_save
from .clip_backbone import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, model_config
from .config import PretrainConfig, SyntheticWorldConfig, config_to_dict
from .device import resolve_precision_name
from .evalsets.specs import SYNTHETIC_BACKDROPS, SYNTHETIC_OBJECTS
from .pairs.synthetic import CLASS_NAMES, SyntheticCaptions, article, world_look
from .schedule import warmup_cosine


@dataclass(frozen=True)
class PretrainReport:
    """What pretraining produced and how good the CLIP is at the image level."""

    path: Path
    cached: bool
    seconds: float
    zero_shot_accuracy: float  # single-object images, over every colour x shape class
    backdrop_accuracy: float  # the same images' backdrop texture, over the textures ("stuff")
    first_loss: float | None = None
    last_loss: float | None = None

    def describe(self) -> str:
        how = "reused cached weights" if self.cached else (
            f"trained in {self.seconds:.0f} s, contrastive loss {self.first_loss:.3f} -> {self.last_loss:.3f}")
        return (f"tiny CLIP {self.path} ({how}); zero-shot accuracy on held-out single-object images: "
                f"{100 * self.zero_shot_accuracy:.1f}% over {len(SYNTHETIC_OBJECTS)} colour-shape classes, "
                f"{100 * self.backdrop_accuracy:.1f}% over {len(SYNTHETIC_BACKDROPS)} backdrop textures")


def pretrain_precision(cfg: PretrainConfig) -> str:
    """The precision pretraining runs in on this CPU: `auto` resolved (bf16 only where the CPU computes it
    natively), so a bf16 and an fp32 CLIP never share a cache entry."""
    return resolve_precision_name(cfg.precision, torch.device("cpu"))


def cache_path(arch: str, cfg: PretrainConfig, world: SyntheticWorldConfig | None = None) -> Path:
    """Where the weights for (arch, cfg, world) live; the name changes whenever anything that shapes them does."""
    world = world or SyntheticWorldConfig()
    settings = {**config_to_dict(cfg), "precision": pretrain_precision(cfg)}
    recipe = {"arch": arch, "model": model_config(arch), "world": config_to_dict(world),
              "pretrain": {k: v for k, v in settings.items() if k not in ("enabled", "cache_dir")}}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.cache_dir) / f"{arch}-synthetic-{digest}.pt"


def _normalise(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 with CLIP's mean/std."""
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def render(source: SyntheticCaptions, indices: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """Pairs `indices` of `source`: (N, H, W, 3) uint8 images and their captions."""
    pairs = [source[int(index)] for index in indices]
    return np.stack([np.asarray(image) for image, _ in pairs]), [caption for _, caption in pairs]


def zero_shot_accuracy(model: torch.nn.Module, tokenizer, image_size: int, seed: int,
                       count: int = 400, world: SyntheticWorldConfig | None = None) -> tuple[float, float]:
    """Top-1 on held-out single-object images: (object over all colour x shape classes, backdrop texture).

    Is the CLIP any good at the image level? Real CLIP is strong here and weak per pixel. The images have
    the look of `world` (backdrop contrast, turns), one shape each.
    """
    world = world or SyntheticWorldConfig()
    source = SyntheticCaptions(count, image_size, seed=seed, max_objects=1, **world_look(world))
    backdrops = len(SYNTHETIC_BACKDROPS)  # generator classes: backdrops first, then objects
    images, objects, textures = [], [], []
    for index in range(count):
        sample = source.render(index)
        values = np.bincount(sample.mask.ravel(), minlength=len(CLASS_NAMES))
        images.append(np.asarray(sample.image))
        objects.append(int(values[backdrops:].argmax()))
        textures.append(int(values[:backdrops].argmax()))
    model.eval()
    with torch.no_grad():
        image = model.encode_image(_normalise(np.stack(images)), normalize=True)
        scores = []
        for names in (SYNTHETIC_OBJECTS, SYNTHETIC_BACKDROPS):
            text = model.encode_text(tokenizer([f"{article(name)} {name}" for name in names]), normalize=True)
            scores.append((image @ text.t()).argmax(dim=1).numpy())
    return float((scores[0] == np.asarray(objects)).mean()), float((scores[1] == np.asarray(textures)).mean())


def load_cached_weights(model: torch.nn.Module, path: Path) -> bool:
    """Load cached weights into `model`: True when they were there and whole. A damaged file (an interrupted copy,
    a full disk) is removed with a one-line notice, so the caller pretrains again instead of failing."""
    if not path.is_file():
        return False
    try:
        model.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
        return True
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as err:
        reason = " ".join(str(err).split())[:120]
        print(f"mgca: the cached tiny CLIP {path} is unreadable ({type(err).__name__}: {reason}); pretraining it "
              "again", file=sys.stderr, flush=True)
        path.unlink(missing_ok=True)
        return False


def pretrain_clip(arch: str, cfg: PretrainConfig, world: SyntheticWorldConfig | None = None,
                  progress: bool = True) -> PretrainReport:
    """Train (or reuse) a tiny CLIP on synthetic pairs of `world`; returns where its open_clip weights are.

    With `pool_size` 0 every step draws fresh pairs (the generator is index-addressable, so the
    stream is still repeatable); otherwise steps sample from `pool_size` pairs rendered once.
    """
    world = world or SyntheticWorldConfig()
    path = cache_path(arch, cfg, world)
    arch_cfg = model_config(arch)
    image_size = int(arch_cfg["vision_cfg"]["image_size"])
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=int(arch_cfg["text_cfg"].get("context_length", 77)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = open_clip.CLIP(**arch_cfg)
    if load_cached_weights(model, path):
        return PretrainReport(path, True, 0.0, *zero_shot_accuracy(model, tokenizer, image_size, cfg.seed + 1,
                                                                   world=world))

    start = time.perf_counter()
    source = SyntheticCaptions.from_world(world, max(cfg.pool_size, cfg.steps * cfg.batch_size), image_size, cfg.seed)
    pool = render(source, range(cfg.pool_size)) if cfg.pool_size else None
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps))
    losses: list[float] = []
    model.train()
    bar = tqdm(range(cfg.steps), desc="pretrain tiny CLIP", unit="step", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    for step in bar:
        if pool is None:
            images, captions = render(source, range(step * cfg.batch_size, (step + 1) * cfg.batch_size))
        else:
            index = torch.randint(cfg.pool_size, (cfg.batch_size,), generator=generator).numpy()
            images, captions = pool[0][index], [pool[1][i] for i in index]
        batch = _normalise(images)
        flip = torch.rand(cfg.batch_size, generator=generator) < 0.5  # captions never say left or right
        batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=pretrain_precision(cfg) == "bf16"):
            image_features, text_features, logit_scale = model(batch, tokenizer(captions))
        logits = logit_scale * image_features.float() @ text_features.float().t()
        target = torch.arange(cfg.batch_size)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()
    atomic_torch_save(path, model.state_dict())
    accuracy = zero_shot_accuracy(model, tokenizer, image_size, cfg.seed + 1, world=world)
    window = max(1, min(20, len(losses) // 5))
    return PretrainReport(path, False, time.perf_counter() - start, *accuracy,
                          float(np.mean(losses[:window])), float(np.mean(losses[-window:])))
