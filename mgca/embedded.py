"""The stages around decoder training that make `python -m mgca.train` an end-to-end run.

Before: give the run a CLIP when it has none (a tiny one pretrained on synthetic pairs, cached).
After: score frozen features against the trained decoder on the synthetic benchmark and draw
the comparison. Both are switched by config (`pretrain.enabled`, `benchmark.enabled`), which the
embedded default turns on; with real weights (`--clip ViT-B-16 --weights FILE`) pretraining is
skipped and the decoder trains on them exactly as it would on the tiny CLIP.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from runtime.files import check_writable_dir

from .config import Config, ConfigError


def ensure_clip_weights(cfg: Config, progress: bool = True) -> str | None:
    """Point `cfg.backbone.checkpoint` at pretrained tiny-CLIP weights when pretraining is on and none are given.

    Returns a one-line description of what happened (None when nothing was done).
    """
    if not cfg.pretrain.enabled or cfg.backbone.checkpoint is not None:
        return None
    from .clip_pretrain import cache_path, pretrain_clip

    cached = cache_path(cfg.backbone.arch, cfg.pretrain, cfg.data.synthetic).is_file()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not cached:
        raise ConfigError("pretrain.enabled under torchrun: pretrain the tiny CLIP once in a single process first "
                          "(python -m mgca.train with the same config), then launch torchrun")
    if not cached:  # now, not after the pretraining, whose weights would be lost (a read-only working folder)
        check_writable_dir(Path(cfg.pretrain.cache_dir).absolute(), "pretrain.cache_dir (where the pretrained CLIP "
                           "is kept)")
    report = pretrain_clip(cfg.backbone.arch, cfg.pretrain, cfg.data.synthetic, progress=progress)
    # Absolute: the checkpoint records it, and may be used from elsewhere.
    cfg.backbone.checkpoint = str(report.path.resolve())
    return report.describe()


def benchmark_root(cfg: Config) -> Path:
    return Path(cfg.benchmark.root) if cfg.benchmark.root else Path(cfg.train.output_dir) / "synthetic_benchmark"


PICTURES = {"synthetic": "segmentation.png", "synthetic-stuff": "segmentation_stuff.png"}


def run_benchmark(cfg: Config, model, device: torch.device, output_dir: Path,
                  progress: bool = True) -> tuple[str, Path, list[Path]]:
    """Write (or reuse) the held-out benchmark, score frozen features and the decoder, save JSON and the pictures.

    Returns (printed table, JSON path, picture paths: the objects protocol, then every pixel with the backdrops).
    """
    from .evalsets import get_spec, open_dataset
    from .inference import InferenceConfig, SegmentationPredictor
    from .pairs.synthetic import world_look, write_benchmark
    from .plotting import plot_segmentation_grid
    from .quality import DECODER, FROZEN, frozen_baseline, quality_table

    bench = cfg.benchmark
    root = write_benchmark(benchmark_root(cfg), bench.count, bench.image_size, bench.seed, progress=progress,
                           **world_look(cfg.data.synthetic))
    settings = InferenceConfig(**get_spec("synthetic").protocol.settings(
        short_side=bench.short_side, window=bench.window, stride=bench.stride, templates=bench.templates))
    table = quality_table(model, root, settings, tuple(bench.units), device, progress=progress)
    json_path = table.save(output_dir / "benchmark.json")

    units = max(bench.units)
    config = InferenceConfig(**{**settings.to_dict(), "units": units})
    predictors = [SegmentationPredictor(m, config, device) for m in (frozen_baseline(model), model)]
    shown = range(min(4, bench.count))
    # Both pictures show the same images: embed each once per model, then query each picture's vocabulary.
    images = [open_dataset("synthetic", root)[index].image for index in shown]
    embedded = [[predictor.embed(image) for predictor in predictors] for image in images]
    pictures = []
    for spec_name, file_name in PICTURES.items():
        # Each picture shows what its protocol scores: the objects protocol (like VOC20) names only the shapes
        # and leaves backdrop pixels unscored, so they are left uncoloured there; the stuff one colours every pixel.
        dataset = open_dataset(spec_name, root)
        ignore = dataset.spec.ignore_index
        for predictor in predictors:
            predictor.set_classes(dataset.spec.prompt_classes)
        rows = []
        for index, image, embeddings in zip(shown, images, embedded, strict=True):
            label = dataset[index].label
            predictions = [np.where(label != ignore, p.labels_from_embedding(*e), ignore)
                           for p, e in zip(predictors, embeddings, strict=True)]
            rows.append((image, label, *predictions))
        scope = "objects only" if spec_name == "synthetic" else "every pixel"
        columns = ("image", f"ground truth ({scope})", f"{FROZEN.split(' (')[0]} ({units} units)",
                   f"{DECODER} ({units} units)")
        pictures.append(plot_segmentation_grid(rows, columns, dataset.spec.classes, output_dir / file_name,
                                               ignore_index=ignore))
    return table.format(), json_path, pictures
