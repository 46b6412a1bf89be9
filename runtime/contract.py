"""The inference contract in code: what training, export and the runtime must agree on, defined once.

docs/inference-contract.md explains it; this module is what every side imports: the format ids, file
names and tensor names of a bundle, CLIP's normalisation, the inference settings (each declared once, with
its default, range and help) and their one `validate()`, and the geometry (short-side resize, sliding
windows, meta-points).
The numeric kernels stay twins (torch in `mgca.inference`, numpy in `runtime`), so the parity tests
keep their meaning, but both take their geometry from here.

Plain Python only (no numpy, no torch): the bottom layer, importable from everywhere.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
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
# The CLIP dense modes, listed once: a manifest's backbone.dense_mode names one, mgca.config's BackboneConfig.dense_mode
# type, the CLIs' --dense-mode choices and mgca.dense_modes.DENSE_MODES are all built from this tuple.
DENSE_MODE_NAMES = ("tcl", "maskclip", "sclip", "clearclip", "naclip", "scclip")
# manifest `models` key -> file name, and the (backend, precision) each key serves; read-only (no module state)
# onnx_int8: onnxruntime's quantize_static QDQ graph (symmetric, what TensorRT's int8 engine is built from);
# onnx_int8_nncf: NNCF's post-training QDQ graph (transformer preset, SmoothQuant, fast bias correction), which
# OpenVINO runs. OpenVINO fp32 and bf16 read the fp32 graph itself (the precision is a compile hint).
MODEL_FILES = MappingProxyType({"onnx": "model.onnx", "onnx_int8": "model.int8.onnx",
                                "onnx_int8_nncf": "model.int8.nncf.onnx",
                                "trt_fp16": "model.fp16.engine", "trt_int8": "model.int8.engine"})
MODEL_KEYS = MappingProxyType({("onnxruntime", "fp32"): "onnx", ("onnxruntime", "int8"): "onnx_int8",
                               ("openvino", "fp32"): "onnx", ("openvino", "bf16"): "onnx",
                               ("openvino", "int8"): "onnx_int8_nncf",
                               ("tensorrt", "fp16"): "trt_fp16", ("tensorrt", "int8"): "trt_int8"})
# The ONNX metadata key where the exporter records which manifest `models` key a graph was written as, so that
# swapped model files (their sha256 in the manifest edited to match) are refused instead of run.
GRAPH_ROLE_KEY = "model_role"
# A (backend, precision) may have a fallback file: OpenVINO's int8 runs the QDQ graph when the bundle has no NNCF
# graph (the exporter keeps NNCF's only where it measured it nearer fp32 than the QDQ graph).
MODEL_FALLBACKS = MappingProxyType({("openvino", "int8"): "onnx_int8"})
BACKENDS = ("onnxruntime", "openvino", "tensorrt")


def model_key(backend: str, precision: str, available: Collection[str]) -> str:
    """The manifest model key that (backend, precision) runs in a bundle holding the keys `available`: the
    preferred MODEL_KEYS entry, else its MODEL_FALLBACKS entry when the bundle has that one."""
    preferred = MODEL_KEYS[(backend, precision)]
    fallback = MODEL_FALLBACKS.get((backend, precision))
    return fallback if preferred not in available and fallback in available else preferred

PRECISIONS = ("fp32", "bf16", "int8", "fp16")

# The ONNX graph: `image` N x 3 x win x win (normalised) -> `embeddings` N x C x win/os x win/os (L2-normalised).
INPUT_NAME = "image"
OUTPUT_NAME = "embeddings"

# CLIP's (OpenAI's) image normalisation, the default of every backbone without its own.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_LOGIT_SCALE = 100.0  # the background softmaxes (softmax and groupvit rules) are taken over scores x this

# ---------------------------------------------------------------------------------------------- background rules
# How VOC21 / Context60 / COCO-Object decide "background" (docs/inference-contract.md, "Background rules"):
#   groupvit: GroupViT's `group_vit_seg.py`, per unit (or pixel): score = softmax over the image's top-5 classes
#             x softmax over all classes; background where the best score < min(threshold, the image's best);
#   tcl:      TCL's `tcl_seg.py`: a constant channel beside the sigmoid masks sigmoid(10 cos - 2.5), then argmax;
#   softmax:  mgca's earlier rule: background where the best softmax(100 cos) probability < threshold.
BG_RULES = ("groupvit", "tcl", "softmax")
GROUPVIT_TOP_K = 5  # classes kept by the image-level softmax (`avg_affinity_mat.topk(k=min(5, K))`)
GROUPVIT_BACKGROUND = 0.95  # GroupViT's background threshold on VOC and COCO-Object (0.35 on Context)
BACKGROUND_RANGE = (0.0, 1.0)  # a background threshold is a probability (groupvit, softmax) or a sigmoid level (tcl)
# TCL's Sim2Mask is sigmoid(w cos + b) with learned w, b initialised at 10, -2.5 (configs/tcl.yml); its
# keep-branch uses the same fixed map, sigmoid((cos - 0.25) x 10). MGCA learns no w, b: the fixed map is used.
TCL_MASK_SCALE = 10.0
TCL_MASK_BIAS = -2.5
TCL_BACKGROUND = 0.5  # TCLSegInference's bg_thresh default
TCL_BACKGROUND_PAMR = 0.4  # TCL's configs/eval.yml, which evaluates with PAMR

# ---------------------------------------------------------------------------------------------- resize and PAMR
MMSEG_LONG_SIDE = 2048  # mmseg/TCL/GroupViT test pipeline: img_scale=(2048, 448), keep_ratio=True
PADDINGS = ("crop", "image")  # windows on the resized image, each crop padded alone (mmseg) / image padded first
PAMR_DILATIONS = (1, 2, 4, 8, 12, 24)  # TCL's `apply_pamr` kernel (NACLIP uses (8, 16))

# ---------------------------------------------------------------------------------------------- settings
PAPER_WINDOW = 448  # paper 4.1: short side 448, 448 x 448 windows, stride half a window
UNIT_SCOPES = ("image", "window")

# ---------------------------------------------------------------------------------------------- temporal stability
# Frame streams (docs/inference-contract.md, "Temporal stability"; runtime/temporal.py and its PyTorch twin):
#   off:   every frame on its own, labels equal to segment()'s;
#   ema:   grid class scores averaged over frames (weight TEMPORAL_ALPHA on the new frame), except in cells whose
#          pixels changed by more than TEMPORAL_GATE (mean absolute change in [0, 1] pixel units; the changed cells
#          grown by TEMPORAL_GROW cells): a moving object's changing cells take their new scores at once;
#   units: the meta-points of a frame are the previous frame's unit embeddings, so a unit keeps its identity;
#   both:  units, then ema.
# ema is the default: it raised VC8 by 15 points at no mIoU cost on the moving miniature (docs/results/video.json).
# Chosen on validation clips (generator seed 29999, never a reported seed; docs/results.md, "Video: temporal
# stability"): growing the changed cells by one cell gated whole small objects, exactly the pixels whose labels
# flicker, and alpha 0.3 steadied them most without an mIoU cost.
TEMPORAL_MODES = ("off", "ema", "units", "both")
TEMPORAL_ALPHA = 0.3
TEMPORAL_GATE = 0.05
TEMPORAL_GROW = 0


@dataclass(frozen=True)
class SettingSpec:
    """What one inference setting may be: its help text, its range (or choices) and why the range is what it is.

    Every setting is declared once, as a field of `InferenceSettings` carrying one of these; the validation, the
    command-line flags (`mgca.cli.args`), `Segmenter`'s keyword overrides and the docs' table all read it.
    Integers lie in [minimum, maximum]; a tuple setting holds 1..max_items integers in that range.
    """

    help: str
    minimum: int = 0
    maximum: int | None = None  # None only for settings with choices
    choices: tuple[str, ...] = ()
    max_items: int | None = None  # set for tuple-valued settings
    why: str = ""  # why the maximum: what real use needs, and what a larger value would cost

    def describe(self) -> str:
        """A valid value in words: 'one of (...)', 'an integer >= 0 and at most 100', or for a tuple setting its
        items, 'positive integers (at most 16, each at most 128)'."""
        if self.choices:
            return f"one of {self.choices}"
        if self.max_items is not None:
            return f"positive integers (at most {self.max_items}, each at most {self.maximum})"
        return f"{'a positive integer' if self.minimum == 1 else f'an integer >= {self.minimum}'} and at most " \
               f"{self.maximum}"

    def reason(self, value: Any) -> str:
        """' (why)' when `value` is past a maximum (the bound then needs its reason), else ''."""
        values = value if self.max_items is not None and isinstance(value, tuple) else (value,)
        too_many = self.max_items is not None and len(values) > self.max_items
        past = not self.choices and any(_in_range(v, self.maximum + 1, None) for v in values)
        return f" ({self.why})" if too_many or past else ""

    def check(self, name: str, value: Any) -> Any:
        """`value` when it lies in this setting's range, else a one-line SettingsError naming the range."""
        if self.choices:
            valid = value in self.choices
        elif self.max_items is None:
            valid = _in_range(value, self.minimum, self.maximum)
        else:
            valid = (isinstance(value, tuple) and 0 < len(value) <= self.max_items
                     and all(_in_range(v, self.minimum, self.maximum) for v in value))
        if not valid:
            wanted = f"a non-empty tuple of {self.describe()}" if self.max_items is not None else self.describe()
            raise SettingsError(f"{name} must be {wanted}, got {value!r}{self.reason(value)}")
        return value

    def coerce(self, value: Any) -> Any:
        """A JSON list (manifest) or any sequence given for a tuple setting, as the tuple it stands for."""
        return tuple(value) if self.max_items is not None and isinstance(value, (list, tuple)) else value


def _in_range(value: Any, low: int, high: int | None) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value and (high is None or value <= high)


def setting(default: Any, help: str, **spec: Any) -> Any:  # argparse's word for it
    """A field of `InferenceSettings`: its default and its `SettingSpec`."""
    return dataclasses.field(default=default, metadata={"spec": SettingSpec(help, **spec)})


# The bounds are far above any protocol mgca or the papers it follows use (paper: 448/448/224, 36 units; TCL and
# NACLIP: PAMR 10 with dilations up to 24), and low enough that no value in range allocates more than a few GB
# or runs for more than seconds per image: past them a value is a typo, or an edit meant to break something.
@dataclass(frozen=True)
class InferenceSettings:
    """How images are cut and scored: one field per setting, each declared once here with its default, range and
    help (`SettingSpec`), and recorded once in the manifest's `inference` block. Defaults are the paper's (4.1);
    `window` is also the exported graph's fixed input size. A new setting is a new field here, the code that uses
    it and its docs (docs/settings.md): the flags, overrides, manifest and validation follow."""

    short_side: int = setting(
        PAPER_WINDOW, "resize so the shorter side is this many pixels", minimum=1, maximum=4096,
        why="9x the paper's 448; a 4096 px square already holds 0.5 GB of 512-d embeddings at output stride 8")
    window: int = setting(
        PAPER_WINDOW, "sliding-window size in pixels (square); a bundle's is its graph's fixed input", minimum=1,
        maximum=1024, why="CLIP is trained at 224 and the paper uses 448; at 1024 a ViT-B/16 window already "
                          "attends over 4096 tokens: 0.8 GB of attention weights per window and layer")
    stride: int = setting(
        PAPER_WINDOW // 2, "window step in pixels, at most the window (larger steps leave gaps)", minimum=1,
        maximum=1024, why="never more than the window, whose maximum this is")
    units: int = setting(
        36, "adaptive semantic units (meta-points) M; 0 = pixel units", maximum=1024,
        why="the paper uses 36 and benchmarks/runtime.py at most 1024; a 448 px image has at least 3,136 cells "
            "at output stride 8, and M at or above its cells means pixel units, which 0 asks for directly")
    unit_scope: str = setting(
        "image", "units over the stitched map (image) or per window before stitching (window)", choices=UNIT_SCOPES)
    long_side: int = setting(
        MMSEG_LONG_SIDE, "cap on the longer side after the resize, mmseg's img_scale=(2048, 448); 0 = no cap",
        maximum=8192, why="4x mmseg's 2048 cap, and twice the largest short side")
    padding: str = setting(
        "crop", "crop: mmseg's windows on the resized image, each crop padded alone; image: the image padded to "
                "the output stride first, mgca's earlier layout", choices=PADDINGS)
    bg_rule: str = setting(
        "groupvit", "background of VOC21/Context60/COCO-Object: groupvit (GroupViT's top-5 softmax score rule, "
                    "the paper's), tcl (TCL's constant channel), softmax (mgca's earlier rule)", choices=BG_RULES)
    pamr: int = setting(
        0, "PAMR iterations on the stitched score grid; 0 = off (the paper's protocol)", maximum=100,
        why="10x TCL's and NACLIP's 10; each iteration is 8 x len(dilations) shifted copies of the score grid")
    pamr_dilations: tuple[int, ...] = setting(
        PAMR_DILATIONS, "PAMR dilations; the default is TCL's, 8,16 is NACLIP's", minimum=1, maximum=128,
        max_items=16, why="TCL uses 6 dilations up to 24, NACLIP (8, 16); the grid is padded by the largest")
    temporal: str = setting(
        "ema", "frame streams: off (each frame alone, = segment()), ema (grid scores averaged over frames where the "
               "pixels did not change), units (meta-points carried over from the previous frame), both",
        choices=TEMPORAL_MODES)

    @classmethod
    def for_window(cls, window: int, output_stride: int, **overrides: Any) -> InferenceSettings:
        """Settings for a graph exported at `window`: the short side is the window and the stride half of it
        (rounded down to the output-stride grid), unless `overrides` (None = not given) say otherwise."""
        defaults = {"short_side": window, "stride": max(output_stride, window // 2 // output_stride * output_stride)}
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls().with_overrides({**defaults, **given, "window": window})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceSettings:
        """The settings of a manifest's `inference` block (keys this version does not know are ignored)."""
        return cls().with_overrides({k: v for k, v in data.items() if k in SETTING_SPECS})

    def with_overrides(self, given: Mapping[str, Any]) -> InferenceSettings:
        """These settings with `given` in their place (None: not given; a JSON list as its tuple), each checked
        against its declaration: an unknown name or a value out of its range is a one-line SettingsError. The rules
        between settings need the model's output stride: callers `validate` the result."""
        unknown = [name for name in given if name not in SETTING_SPECS]
        if unknown:
            raise SettingsError(f"unknown inference setting {unknown[0]!r}; the settings are "
                                f"{', '.join(SETTING_SPECS)} (runtime.contract.SETTING_SPECS)")
        checked = {name: SETTING_SPECS[name].check(name, SETTING_SPECS[name].coerce(value))
                   for name, value in given.items() if value is not None}
        return dataclasses.replace(self, **checked)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, output_stride: int, patch_size: int | None = None) -> InferenceSettings:
        """Self, or a one-line SettingsError naming the bad value: each setting in its declared range, then the
        rules between them. Windows and strides sit on the output-stride grid (and the window on the patch grid,
        when the caller knows the patch size); the stride leaves no gaps; a long-side cap is above the short side."""
        for name, spec in SETTING_SPECS.items():
            spec.check(name, getattr(self, name))
        check_window(self.window, output_stride, patch_size)
        if self.stride % output_stride or self.stride > self.window:
            raise SettingsError(f"stride {self.stride} must be a multiple of the output stride {output_stride} "
                                f"and at most the window {self.window} (larger strides leave gaps between windows)")
        if self.temporal in ("units", "both") and self.unit_scope == "window":
            raise SettingsError(f"temporal {self.temporal!r} carries the image's meta-points over, which unit_scope "
                                "'window' does not have; use temporal 'ema' or unit_scope 'image'")
        if 0 < self.long_side < self.short_side:
            raise SettingsError(f"long_side must be 0 (no cap) or an integer >= short_side {self.short_side}, "
                                f"got {self.long_side!r}")
        return self


# The declaration, read-only: setting name -> SettingSpec, in field (and manifest) order.
SETTING_SPECS: Mapping[str, SettingSpec] = MappingProxyType(
    {f.name: f.metadata["spec"] for f in dataclasses.fields(InferenceSettings)})
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
Box = tuple[int, int, int, int]  # y1, y2, x1, x2 in image pixels


def default_background(bg_rule: str, threshold: float | None, pamr: int = 0) -> float | None:
    """The background value of a rule when the user gives none: the dataset's GroupViT threshold (`threshold`) for
    groupvit and softmax, TCL's constant channel (0.5, or 0.4 with PAMR as TCL evaluates) for tcl. None stays None
    (a dataset without background)."""
    if threshold is None:
        return None
    if bg_rule == "tcl":
        return TCL_BACKGROUND_PAMR if pamr else TCL_BACKGROUND
    return threshold


def resized_shape(height: int, width: int, short_side: int, long_side: int = 0) -> tuple[int, int]:
    """(H', W') as mmcv's `imrescale` (mmseg `Resize(keep_ratio=True)` with img_scale=(long_side, short_side)):
    scale = short_side / min(H, W), lowered to long_side / max(H, W) when that is smaller (long_side 0: no cap);
    each side int(side * scale + 0.5) (halves round up), at least 1."""
    scale = short_side / min(height, width)
    if long_side:
        scale = min(scale, long_side / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


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


def grid_spans(size: int, window: int, stride: int, output_stride: int) -> list[tuple[int, int]]:
    """(start, end) of the image pixels each window holds along one axis of a resized image, padding "crop":
    mmseg's positions on the image itself, each start moved back onto the output-stride grid (at most os - 1 px,
    only ever the last window's), so every window's embedding grid lines up with the others'. end - start is the
    window, or the whole axis when it is shorter than the window (that crop is zero-padded). Duplicates dropped."""
    spans: list[tuple[int, int]] = []
    for start, _ in window_spans(size, window, stride):
        start -= start % output_stride
        span = (start, min(start + window, size))
        if span not in spans:
            spans.append(span)
    return spans


@dataclass(frozen=True)
class WindowLayout:
    """Where the windows of one resized H' x W' image sit and the stitched embedding grid they make.

    boxes: (y1, y2, x1, x2) per window, row-major: the resized-image pixels the crop holds (at its top-left;
    the rest of the window is zeros). Starts lie on the output-stride grid; a window fills
    ceil((y2 - y1) / os) x ceil((x2 - x1) / os) cells of the grid from (y1 / os, x1 / os).
    grid_hw: (gh, gw) cells of the stitched map; cell (i, j) stands for pixels [i os, (i + 1) os) x [j os, ...).
    gh * os differs from H' by less than os: scores are cropped to H' or extended by the edge cells.
    """

    boxes: tuple[Box, ...]
    grid_hw: tuple[int, int]


def box_cells(box: Box, output_stride: int) -> Box:
    """(gy1, gy2, gx1, gx2): the stitched-grid cells a window `box` fills (a partial last cell counts)."""
    y1, y2, x1, x2 = box
    return y1 // output_stride, -(-y2 // output_stride), x1 // output_stride, -(-x2 // output_stride)


def window_layout(height: int, width: int, window: int, stride: int, output_stride: int,
                  padding: str = "crop") -> WindowLayout:
    """The windows and stitched grid of a resized H' x W' image (docs/inference-contract.md, "Sliding windows").

    padding "crop" (default): `grid_spans` on the image, as mmseg's `slide_inference` with TCL's per-crop padding.
    padding "image": the image zero-padded to multiples of the output stride first and mmseg's positions taken on
    that (mgca before issue 20): the last window can sit up to os - 1 px past mmseg's and hold that padding."""
    if padding == "image":
        ys = [(y1, min(y2, height)) for y1, y2 in window_spans(round_up(height, output_stride), window, stride)]
        xs = [(x1, min(x2, width)) for x1, x2 in window_spans(round_up(width, output_stride), window, stride)]
    elif padding == "crop":
        ys = grid_spans(height, window, stride, output_stride)
        xs = grid_spans(width, window, stride, output_stride)
    else:
        raise SettingsError(f"padding must be one of {PADDINGS}, got {padding!r}")
    boxes = tuple((y1, y2, x1, x2) for y1, y2 in ys for x1, x2 in xs)
    grid = (-(-max(y2 for _, y2 in ys) // output_stride), -(-max(x2 for _, x2 in xs) // output_stride))
    return WindowLayout(boxes, grid)


def settings_layout(height: int, width: int, settings: InferenceSettings, output_stride: int) -> WindowLayout:
    """`window_layout` of a resized image with the window, stride and padding of `settings`."""
    return window_layout(height, width, settings.window, settings.stride, output_stride, settings.padding)


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
    "DENSE_MODE_NAMES",
    "MODEL_FILES", "MODEL_KEYS", "MODEL_FALLBACKS", "GRAPH_ROLE_KEY", "model_key", "BACKENDS", "PRECISIONS",
    "INPUT_NAME",
    "OUTPUT_NAME", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "CLIP_LOGIT_SCALE",
    "PAPER_WINDOW", "UNIT_SCOPES", "TEMPORAL_MODES", "TEMPORAL_ALPHA", "TEMPORAL_GATE", "TEMPORAL_GROW",
    "BG_RULES", "GROUPVIT_TOP_K",
    "GROUPVIT_BACKGROUND", "BACKGROUND_RANGE", "TCL_MASK_SCALE", "TCL_MASK_BIAS", "TCL_BACKGROUND",
    "TCL_BACKGROUND_PAMR", "MMSEG_LONG_SIDE", "PADDINGS", "PAMR_DILATIONS", "SettingSpec", "setting",
    "InferenceSettings", "SETTING_SPECS", "DEFAULT_SETTINGS",
    "check_window", "default_background", "Box", "resized_shape", "round_up", "window_spans", "window_boxes",
    "grid_spans", "WindowLayout", "box_cells", "window_layout", "settings_layout", "uses_pixel_units", "meta_grid",
    "meta_point_indices",
]
