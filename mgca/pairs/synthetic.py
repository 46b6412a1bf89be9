"""Generated image-caption pairs with ground-truth masks: coloured shapes on simple textures.

Training and tests need data that exists offline and whose captions really describe the image,
so the decoder has something learnable; the masks let eval tests score segmentation against a
known answer. Sample `i` depends only on (seed, i, image_size): index-addressable and repeatable.
"""
from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from ..config import SyntheticWorldConfig
from ..evalsets.specs import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_COLORS,
    SYNTHETIC_SHAPES,
    SYNTHETIC_TEXTURES,
)

CLASS_NAMES = SYNTHETIC_CLASSES  # mask value k means CLASS_NAMES[k]: "<texture> background" or "<colour> <shape>"
SHAPES = SYNTHETIC_SHAPES
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 180, 50),
    "blue": (35, 70, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 50, 180),
    "orange": (245, 140, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
# texture -> its caption adjective
TEXTURES = dict(zip(("noise", "stripes", "checker", "gradient"), SYNTHETIC_TEXTURES, strict=True))
assert tuple(COLORS) == SYNTHETIC_COLORS


@dataclass(frozen=True)
class SyntheticSample:
    image: Image.Image  # RGB, image_size x image_size
    caption: str
    mask: np.ndarray  # (H, W) uint8, indices into class_names
    class_names: tuple[str, ...]


def _texture(kind: str, size: int, rng: np.random.Generator, contrast: float = 1.0) -> np.ndarray:
    """A muted (H, W, 3) uint8 background, so the saturated shapes stand out.

    `contrast` scales the pattern's swing (stripes, checks, grain, gradient) around the base colour:
    at 1 a stripe edge is as strong as a shape's edge, at 0 every backdrop is plain.
    """
    base = rng.uniform(70, 170, size=3).astype(np.float32)
    swing = rng.choice([-1, 1], size=3) * rng.uniform(30, 60, size=3) * contrast
    other = np.clip(base + swing, 0, 255).astype(np.float32)
    coords = np.arange(size, dtype=np.float32) / size
    xx, yy = coords[None, :], coords[:, None]
    if kind == "noise":
        half = (size + 1) // 2  # 2x2-pixel grain: cheap to draw
        grain = base + np.float32(80 * contrast) * (rng.random((half, half, 3), dtype=np.float32) - np.float32(0.5))
        return np.clip(grain, 0, 255).astype(np.uint8).repeat(2, axis=0).repeat(2, axis=1)[:size, :size]
    if kind in ("stripes", "checker"):
        if kind == "stripes":
            period, angle = rng.uniform(0.08, 0.2), rng.uniform(0, math.pi)
            odd = (np.floor((xx * math.cos(angle) + yy * math.sin(angle)) / period) % 2).astype(bool)
        else:
            cell = rng.uniform(0.08, 0.2)
            odd = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(bool)
        return np.where(odd[..., None], other.astype(np.uint8), base.astype(np.uint8))
    angle = rng.uniform(0, 2 * math.pi)  # gradient
    t = xx * math.cos(angle) + yy * math.sin(angle)
    weight = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return (base + (other - base) * weight[..., None]).astype(np.uint8)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        points = [(0.85 * r * math.cos(angle + k * math.pi / 2 + math.pi / 4),
                   0.85 * r * math.sin(angle + k * math.pi / 2 + math.pi / 4)) for k in range(4)]
    elif shape == "triangle":
        points = [(r * math.cos(angle + k * 2 * math.pi / 3 - math.pi / 2),
                   r * math.sin(angle + k * 2 * math.pi / 3 - math.pi / 2)) for k in range(3)]
    elif shape == "star":
        points = [((r if k % 2 == 0 else 0.45 * r) * math.cos(angle + k * math.pi / 5 - math.pi / 2),
                   (r if k % 2 == 0 else 0.45 * r) * math.sin(angle + k * math.pi / 5 - math.pi / 2))
                  for k in range(10)]
    elif shape == "diamond":
        points = [(0.6 * r * math.cos(k * math.pi / 2), r * math.sin(k * math.pi / 2)) for k in range(4)]
    else:
        raise ValueError(f"unknown shape {shape!r}; one of {SHAPES}")
    return [(cx + x, cy + y) for x, y in points]


_COLORS, _SHAPES, _TEXTURES = ("|".join(names) for names in (SYNTHETIC_COLORS, SYNTHETIC_SHAPES, SYNTHETIC_TEXTURES))
_PHRASE = re.compile(rf"\b(?:({_COLORS}) ({_SHAPES})|({_TEXTURES}) background)\b")
PHRASE_TEMPLATES = (lambda phrase: f"{article(phrase)} {phrase}",)  # the captions' own wording: "a red circle"


def caption_phrases(caption: str) -> list[str]:
    """The object phrases of a generated caption ("red circle", "striped background"): its exact nouns.

    The noun-prompt augmentation of synthetic captions uses these in the captions' own wording
    (PHRASE_TEMPLATES), the way GroupViT puts CC nouns into CLIP's ImageNet templates: each is the
    class vocabulary of the synthetic benchmark.
    """
    return [" ".join(part for part in match.groups() if part) + ("" if match.group(1) else " background")
            for match in _PHRASE.finditer(caption)]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class CaptionStyle:
    """How a generated caption describes its image: which objects it names, and in what words.

    Real alt-text names some of what an image shows, in many phrasings; a caption that always names
    everything in one fixed form makes global alignment easy and teaches little about wording.
    """

    backdrop: float = 1 / 3  # probability that the caption names the backdrop texture ("on a striped background")
    partial: float = 0.0  # probability that a multi-object caption names only a random non-empty subset
    varied: bool = False  # many wordings (prefixes, joiners, backdrop first or last) instead of three fixed forms

    def __post_init__(self) -> None:
        for name in ("backdrop", "partial"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"CaptionStyle.{name} is a probability in [0, 1], got {getattr(self, name)}")


_PREFIXES = ("", "a picture of ", "a photo of ", "an image of ", "there is ", "a drawing of ")
_JOINERS = (" and ", " next to ", " beside ", " with ", " near ")


def _listed(phrases: list[str], joiner: str) -> str:
    if len(phrases) == 1:
        return phrases[0]
    if len(phrases) == 2:
        return f"{phrases[0]}{joiner}{phrases[1]}"
    return f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def _caption(objects: list[tuple[str, str]], texture: str, style: CaptionStyle, rng: np.random.Generator) -> str:
    """A short natural caption naming the shapes (all, or a subset) with their colours, sometimes the texture."""
    if len(objects) > 1 and rng.random() < style.partial:
        keep = int(rng.integers(1, len(objects)))  # a strict, non-empty subset
        objects = [objects[i] for i in sorted(rng.permutation(len(objects))[:keep])]
    phrases = [f"{article(color)} {color} {shape}" for color, shape in objects]
    adjective = TEXTURES[texture]
    with_backdrop = rng.random() < style.backdrop
    if not style.varied:
        form = int(rng.integers(3))
        background = f" on {article(adjective)} {adjective} background" if with_backdrop else ""
        joiner = (" next to ", " and ", " beside ")[form]
        prefix = "a picture of " if form == 2 and len(phrases) != 2 else ""
        return f"{prefix}{_listed(phrases, joiner)}{background}"
    listed = _listed(phrases, _JOINERS[int(rng.integers(len(_JOINERS)))])
    prefix = _PREFIXES[int(rng.integers(len(_PREFIXES)))]
    if not with_backdrop:
        return f"{prefix}{listed}"
    if rng.random() < 0.5:
        return f"{prefix}{listed} on {article(adjective)} {adjective} background"
    return f"{article(adjective)} {adjective} background with {listed}"


@dataclass(frozen=True)
class _Object:
    shape: str
    color: str
    cx: float
    cy: float
    r: float
    angle: float
    shade: tuple[int, int, int]  # per-channel jitter of the colour


VARIED = ("shape", "colour", "backdrop")  # what group member m (m >= 1) changes: VARIED[(m - 1) % 3]


def _vary(texture: str, objects: list[_Object], attribute: str,
          rng: np.random.Generator) -> tuple[str, list[_Object]]:
    """The same scene with every shape (or colour, or the backdrop texture) replaced by a different one."""
    def other(options: Sequence[str], current: str) -> str:
        choices = [o for o in options if o != current]
        return choices[int(rng.integers(len(choices)))]

    if attribute == "backdrop":
        return other(list(TEXTURES), texture), objects
    if attribute == "shape":
        return texture, [replace(o, shape=other(SHAPES, o.shape)) for o in objects]
    return texture, [replace(o, color=other(SYNTHETIC_COLORS, o.color)) for o in objects]


def world_look(world: SyntheticWorldConfig) -> dict[str, float]:
    """The settings that give a world's images their look (backdrop contrast, turns), as SyntheticCaptions keywords.

    Held-out images (the benchmark, the zero-shot check) take these from the training world but keep their own
    object counts and captions.
    """
    return {"texture_contrast": world.texture_contrast, "max_rotation": world.max_rotation}


class SyntheticCaptions:
    """`size` deterministic (image, caption) pairs; `render(i)` adds the ground-truth mask."""

    class_names = CLASS_NAMES

    def __init__(self, size: int = 512, image_size: int = 224, seed: int = 0, max_objects: int = 3, *,
                 min_objects: int = 1, style: CaptionStyle = CaptionStyle(), group_size: int = 1,
                 texture_contrast: float = 1.0, max_rotation: float = 180.0):
        if size <= 0:
            raise ValueError(f"synthetic size must be positive, got {size}")
        if not 1 <= min_objects <= max_objects <= 4:
            raise ValueError(f"objects per image must satisfy 1 <= min <= max <= 4 (one shape per image quadrant), "
                             f"got {min_objects}..{max_objects}")
        self.size, self.image_size, self.seed = size, image_size, seed
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if not 0.0 <= texture_contrast <= 1.0:
            raise ValueError(f"texture_contrast must be in [0, 1], got {texture_contrast}")
        self.min_objects, self.max_objects, self.style, self.group_size = min_objects, max_objects, style, group_size
        self.texture_contrast = texture_contrast
        if not 0.0 <= max_rotation <= 180.0:
            raise ValueError(f"max_rotation must be in [0, 180] degrees, got {max_rotation}")
        self.max_rotation = max_rotation

    @classmethod
    def from_world(cls, world: SyntheticWorldConfig, size: int, image_size: int, seed: int) -> SyntheticCaptions:
        """The pairs of a configured world (`data.synthetic`), e.g. for pretraining or decoder training."""
        style = CaptionStyle(world.caption_backdrop, world.caption_partial, world.caption_varied)
        return cls(size, image_size, seed, world.max_objects, min_objects=world.min_objects, style=style,
                   group_size=world.group_size, **world_look(world))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Image.Image, str]:
        sample = self.render(index)
        return sample.image, sample.caption

    def load(self, index: int) -> tuple[Image.Image, str]:
        """The pair-source protocol the caption datasets use (same as indexing)."""
        return self[index]

    def render(self, index: int) -> SyntheticSample:
        if not 0 <= index < self.size:
            raise IndexError(f"synthetic index {index} out of range [0, {self.size})")
        group, member = divmod(index, self.group_size)
        if self.group_size == 1:
            scene_rng = member_rng = np.random.default_rng([self.seed % 2**63, index])
        else:
            scene_rng = np.random.default_rng([self.seed % 2**63, group, 0])
            member_rng = np.random.default_rng([self.seed % 2**63, group, member + 1])
        texture, objects = self._scene(scene_rng)
        texture_rng = np.random.default_rng(scene_rng.integers(2**63))  # the same pixels for every group member
        if member:  # a hard negative of the group's first image: one attribute changed, the rest identical
            texture, objects = _vary(texture, objects, VARIED[(member - 1) % len(VARIED)], member_rng)
        names_backdrop = member == VARIED.index("backdrop") + 1  # else its caption could equal the first one's
        return self._paint(texture, objects, texture_rng, member_rng, force_backdrop=names_backdrop)

    def _scene(self, rng: np.random.Generator) -> tuple[str, list[_Object]]:
        """The backdrop texture and the shapes (kind, colour, place, size, turn, shade) of one image."""
        s = self.image_size
        texture = list(TEXTURES)[rng.integers(len(TEXTURES))]
        count = int(rng.integers(self.min_objects, self.max_objects + 1))
        cells = rng.permutation(4)[:count]  # one shape per quadrant: little overlap, every shape visible
        objects = []
        for cell in cells:
            shape = SHAPES[rng.integers(len(SHAPES))]
            color = SYNTHETIC_COLORS[rng.integers(len(SYNTHETIC_COLORS))]
            r = s * rng.uniform(0.13, 0.22) if count > 1 else s * rng.uniform(0.2, 0.35)
            if count > 1:
                cx = (cell % 2 + 0.5) * s / 2 + rng.uniform(-0.08, 0.08) * s
                cy = (cell // 2 + 0.5) * s / 2 + rng.uniform(-0.08, 0.08) * s
            else:
                cx, cy = s * rng.uniform(0.35, 0.65), s * rng.uniform(0.35, 0.65)
            shade = tuple(int(v) for v in rng.integers(-15, 16, size=3))
            objects.append(_Object(shape, color, cx, cy, r, self._turn(float(rng.uniform(0, 1))), shade))
        return texture, objects

    def _turn(self, u: float) -> float:
        """The angle in radians for a uniform draw `u` in [0, 1): any turn at 180 degrees, else within +-max_rotation.

        At 180 this is exactly the former uniform(0, 2 pi), so worlds that do not set max_rotation are unchanged.
        """
        if self.max_rotation >= 180.0:
            return 2 * math.pi * u
        return (2 * u - 1) * math.radians(self.max_rotation)

    def _paint(self, texture: str, objects: list[_Object], texture_rng: np.random.Generator,
               rng: np.random.Generator, force_backdrop: bool = False) -> SyntheticSample:
        s = self.image_size
        image = Image.fromarray(_texture(texture, s, texture_rng, self.texture_contrast), "RGB")
        mask = Image.new("L", (s, s), CLASS_NAMES.index(f"{TEXTURES[texture]} background"))
        draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
        for obj in objects:
            fill = tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(COLORS[obj.color], obj.shade, strict=True))
            value = CLASS_NAMES.index(f"{obj.color} {obj.shape}")
            if obj.shape == "circle":
                box = [obj.cx - obj.r, obj.cy - obj.r, obj.cx + obj.r, obj.cy + obj.r]
                draw.ellipse(box, fill=fill)
                draw_mask.ellipse(box, fill=value)
            else:
                points = _polygon(obj.shape, obj.cx, obj.cy, obj.r, obj.angle if obj.shape != "diamond" else 0.0)
                draw.polygon(points, fill=fill)
                draw_mask.polygon(points, fill=value)
        style = replace(self.style, backdrop=1.0) if force_backdrop else self.style
        caption = _caption([(o.color, o.shape) for o in objects], texture, style, rng)
        return SyntheticSample(image, caption, np.asarray(mask, dtype=np.uint8).copy(), CLASS_NAMES)


def write_benchmark(root: str | Path, count: int = 200, image_size: int = 96, seed: int = 10_000,
                    progress: bool = False, texture_contrast: float = 1.0, max_rotation: float = 180.0) -> Path:
    """Write `count` held-out samples as the synthetic benchmark folder (images/, masks/, captions.tsv).

    Masks hold the generator's classes (CLASS_NAMES: the textured backdrops, then the colour-shape
    objects). Two dataset specs read the folder: `synthetic` scores the objects and ignores the
    backdrop (like VOC20), `synthetic-stuff` scores every pixel (like Context59).

    `mgca-eval --dataset synthetic --root ROOT` reads it like any other benchmark, so the torch
    pipeline and an exported engine are scored the same way. Training uses other seeds (data.seed),
    so these images are never seen in training. `texture_contrast` and `max_rotation` are the training
    world's, so the held-out images come from the same world. An existing folder made with the same recipe is
    reused as it is.
    """
    root = Path(root)
    recipe = {"count": count, "image_size": image_size, "seed": seed, "classes": list(CLASS_NAMES)}
    if texture_contrast != 1.0:
        recipe["texture_contrast"] = texture_contrast
    if max_rotation != 180.0:
        recipe["max_rotation"] = max_rotation
    stamp = root / "benchmark.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    source = SyntheticCaptions(count, image_size, seed=seed, texture_contrast=texture_contrast,
                               max_rotation=max_rotation)
    lines = []
    for index in tqdm(range(count), desc="write synthetic benchmark", unit="img", disable=not progress, file=sys.stderr,
                      leave=False):
        sample = source.render(index)
        name = f"{index:05d}"
        sample.image.save(root / "images" / f"{name}.png")
        Image.fromarray(sample.mask, "L").save(root / "masks" / f"{name}.png")
        lines.append(f"images/{name}.png\t{sample.caption}")
    (root / "captions.tsv").write_text("image\tcaption\n" + "\n".join(lines) + "\n")
    stamp.write_text(json.dumps(recipe))
    return root


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mgca.pairs.synthetic",
                                     description="Write the synthetic segmentation benchmark "
                                                 "(images, masks, captions).")
    parser.add_argument("--out", required=True,
                        help="folder to write (read it with mgca-eval --dataset synthetic --root OUT)")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--texture-contrast", type=float, default=1.0,
                        help="backdrop pattern strength, as the training world's data.synthetic.texture_contrast")
    parser.add_argument("--max-rotation", type=float, default=180.0,
                        help="shapes turn at most this many degrees from upright, as data.synthetic.max_rotation")
    parser.add_argument("--seed", type=int, default=10_000,
                        help="held-out seed (training uses data.seed, 0 by default)")
    args = parser.parse_args(argv)
    print(write_benchmark(args.out, args.count, args.size, args.seed, progress=True,
                          texture_contrast=args.texture_contrast, max_rotation=args.max_rotation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
