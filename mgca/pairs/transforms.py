"""Image transforms: the paper's 224x224 random resized crop, an eval resize + centre crop.

Both are plain PIL + numpy and take an explicit `rng`, so a sample's crop is a function of
(seed, epoch, sample) rather than of global torch RNG state: the same crop whichever worker or
rank loads it, and the same again when a run resumes mid-epoch. (No torchvision needed.)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from runtime.contract import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from ..config import DataConfig


def to_normalized_tensor(image: Image.Image, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """(3, H, W) float32, (x / 255 - mean) / std, from an RGB PIL image."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    return torch.from_numpy((array - mean) / std)


class RandomResizedCropNormalize:
    """RandomResizedCrop to `size` (torchvision's sampling rule, bicubic like CLIP), then normalise."""

    takes_rng = True  # called as transform(image, rng)

    def __init__(self, size: int, scale: Sequence[float] = (0.5, 1.0), mean: Sequence[float] = OPENAI_CLIP_MEAN,
                 std: Sequence[float] = OPENAI_CLIP_STD, ratio: Sequence[float] = (3 / 4, 4 / 3)):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        self.size, self.scale, self.ratio = int(size), (float(scale[0]), float(scale[1])), tuple(ratio)
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    def crop_box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(left, top, right, bottom): torchvision's 10 tries at a random area/aspect, else a centre crop."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
                return x, y, x + w, y + h
        aspect = width / height  # fallback as torchvision: clamp the aspect, centre crop
        if aspect < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        x, y = (width - w) // 2, (height - h) // 2
        return x, y, x + w, y + h

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        rng = rng if rng is not None else np.random.default_rng()
        image = image.convert("RGB")
        box = self.crop_box(*image.size, rng)
        image = image.resize((self.size, self.size), Image.BICUBIC, box=box, reducing_gap=3.0)
        return to_normalized_tensor(image, self.mean, self.std)

    def __repr__(self) -> str:
        return f"RandomResizedCropNormalize(size={self.size}, scale={self.scale})"


class ResizeCenterCropNormalize:
    """Shorter side to `size` (bicubic), centre crop `size` x `size`, normalise: CLIP's eval preprocessing."""

    takes_rng = True  # accepts (and ignores) rng, so datasets can treat both transforms alike

    def __init__(self, size: int, mean: Sequence[float] = OPENAI_CLIP_MEAN, std: Sequence[float] = OPENAI_CLIP_STD):
        self.size = int(size)
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        image = image.convert("RGB")
        width, height = image.size
        scale = self.size / min(width, height)
        new_w, new_h = max(self.size, round(width * scale)), max(self.size, round(height * scale))
        image = image.resize((new_w, new_h), Image.BICUBIC, reducing_gap=3.0)
        left, top = (new_w - self.size) // 2, (new_h - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        return to_normalized_tensor(image, self.mean, self.std)

    def __repr__(self) -> str:
        return f"ResizeCenterCropNormalize(size={self.size})"


def apply_transform(transform: Callable[..., Any] | None, image: Image.Image, rng: np.random.Generator) -> Any:
    """Call `transform` with the sample's rng when it takes one (ours do), else plainly (e.g. torchvision's)."""
    if transform is None:
        return image
    if getattr(transform, "takes_rng", False):
        return transform(image, rng)
    return transform(image)


def build_train_transform(cfg: DataConfig, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                          std: Sequence[float] = OPENAI_CLIP_STD) -> RandomResizedCropNormalize:
    """The paper's only augmentation: a random resized crop to `cfg.image_size` (area in `cfg.crop_scale`)."""
    return RandomResizedCropNormalize(cfg.image_size, cfg.crop_scale, mean, std)


def build_eval_transform(cfg: DataConfig, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                         std: Sequence[float] = OPENAI_CLIP_STD) -> ResizeCenterCropNormalize:
    return ResizeCenterCropNormalize(cfg.image_size, mean, std)
