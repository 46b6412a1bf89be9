"""The moving miniature: clips of the synthetic world with a ground-truth mask for every frame.

The still benchmark (`mgca.pairs.synthetic`) cannot show whether labels hold still from frame to frame. Here the same
shapes, colours and backdrops move along smooth paths, turn, grow and shrink, and pass in front of each other (every
other shape's path crosses the first one's, so occlusions happen mid-clip), over a static textured backdrop, with
fresh sensor noise on every frame. Clip `i` depends only on (seed, i, frames, image_size, the look): index-addressable
and repeatable. `write_sequences` writes the folder that `mgca-eval --dataset synthetic-video` reads
(ROOT/<clip>/images/NNNNN.png + ROOT/<clip>/masks/NNNNN.png).
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from runtime.files import atomic_write_text

from .synthetic import CLASS_NAMES, COLORS, SHAPES, TEXTURES, _polygon, _texture

SEQUENCE_SEED = 20_000  # held out: training uses data.seed (0) and the still benchmark 10_000


@dataclass(frozen=True)
class _Track:
    """One shape's path over a clip: start and end centre, a sideways bow, turn and size over time, its depth."""

    shape: str
    color: str
    shade: tuple[int, int, int]
    start: tuple[float, float]
    end: tuple[float, float]
    bow: float  # sideways offset at mid-clip, in pixels (the path is a smooth arc, not a line)
    radius: float
    grow: float  # relative size swing, radius x (1 + grow sin(...))
    grow_phase: float
    angle: float
    spin: float  # radians per frame (any turn), or the swing's cycles per clip (turns within +-limit)
    limit: float | None = None  # radians: the shape swings within +-limit (a world that keeps shapes near upright)

    def at(self, u: float, frame: int) -> tuple[float, float, float, float]:
        """(cx, cy, r, angle) at clip fraction u in [0, 1]: eased along the arc, so speed changes smoothly."""
        eased = 0.5 - 0.5 * math.cos(math.pi * u)
        (x0, y0), (x1, y1) = self.start, self.end
        dx, dy = x1 - x0, y1 - y0
        norm = math.hypot(dx, dy) or 1.0
        side = self.bow * math.sin(math.pi * eased)
        cx, cy = x0 + dx * eased - dy / norm * side, y0 + dy * eased + dx / norm * side
        r = self.radius * (1.0 + self.grow * math.sin(2 * math.pi * u + self.grow_phase))
        if self.limit is None:
            return cx, cy, r, self.angle + self.spin * frame
        return cx, cy, r, self.limit * math.sin(2 * math.pi * self.spin * u + self.angle)


@dataclass(frozen=True)
class SyntheticClip:
    frames: tuple[np.ndarray, ...]  # H x W x 3 uint8 RGB
    masks: tuple[np.ndarray, ...]  # H x W uint8, indices into class_names
    class_names: tuple[str, ...]


class SyntheticSequences:
    """`count` deterministic clips of `frames` frames each; `render(i)` gives clip i's frames and masks."""

    class_names = CLASS_NAMES

    def __init__(self, count: int = 20, frames: int = 32, image_size: int = 96, seed: int = SEQUENCE_SEED, *,
                 min_objects: int = 2, max_objects: int = 3, noise: float = 4.0, texture_contrast: float = 1.0,
                 max_rotation: float = 180.0):
        if count <= 0 or frames <= 1:
            raise ValueError(f"need at least one clip of at least 2 frames, got {count} clips of {frames}")
        if not 1 <= min_objects <= max_objects <= 4:
            raise ValueError(f"objects per clip must satisfy 1 <= min <= max <= 4, got {min_objects}..{max_objects}")
        if noise < 0 or not 0.0 <= texture_contrast <= 1.0 or not 0.0 <= max_rotation <= 180.0:
            raise ValueError("noise must be >= 0, texture_contrast in [0, 1] and max_rotation in [0, 180]")
        self.count, self.frames, self.image_size, self.seed = count, frames, image_size, seed
        self.min_objects, self.max_objects, self.noise = min_objects, max_objects, noise
        self.texture_contrast, self.max_rotation = texture_contrast, max_rotation

    def __len__(self) -> int:
        return self.count

    def recipe(self) -> dict:
        """What the clips depend on: a folder written with the same recipe holds the same pixels."""
        return {"count": self.count, "frames": self.frames, "image_size": self.image_size, "seed": self.seed,
                "min_objects": self.min_objects, "max_objects": self.max_objects, "noise": self.noise,
                "texture_contrast": self.texture_contrast, "max_rotation": self.max_rotation,
                "classes": list(CLASS_NAMES)}

    def _tracks(self, rng: np.random.Generator) -> list[_Track]:
        s = self.image_size
        count = int(rng.integers(self.min_objects, self.max_objects + 1))
        tracks: list[_Track] = []
        for k in range(count):
            if k == 0:
                start, end = tuple(s * rng.uniform(0.2, 0.8, 2)), tuple(s * rng.uniform(0.2, 0.8, 2))
                while math.dist(start, end) < 0.3 * s:  # the first shape crosses a good part of the frame
                    end = tuple(s * rng.uniform(0.2, 0.8, 2))
            else:  # from near the first one's end to near its start: the paths cross, one shape passes the other
                first = tracks[0]
                start = tuple(np.clip(np.array(first.end) + rng.normal(0, 0.06 * s, 2), 0.1 * s, 0.9 * s))
                end = tuple(np.clip(np.array(first.start) + rng.normal(0, 0.06 * s, 2), 0.1 * s, 0.9 * s))
            if self.max_rotation >= 180:  # any turn, spinning up to 4 degrees a frame
                turn, spin, limit = 2 * math.pi * rng.uniform(), math.radians(rng.uniform(-4.0, 4.0)), None
            else:  # swinging within the world's +-max_rotation, half a swing to one and a half per clip
                turn, spin, limit = 2 * math.pi * rng.uniform(), rng.uniform(0.5, 1.5), math.radians(self.max_rotation)
            tracks.append(_Track(
                shape=SHAPES[int(rng.integers(len(SHAPES)))],
                color=list(COLORS)[int(rng.integers(len(COLORS)))],
                shade=tuple(int(v) for v in rng.integers(-15, 16, size=3)),
                start=(float(start[0]), float(start[1])), end=(float(end[0]), float(end[1])),
                bow=float(rng.uniform(-0.12, 0.12) * s), radius=float(s * rng.uniform(0.13, 0.2)),
                grow=float(rng.uniform(0.0, 0.25)), grow_phase=float(rng.uniform(0, 2 * math.pi)),
                angle=float(turn), spin=float(spin), limit=limit))
        return tracks

    def render(self, index: int) -> SyntheticClip:
        if not 0 <= index < self.count:
            raise IndexError(f"clip {index} out of range [0, {self.count})")
        rng = np.random.default_rng([self.seed % 2**63, index])
        texture = list(TEXTURES)[int(rng.integers(len(TEXTURES)))]
        backdrop = _texture(texture, self.image_size, np.random.default_rng(rng.integers(2**63)),
                            self.texture_contrast)
        backdrop_value = CLASS_NAMES.index(f"{TEXTURES[texture]} background")
        tracks = self._tracks(rng)
        frames, masks = [], []
        for t in range(self.frames):
            image = Image.fromarray(backdrop, "RGB")
            mask = Image.new("L", image.size, backdrop_value)
            draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
            for track in tracks:  # in depth order: later shapes pass in front
                cx, cy, r, angle = track.at(t / (self.frames - 1), t)
                fill = tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(COLORS[track.color], track.shade,
                                                                         strict=True))
                value = CLASS_NAMES.index(f"{track.color} {track.shape}")
                if track.shape == "circle":
                    box = [cx - r, cy - r, cx + r, cy + r]
                    draw.ellipse(box, fill=fill)
                    draw_mask.ellipse(box, fill=value)
                else:
                    points = _polygon(track.shape, cx, cy, r, angle if track.shape != "diamond" else 0.0)
                    draw.polygon(points, fill=fill)
                    draw_mask.polygon(points, fill=value)
            pixels = np.asarray(image, dtype=np.float32)
            if self.noise:
                sensor = np.random.default_rng([self.seed % 2**63, index, t + 1])
                pixels = pixels + sensor.normal(0.0, self.noise, pixels.shape).astype(np.float32)
            frames.append(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
            masks.append(np.asarray(mask, dtype=np.uint8).copy())
        return SyntheticClip(tuple(frames), tuple(masks), CLASS_NAMES)


def write_sequences(root: str | Path, sequences: SyntheticSequences, progress: bool = False) -> Path:
    """Write every clip as ROOT/<clip>/images/NNNNN.png and ROOT/<clip>/masks/NNNNN.png (the masks hold CLASS_NAMES
    indices), with the recipe in ROOT/sequences.json last; a folder with the same recipe is reused as it is."""
    root = Path(root)
    recipe = sequences.recipe()
    stamp = root / "sequences.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return root
    for index in range(len(sequences)):
        clip = sequences.render(index)
        folder = root / f"clip{index:04d}"
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        for t, (frame, mask) in enumerate(zip(clip.frames, clip.masks, strict=True)):
            Image.fromarray(frame, "RGB").save(folder / "images" / f"{t:05d}.png")
            Image.fromarray(mask, "L").save(folder / "masks" / f"{t:05d}.png")
        if progress:
            print(f"clip {index + 1}/{len(sequences)}", file=sys.stderr)
    atomic_write_text(stamp, json.dumps(recipe))
    return root


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mgca.pairs.synthetic_video",
                                     description="Write the moving miniature: synthetic clips with a mask per frame.")
    parser.add_argument("--out", required=True, help="folder to write (mgca-eval --dataset synthetic-video --root OUT)")
    parser.add_argument("--count", type=int, default=20, help="clips")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--size", type=int, default=96, help="frame side in pixels")
    parser.add_argument("--seed", type=int, default=SEQUENCE_SEED)
    parser.add_argument("--noise", type=float, default=4.0, help="sensor noise: std of the per-frame Gaussian noise "
                                                                  "in 8-bit levels")
    parser.add_argument("--min-objects", type=int, default=2, help="shapes per clip, at least")
    parser.add_argument("--max-objects", type=int, default=3, help="shapes per clip, at most (4 at most)")
    parser.add_argument("--texture-contrast", type=float, default=1.0)
    parser.add_argument("--max-rotation", type=float, default=180.0)
    args = parser.parse_args(argv)
    sequences = SyntheticSequences(args.count, args.frames, args.size, args.seed, min_objects=args.min_objects,
                                   max_objects=args.max_objects, noise=args.noise,
                                   texture_contrast=args.texture_contrast, max_rotation=args.max_rotation)
    print(write_sequences(args.out, sequences, progress=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
