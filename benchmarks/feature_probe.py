"""Diagnostic: how much class information sits in which frozen CLIP features of the synthetic world?

    python benchmarks/feature_probe.py --clip runs/clip_cache/mgca-synth-synthetic-<hash>.pt

A linear probe per feature set (the decoder's 64-d MaskCLIP input, its pre-projection width, the
last block's input, and every block concatenated) is fitted on patch labels of generated images and
scored on held-out ones: objects, colour and shape accuracy per patch. Masks are used here, in a
diagnostic, and never in training. It bounds what any decoder reading those features can align.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgca.clip_backbone import build_backbone
from mgca.clip_pretrain import _normalise
from mgca.config import BackboneConfig, load_config
from mgca.dense_modes import DENSE_MODES
from mgca.pairs.synthetic import CLASS_NAMES, SHAPES, SyntheticCaptions
from mgca.train import embedded_config_path

BACKDROPS = sum(name.endswith("background") for name in CLASS_NAMES)


def render(world, count: int, seed: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    source = SyntheticCaptions.from_world(world, count, image_size, seed)
    samples = [source.render(i) for i in range(count)]
    images = _normalise(np.stack([np.asarray(s.image) for s in samples]))
    return images, torch.from_numpy(np.stack([s.mask for s in samples])).long()


@torch.no_grad()
def feature_sets(backbone, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, L, C) patch features of each set, CLS dropped."""
    visual = backbone.clip.visual
    x, tower, (grid_h, grid_w) = backbone.tower_input(images)
    hidden = tower.hidden_states(x, len(tower.blocks) - 1)
    last = DENSE_MODES["maskclip"](tower, x, (grid_h, grid_w))
    width = visual.ln_post(last)
    sets = {f"MaskCLIP output {visual.proj.shape[1]}-d (decoder input)": width @ visual.proj,
            f"MaskCLIP pre-projection {width.shape[-1]}-d": width,
            f"last block's input {hidden[-1].shape[-1]}-d": hidden[-1],
            f"every block concatenated {width.shape[-1] * (len(hidden) + 1)}-d": torch.cat([*hidden, last], -1)}
    return {name: features[:, 1:] for name, features in sets.items()}


def probe(train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, steps: int = 300) -> torch.Tensor:
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    linear = torch.nn.Linear(train.shape[1], len(CLASS_NAMES))
    optimizer = torch.optim.Adam(linear.parameters(), 1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(linear(train), labels).backward()
        optimizer.step()
    with torch.no_grad():
        return linear(test).argmax(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", required=True, help="tiny CLIP weights (mgca-synth)")
    parser.add_argument("--train-images", type=int, default=1200)
    parser.add_argument("--test-images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(embedded_config_path())
    backbone = build_backbone(BackboneConfig(arch=cfg.backbone.arch, checkpoint=args.clip)).eval()
    size = int(cfg.data.image_size)
    patch = backbone.patch_size
    train_images, train_masks = render(cfg.data.synthetic, args.train_images, 123, size)
    test_images, test_masks = render(cfg.data.synthetic, args.test_images, 10_000, size)

    def patch_labels(masks: torch.Tensor) -> torch.Tensor:  # the class under each patch centre
        return masks[:, patch // 2::patch, patch // 2::patch].reshape(-1)

    train_labels, test_labels = patch_labels(train_masks), patch_labels(test_masks)
    train_sets = [feature_sets(backbone, train_images[i:i + 100]) for i in range(0, len(train_images), 100)]
    test_sets = [feature_sets(backbone, test_images[i:i + 100]) for i in range(0, len(test_images), 100)]
    shapes = len(SHAPES)
    print(f"linear probe per patch, {args.train_images} / {args.test_images} images; "
          f"chance: colour {100 / ((len(CLASS_NAMES) - BACKDROPS) // shapes):.1f}%, shape {100 / shapes:.0f}%")
    print(f"{'features':<44}{'objects':>9}{'colour':>9}{'shape':>9}")
    for name in train_sets[0]:
        train = torch.cat([f[name] for f in train_sets]).flatten(0, 1)
        test = torch.cat([f[name] for f in test_sets]).flatten(0, 1)
        predicted = probe(train, train_labels, test)
        on_object = test_labels >= BACKDROPS
        truth, guess = test_labels[on_object] - BACKDROPS, predicted[on_object] - BACKDROPS
        scores = [(truth == guess), (truth // shapes == guess // shapes), (truth % shapes == guess % shapes)]
        print(f"{name:<44}" + "".join(f"{100 * s.float().mean():9.1f}" for s in scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
