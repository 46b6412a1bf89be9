"""The inference contract in code: what training, export and the runtime must agree on, defined once.

docs/inference-contract.md explains it; this module is what every side imports: the format ids, file
names and tensor names of a bundle, CLIP's normalisation, the inference settings with their defaults
and their one `validate()`, and the geometry (short-side resize, sliding windows, meta-points).
The numeric kernels stay twins (torch in `mgca.inference`, numpy in `runtime`), so the parity tests
keep their meaning, but both take their geometry from here.

Plain Python only (no numpy, no torch): the bottom layer, importable from everywhere.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .errors import SettingsError

# ---------------------------------------------------------------------------------------------- formats
BUNDLE_FORMAT = "mgca-bundle/2"
READABLE_BUNDLE_FORMATS = ("mgca-bundle/1", BUNDLE_FORMAT)  # /1 also wrote the window at the top level
TEXT_CACHE_FORMAT = "mgca-text-cache/1"
ONNX_FORMAT = "mgca-onnx/1"

MANIFEST_FILE = "manifest.json"
TEXT_CACHE_FILE = "text_cache.npz"
# manifest `models` key -> file name, and the (backend, precision) each key serves; read-only (no module state)
MODEL_FILES = MappingProxyType({"onnx": "model.onnx", "onnx_int8": "model.int8.onnx",
                                "trt_fp16": "model.fp16.engine", "trt_int8": "model.int8.engine"})
MODEL_KEYS = MappingProxyType({("onnxruntime", "fp32"): "onnx", ("onnxruntime", "int8"): "onnx_int8",
                               ("tensorrt", "fp16"): "trt_fp16", ("tensorrt", "int8"): "trt_int8"})

# The ONNX graph: `image` N x 3 x win x win (normalised) -> `embeddings` N x C x win/os x win/os (L2-normalised).
INPUT_NAME = "image"
OUTPUT_NAME = "embeddings"

# CLIP's (OpenAI's) image normalisation, the default of every backbone without its own.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_LOGIT_SCALE = 100.0  # the background softmax is taken over scores x this

# ---------------------------------------------------------------------------------------------- settings
PAPER_WINDOW = 448  # paper 4.1: short side 448, 448 x 448 windows, stride half a window
UNIT_SCOPES = ("image", "window")


@dataclass(frozen=True)
class InferenceSettings:
    """How images are cut and scored: one field per setting, recorded once in the manifest's `inference` block.

    Defaults are the paper's (4.1). `window` is also the exported graph's fixed input size.
    """

    short_side: int = PAPER_WINDOW  # resize so the shorter side is this many pixels
    window: int = PAPER_WINDOW  # sliding-window size (square)
    stride: int = PAPER_WINDOW // 2  # window step, <= window
    units: int = 36  # meta-points M; 0 (or M >= L) means pixel units
    unit_scope: str = "image"  # units over the stitched map, or per window before stitching

    @classmethod
    def for_window(cls, window: int, output_stride: int, **overrides: Any) -> InferenceSettings:
        """Settings for a graph exported at `window`: the short side is the window and the stride half of it
        (rounded down to the output-stride grid), unless `overrides` (None = not given) say otherwise."""
        given = {k: v for k, v in overrides.items() if v is not None}
        defaults = {"short_side": window, "stride": max(output_stride, window // 2 // output_stride * output_stride)}
        return cls(**{**defaults, **given, "window": window})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceSettings:
        """The settings of a manifest's `inference` block (keys this version does not know are ignored)."""
        names = cls.field_names()
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, output_stride: int, patch_size: int | None = None) -> InferenceSettings:
        """Self, or a one-line SettingsError naming the bad value. Windows and strides sit on the output-stride
        grid (and the window on the patch grid, when the caller knows the patch size); the stride leaves no gaps."""
        for name in ("short_side", "window", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SettingsError(f"{name} must be a positive integer, got {value!r}")
        check_window(self.window, output_stride, patch_size)
        if self.stride % output_stride or self.stride > self.window:
            raise SettingsError(f"stride {self.stride} must be a multiple of the output stride {output_stride} "
                                f"and at most the window {self.window} (larger strides leave gaps between windows)")
        if isinstance(self.units, bool) or not isinstance(self.units, int) or self.units < 0:
            raise SettingsError(f"units must be an integer >= 0 (0 = pixel units), got {self.units!r}")
        if self.unit_scope not in UNIT_SCOPES:
            raise SettingsError(f"unit_scope must be one of {UNIT_SCOPES}, got {self.unit_scope!r}")
        return self


DEFAULT_SETTINGS = InferenceSettings()


def check_window(window: int, output_stride: int, patch_size: int | None = None) -> int:
    """`window` when it is a positive multiple of the output stride (and of the patch size, if given)."""
    grid = [output_stride] if patch_size is None else [patch_size, output_stride]
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0 or any(window % g for g in grid):
        what = "the output stride" if patch_size is None else f"the patch size {patch_size} and the output stride"
        raise SettingsError(f"window {window!r} must be a positive multiple of {what} {output_stride} "
                            f"(e.g. {DEFAULT_SETTINGS.window})")
    return window


# ---------------------------------------------------------------------------------------------- geometry
Box = tuple[int, int, int, int]  # y1, y2, x1, x2 in padded-image pixels


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H', W'): the shorter side becomes `short_side`, each side `round(side * short_side / min(H, W))`, >= 1."""
    shorter = min(height, width)
    return max(1, round(height * short_side / shorter)), max(1, round(width * short_side / shorter))


def round_up(value: int, multiple: int) -> int:
    """The next multiple of `multiple` (the zero padding to the output-stride grid)."""
    return -(-value // multiple) * multiple


def window_spans(size: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) of each window along one axis of a padded image: mmseg `slide_inference` positions."""
    count = max(size - window + stride - 1, 0) // stride + 1
    spans = []
    for index in range(count):
        end = min(index * stride + window, size)
        spans.append((max(end - window, 0), end))
    return spans


def window_boxes(height: int, width: int, window: int, stride: int) -> list[Box]:
    """Every window of a padded image, row-major."""
    return [(y1, y2, x1, x2) for y1, y2 in window_spans(height, window, stride)
            for x1, x2 in window_spans(width, window, stride)]


def uses_pixel_units(units: int, height: int, width: int) -> bool:
    """units = 0 or units >= L: every pixel is its own unit (the plain pixel-wise baseline)."""
    return units <= 0 or units >= height * width


def meta_grid(height: int, width: int, units: int) -> tuple[int, int]:
    """(gy, gx) with gy * gx = units: square for a perfect square, else the factor pair closest to square,
    the larger factor along the longer side of the map (along x when the map is square)."""
    if units <= 0:
        raise ValueError(f"units must be positive, got {units}")
    small = max(d for d in range(1, math.isqrt(units) + 1) if units % d == 0)
    large = units // small
    return (large, small) if height > width else (small, large)


def meta_point_indices(height: int, width: int, units: int) -> list[int]:
    """Flat indices of the meta-points, row-major: pixel (floor((i + .5) h / gy), floor((j + .5) w / gx))."""
    grid_y, grid_x = meta_grid(height, width, units)
    ys = [((2 * i + 1) * height) // (2 * grid_y) for i in range(grid_y)]
    xs = [((2 * j + 1) * width) // (2 * grid_x) for j in range(grid_x)]
    return [y * width + x for y in ys for x in xs]


__all__ = [
    "BUNDLE_FORMAT", "READABLE_BUNDLE_FORMATS", "TEXT_CACHE_FORMAT", "ONNX_FORMAT", "MANIFEST_FILE", "TEXT_CACHE_FILE",
    "MODEL_FILES", "MODEL_KEYS", "INPUT_NAME", "OUTPUT_NAME", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "CLIP_LOGIT_SCALE",
    "PAPER_WINDOW", "UNIT_SCOPES", "InferenceSettings", "DEFAULT_SETTINGS", "check_window", "Box", "resized_shape",
    "round_up", "window_spans", "window_boxes", "uses_pixel_units", "meta_grid", "meta_point_indices",
]
