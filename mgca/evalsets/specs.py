"""The eight zero-shot benchmarks: MMSegmentation class names, directory layouts, background thresholds.

Class names are MMSegmentation's `CLASSES`/`METAINFO['classes']` verbatim (including ADE's 'bed '
with its trailing space); COCO-Object is GroupViT/TCL's (background + the 80 COCO-Stuff things);
VOC20 is TCL's (VOC without background, reduce_zero_label). Background thresholds are GroupViT's
per-dataset `bg_thresh` (VOC .95, Context .35, COCO-Object .95, its `segmentation/configs`). They are
thresholds of GroupViT's own score (p_top5 * p_all per group, `bg_rule="groupvit"`, the default), which
`bg_rule="softmax"` (mgca's earlier rule) applies to a plain softmax instead; `bg_rule="tcl"` ignores them
and uses TCL's constant channel (`runtime.contract.default_background`; docs/inference-contract.md,
"Background rules").
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from runtime.backbone_notice import SYNTHETIC_COLORS, SYNTHETIC_SHAPES, SYNTHETIC_TEXTURES
from runtime.contract import InferenceSettings

from ..prompts import DEFAULT_TEMPLATE_SET

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

CONTEXT59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building",
    "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog",
    "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike",
    "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)

COCO_THINGS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

COCO_STUFF = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain",
    "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other",
    "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin",
    "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other",
    "skyscraper", "snow", "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent",
    "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel",
    "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed ", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)


@dataclass(frozen=True)
class Part:
    """One folder pair of a layout: images in `image_dir`, labels beside them in `label_dir`.

    kind "files": label = label_dir / (image's relative stem + label_suffix).
    kind "coco_json": `label_dir` is a COCO instances json, rasterised into COCO-Object masks.
    """

    image_dir: str
    label_dir: str
    image_suffix: str = ".jpg"
    label_suffix: str = ".png"
    split_file: str | None = None  # image ids, one a line (mmseg `split`/`ann_file`)
    recursive: bool = False  # scan sub-folders (Cityscapes' per-city folders)
    kind: Literal["files", "coco_json"] = "files"


@dataclass(frozen=True)
class Layout:
    """A directory layout below the dataset root; every part must exist for it to match."""

    name: str
    parts: tuple[Part, ...]
    nested_roots: tuple[str, ...] = ()  # sub-folders of --root that may hold this layout

    def describe(self) -> str:
        items = []
        for part in self.parts:
            if part.kind == "coco_json":
                items.append(f"{part.image_dir}/*{part.image_suffix} + {part.label_dir}")
            else:
                split = f" (ids from {part.split_file})" if part.split_file else ""
                items.append(f"{part.image_dir}/*{part.image_suffix} + {part.label_dir}/*{part.label_suffix}{split}")
        return f"{self.name} layout: " + "; ".join(items)


@dataclass(frozen=True)
class Protocol(InferenceSettings):
    """Inference settings a benchmark is evaluated with unless the user overrides them: the contract's settings
    (default: the paper's 4.1) and the prompt templates."""

    templates: str = DEFAULT_TEMPLATE_SET

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The protocol's settings, with every override that is not None taking the place of its own."""
        return {f.name: overrides[f.name] if overrides.get(f.name) is not None else getattr(self, f.name)
                for f in fields(self)}


PAPER_PROTOCOL = Protocol()
# The embedded tiny CLIP's: 96 px images, 64 px windows (its training size), the captions' wording.
SYNTHETIC_PROTOCOL = Protocol(short_side=96, window=64, stride=32, templates="plain")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything evaluation needs to know about one benchmark."""

    name: str
    title: str
    classes: tuple[str, ...]
    layouts: tuple[Layout, ...]
    background_threshold: float | None = None  # GroupViT's bg_thresh; set exactly for the "with background" datasets
    reduce_zero_label: bool = False  # label 0 -> ignore, others shift down by one (ADE, VOC20, Context59)
    ignored_leading_labels: int = 0  # the same for the first N label values (synthetic objects: the backdrops)
    ignore_index: int = 255
    # RGB label images: "voc" decodes them with the VOC palette (unknown colours -> void); a tuple of
    # (r, g, b, label) is a user's palette file (mgca-eval --dataset folder --palette), where unknown colours are an
    # error naming the file
    rgb_palette: str | tuple[tuple[int, int, int, int], ...] | None = None
    aliases: tuple[str, ...] = field(default=())
    protocol: Protocol = PAPER_PROTOCOL
    class_prompts: tuple[str | None, ...] = ()  # per class its own prompt (a class file's `name: prompt`), or none
    class_source: str = "MMSegmentation CLASSES"
    video: bool = False  # a folder of clips, ROOT/<clip>/ holding each clip's layout (mgca.evalsets.sequences)

    @property
    def with_background(self) -> bool:
        """Background (class 0) is decided by a score threshold (never embedded as text) in these datasets."""
        return self.background_threshold is not None

    @property
    def prompt_classes(self) -> tuple[str, ...]:
        """The names that get text embeddings: background is never embedded, it is a threshold."""
        return self.classes[1:] if self.with_background else self.classes

    @property
    def prompt_texts(self) -> tuple[str | None, ...] | None:
        """Per prompt class its own prompt (None: the templates), aligned with `prompt_classes`; None when no class
        has one."""
        if not any(self.class_prompts):
            return None
        return self.class_prompts[1:] if self.with_background else self.class_prompts

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# The synthetic generator's vocabulary (mgca.pairs.synthetic; its words are defined in runtime.backbone_notice, which
# names them to the user) is its caption language: each image's backdrop is "<texture> background" and each shape
# "<colour> <shape>". The benchmark scores the 40
# object classes and ignores the backdrop, as VOC20 and Context59 ignore their background.
SYNTHETIC_BACKDROPS = tuple(f"{texture} background" for texture in SYNTHETIC_TEXTURES)
SYNTHETIC_OBJECTS = tuple(f"{color} {shape}" for color in SYNTHETIC_COLORS for shape in SYNTHETIC_SHAPES)
SYNTHETIC_CLASSES = SYNTHETIC_BACKDROPS + SYNTHETIC_OBJECTS  # generator mask values


def _synthetic_layouts() -> tuple[Layout, ...]:
    return (Layout("synthetic", (Part("images", "masks", ".png", ".png"),)),)


def _voc_layouts() -> tuple[Layout, ...]:
    mmseg = Layout("mmseg", (Part("JPEGImages", "SegmentationClass", split_file="ImageSets/Segmentation/val.txt"),),
                   nested_roots=("VOCdevkit/VOC2012", "VOC2012"))
    sample = Layout("sample",
                    (Part("samples", "samples", "_image.png", "_target.png"), Part("misc", "misc", ".jpg", ".png")))
    return mmseg, sample


def _context_layouts() -> tuple[Layout, ...]:
    part = Part("JPEGImages", "SegmentationClassContext", split_file="ImageSets/SegmentationContext/val.txt")
    return (Layout("mmseg", (part,), nested_roots=("VOCdevkit/VOC2010", "VOC2010")),)


def _coco_layout(label_suffix: str) -> Layout:
    return Layout("mmseg", (Part("images/val2017", "annotations/val2017", ".jpg", label_suffix),),
                  nested_roots=("coco_stuff164k",))


_SPECS = (
    DatasetSpec("voc21", "Pascal VOC 2012 (21 classes, with background)", VOC_CLASSES, _voc_layouts(),
                background_threshold=0.95, rgb_palette="voc", aliases=("voc",)),
    DatasetSpec("voc20", "Pascal VOC 2012 (20 classes, background ignored)", VOC_CLASSES[1:], _voc_layouts(),
                reduce_zero_label=True, rgb_palette="voc"),
    DatasetSpec("context60", "Pascal Context (60 classes, with background)", ("background",) + CONTEXT59_CLASSES,
                _context_layouts(), background_threshold=0.35, aliases=("context",)),
    DatasetSpec("context59", "Pascal Context (59 classes, background ignored)", CONTEXT59_CLASSES, _context_layouts(),
                reduce_zero_label=True),
    DatasetSpec("coco_object", "COCO-Object (81 classes, with background)", ("background",) + COCO_THINGS,
                (_coco_layout("_instanceTrainIds.png"),
                 Layout("coco-instances", (Part("val2017", "annotations/instances_val2017.json", kind="coco_json"),))),
                background_threshold=0.95, aliases=("coco-object", "object")),
    DatasetSpec("coco_stuff", "COCO-Stuff 164k (171 classes)", COCO_THINGS + COCO_STUFF,
                (_coco_layout("_labelTrainIds.png"),), aliases=("coco_stuff164k", "coco-stuff", "stuff")),
    DatasetSpec("ade20k", "ADE20K (150 classes)", ADE20K_CLASSES,
                (Layout("mmseg", (Part("images/validation", "annotations/validation"),),
                        nested_roots=("ADEChallengeData2016",)),
                 Layout("sample", (Part("sampleData/images", "sampleData/annotations"),))),
                reduce_zero_label=True, aliases=("ade",)),
    DatasetSpec("cityscapes", "Cityscapes (19 classes)", CITYSCAPES_CLASSES,
                (Layout("mmseg",
                        (Part("leftImg8bit/val", "gtFine/val", "_leftImg8bit.png", "_gtFine_labelTrainIds.png",
                              recursive=True),),
                        nested_roots=("cityscapes", "tests/data/pseudo_cityscapes_dataset")),),
                aliases=("city",)),
    # Held-out shapes-on-textures images with exact masks in the generator's classes (backdrops first),
    # written by mgca.pairs.synthetic.write_benchmark. Two protocols over one folder, as the paper's two
    # groups of benchmarks: objects only (backdrop not scored, like VOC20) and objects plus the backdrop
    # "stuff" (every pixel scored, like Context59).
    DatasetSpec("synthetic", f"Synthetic shapes on textures, objects ({len(SYNTHETIC_OBJECTS)} colour-shape classes; "
                "backdrop ignored)", SYNTHETIC_OBJECTS, _synthetic_layouts(),
                ignored_leading_labels=len(SYNTHETIC_BACKDROPS), protocol=SYNTHETIC_PROTOCOL),
    DatasetSpec("synthetic-stuff", f"Synthetic shapes on textures, objects and stuff ({len(SYNTHETIC_CLASSES)} "
                "classes: colour-shape objects and textured backdrops)", SYNTHETIC_CLASSES, _synthetic_layouts(),
                protocol=SYNTHETIC_PROTOCOL, aliases=("synthetic_stuff",)),
    # The moving miniature (mgca.pairs.synthetic_video.write_sequences): clips of the same world, a mask per frame,
    # scored as `synthetic` (objects; backdrop ignored) plus the video metrics (runtime.video_metrics).
    DatasetSpec("synthetic-video", f"Synthetic clips: moving shapes on textures, objects ({len(SYNTHETIC_OBJECTS)} "
                "colour-shape classes; backdrop ignored)", SYNTHETIC_OBJECTS, _synthetic_layouts(),
                ignored_leading_labels=len(SYNTHETIC_BACKDROPS), protocol=SYNTHETIC_PROTOCOL,
                aliases=("synthetic_video",), video=True),
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}
_ALIASES: dict[str, str] = {alias: spec.name for spec in _SPECS for alias in spec.aliases}


def voc_palette() -> list[tuple[int, int, int]]:
    """The 256-entry Pascal VOC colour map (index 255, void, is (224, 224, 192))."""
    palette = []
    for index in range(256):
        r = g = b = 0
        value = index
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette.append((r, g, b))
    return palette
