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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import atomic_torch_save
from .clip_backbone import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, model_config
from .config import PretrainConfig, config_to_dict
from .pairs.synthetic import SYNTHETIC_OBJECTS, SyntheticCaptions, benchmark_label
from .schedule import warmup_cosine


@dataclass(frozen=True)
class PretrainReport:
    """What pretraining produced and how good the CLIP is at the image level."""

    path: Path
    cached: bool
    seconds: float
    zero_shot_accuracy: float  # single-object images, over every colour x shape class
    first_loss: float | None = None
    last_loss: float | None = None

    def describe(self) -> str:
        how = "reused cached weights" if self.cached else (
            f"trained in {self.seconds:.0f} s, contrastive loss {self.first_loss:.3f} -> {self.last_loss:.3f}")
        return (f"tiny CLIP {self.path} ({how}); zero-shot accuracy {100 * self.zero_shot_accuracy:.1f}% over "
                f"{len(SYNTHETIC_OBJECTS)} colour-shape classes")


def cache_path(arch: str, cfg: PretrainConfig) -> Path:
    """Where the weights for (arch, cfg) live; the name changes whenever anything that shapes them does."""
    recipe = {"arch": arch, "model": model_config(arch), "pretrain": {k: v for k, v in config_to_dict(cfg).items()
                                                                      if k not in ("enabled", "cache_dir")}}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.cache_dir) / f"{arch}-synthetic-{digest}.pt"


def _normalise(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 with CLIP's mean/std."""
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def render_pool(size: int, image_size: int, seed: int, progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """`size` synthetic pairs rendered once: (N, H, W, 3) uint8 images and their captions."""
    source = SyntheticCaptions(size, image_size, seed=seed)
    images = np.empty((size, image_size, image_size, 3), np.uint8)
    captions = []
    for index in tqdm(range(size), desc="render pairs", unit="img", disable=not progress, file=sys.stderr, leave=False):
        image, caption = source[index]
        images[index] = np.asarray(image)
        captions.append(caption)
    return images, captions


def zero_shot_accuracy(model: torch.nn.Module, tokenizer, image_size: int, seed: int, count: int = 400) -> float:
    """Top-1 over all colour x shape classes on held-out single-object images: is the CLIP any good?"""
    source = SyntheticCaptions(count, image_size, seed=seed, max_objects=1)
    images, targets = [], []
    for index in range(count):
        sample = source.render(index)
        label = benchmark_label(sample.mask)  # object classes, backdrop 255
        images.append(np.asarray(sample.image))
        targets.append(int(np.bincount(label[label != 255]).argmax()))
    model.eval()
    with torch.no_grad():
        text = model.encode_text(tokenizer([f"a {name}" for name in SYNTHETIC_OBJECTS]), normalize=True)
        image = model.encode_image(_normalise(np.stack(images)), normalize=True)
    predicted = (image @ text.t()).argmax(dim=1).numpy()
    return float((predicted == np.asarray(targets)).mean())


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


def pretrain_clip(arch: str, cfg: PretrainConfig, progress: bool = True) -> PretrainReport:
    """Train (or reuse) a tiny CLIP on synthetic pairs; returns where its open_clip weights are."""
    path = cache_path(arch, cfg)
    arch_cfg = model_config(arch)
    image_size = int(arch_cfg["vision_cfg"]["image_size"])
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=int(arch_cfg["text_cfg"].get("context_length", 77)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = open_clip.CLIP(**arch_cfg)
    if load_cached_weights(model, path):
        return PretrainReport(path, True, 0.0, zero_shot_accuracy(model, tokenizer, image_size, cfg.seed + 1))

    start = time.perf_counter()
    images, captions = render_pool(cfg.pool_size, image_size, cfg.seed, progress)
    tokens = tokenizer(captions)
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps))
    losses: list[float] = []
    model.train()
    bar = tqdm(range(cfg.steps), desc="pretrain tiny CLIP", unit="step", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    for _ in bar:
        index = torch.randint(len(captions), (cfg.batch_size,), generator=generator)
        batch = _normalise(images[index.numpy()])
        flip = torch.rand(cfg.batch_size, generator=generator) < 0.5  # captions never say left or right
        batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        image_features, text_features, logit_scale = model(batch, tokens[index])
        logits = logit_scale * image_features @ text_features.t()
        target = torch.arange(len(index))
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
    accuracy = zero_shot_accuracy(model, tokenizer, image_size, cfg.seed + 1)
    window = max(1, min(20, len(losses) // 5))
    return PretrainReport(path, False, time.perf_counter() - start, accuracy,
                          float(np.mean(losses[:window])), float(np.mean(losses[-window:])))
