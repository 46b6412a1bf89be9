"""Does the tiny CLIP see "stuff"? Its backdrop-texture confusion matrix, at the world's texture contrast and above.

    python benchmarks/stuff_probe.py --clip runs/clip_cache/mgca-synth-synthetic-fb415d7f0769.pt

Issue 28's first step ("a confusion matrix first"): zero-shot over the 4 backdrop textures on held-out
single-object images, as `mgca.clip_pretrain.zero_shot_accuracy` scores them, broken down by true and predicted
texture, and repeated with stronger textures than the world draws (is the texture invisible to the CLIP, or
merely faint?).

Measured on the embedded default's CLIP (fb415d7f0769: 84.2% zero-shot over objects; AMD EPYC, 2 cores, seconds):
backdrop zero-shot 25.2% / 25.0% / 23.8% at texture contrast 0.35 (the world's) / 0.7 / 1.0, chance 25%. Every
row of the confusion matrix (true noisy, striped, checkered, gradient) has the same spread over the predictions
(about 5 / 17 / 43 / 35% noisy / striped / checkered / gradient): the prediction does not depend on the
backdrop at all, even at full contrast. So the image embedding carries no backdrop information the text side
can read, not a weak one: the levers are what makes the contrastive loss need the backdrop (how often captions
name it, hard negatives that differ only in it), not how strongly it is drawn.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def confusion(clip_path: Path, contrast: float, count: int, seed: int, max_rotation: float) -> np.ndarray:
    """count x count-of-backdrops confusion matrix (rows: true texture, columns: predicted)."""
    import open_clip
    import torch

    from mgca.clip_backbone import model_config
    from mgca.clip_pretrain import _normalise, load_cached_weights
    from mgca.evalsets.specs import SYNTHETIC_BACKDROPS
    from mgca.pairs.synthetic import CLASS_NAMES, SyntheticCaptions, article

    cfg = model_config("mgca-synth")
    model = open_clip.CLIP(**cfg)
    if not load_cached_weights(model, clip_path):
        raise SystemExit(f"{clip_path} holds no mgca-synth CLIP; run `python -m mgca.train` first")
    model.eval()
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=int(cfg["text_cfg"].get("context_length", 77)))
    backdrops = len(SYNTHETIC_BACKDROPS)
    source = SyntheticCaptions(count, int(cfg["vision_cfg"]["image_size"]), seed=seed, max_objects=1,
                               texture_contrast=contrast, max_rotation=max_rotation)
    images, truth = [], []
    for index in range(count):
        sample = source.render(index)
        images.append(np.asarray(sample.image))
        truth.append(int(np.bincount(sample.mask.ravel(), minlength=len(CLASS_NAMES))[:backdrops].argmax()))
    with torch.no_grad():
        text = model.encode_text(tokenizer([f"{article(n)} {n}" for n in SYNTHETIC_BACKDROPS]), normalize=True)
        image = model.encode_image(_normalise(np.stack(images)), normalize=True)
        predicted = (image @ text.t()).argmax(1).numpy()
    matrix = np.zeros((backdrops, backdrops), dtype=int)
    np.add.at(matrix, (np.asarray(truth), predicted), 1)
    return matrix


def main(argv: list[str] | None = None) -> int:
    from mgca.evalsets.specs import SYNTHETIC_BACKDROPS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, required=True, help="cached tiny CLIP (runs/clip_cache/*.pt)")
    parser.add_argument("--contrasts", type=float, nargs="+", default=[0.35, 0.7, 1.0],
                        help="texture contrasts to draw (the embedded world's is 0.35)")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--max-rotation", type=float, default=15.0, help="the world's turns (embedded: 15)")
    args = parser.parse_args(argv)
    names = [n.split()[0] for n in SYNTHETIC_BACKDROPS]
    for contrast in args.contrasts:
        matrix = confusion(args.clip, contrast, args.count, args.seed, args.max_rotation)
        print(f"texture contrast {contrast}: backdrop zero-shot {100 * np.trace(matrix) / matrix.sum():.1f}% "
              f"(chance {100 / len(names):.0f}%)")
        print("  true \\ predicted " + " ".join(f"{n:>9}" for n in names))
        for name, row in zip(names, matrix, strict=True):
            print(f"  {name:>17} " + " ".join(f"{v:>9d}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
