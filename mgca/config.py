"""Configuration as data: one dataclass per concern, loaded from YAML plus `a.b=value` overrides.

Every default here is the paper's (section 4.1) or the spec's (../shared/mgca-spec.md) unless
its comment says otherwise; the embedded default run overrides a few of them for speed.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from runtime.contract import DENSE_MODE_NAMES
from runtime.errors import MgcaError
from runtime.files import read_text_file


class ConfigError(MgcaError, ValueError):
    """A configuration value or key is wrong; the message says which and how to fix it."""


@dataclass
class BackboneConfig:
    arch: str = "mgca-tiny"  # open_clip architecture name (e.g. ViT-B-16) or a bundled config
    # local CLIP weights: OpenAI .pt, open_clip .pt/.safetensors, or a transformers CLIPModel folder (its config.json
    # then gives the architecture and the activation: arch and quick_gelu do not apply)
    checkpoint: str | None = None
    dense_mode: Literal[DENSE_MODE_NAMES] = "tcl"  # training-free last block, see mgca.dense_modes ("tcl" = "maskclip")
    quick_gelu: bool | None = None  # None: True for OpenAI JIT archives, else the config's
    init_seed: int = 0  # random-init seed when no checkpoint is given (tests, embedded default)
    # Let a TorchScript archive (OpenAI's .pt files) run its own code while loading. Off: only its tensors are
    # read (mgca.torchscript). Never taken from a checkpoint's recorded config: the loader's caller decides.
    trust_torchscript: bool = False


@dataclass
class DecoderConfig:
    kind: Literal["gated_conv", "none"] = "gated_conv"  # "none": frozen MaskCLIP features
    upsample: int = 2
    num_blocks: int = 2


@dataclass
class LossConfig:
    k_obj: float = 0.4  # k, positive object area (Eq. 3)
    k_neg: float = 0.05  # k_n, hard negative region area
    k_pix: float = 0.06  # semi-hard positive rank inside the object (Eq. 7)
    tau: float = 0.07
    scale: float | None = None  # f in Eq. 7; None means 5*sqrt(C)
    use_obj: bool = True
    use_reg: bool = True
    use_pix: bool = True
    chunk_size: int = 0  # images per chunk of S (B, B, L); 0 computes S in one piece
    normalize: bool = False  # L2-normalise V and T before S (experiments only; the paper's S is raw dot products)


@dataclass
class SyntheticWorldConfig:
    """The generated world (mgca.pairs.synthetic) that tiny-CLIP pretraining and decoder training draw from."""

    min_objects: int = 1  # shapes per image, one per quadrant
    max_objects: int = 3
    caption_backdrop: float = 1 / 3  # probability that a caption names the backdrop texture
    caption_partial: float = 0.0  # probability that a multi-object caption names only a subset of its shapes
    caption_varied: bool = False  # many wordings instead of three fixed forms
    # Consecutive samples form groups of this size: member m >= 1 repeats member 0's scene with every shape, every
    # colour or the backdrop changed, so a batch holds hard negatives that only shape (colour, texture) tells apart.
    group_size: int = 1
    # Scale of the backdrop patterns' swing (0: plain backdrops, 1: stripe edges as strong as shape edges). The
    # held-out benchmark is drawn from the same world.
    texture_contrast: float = 1.0
    # Shapes turn by at most this many degrees either way from upright (180: any turn). A tiny CLIP learns
    # turned squares, stars and triangles slowly (it confuses them with each other at any step count measured);
    # real photos are mostly upright. The held-out benchmark is drawn from the same world.
    max_rotation: float = 180.0


@dataclass
class DataConfig:
    source: str | None = "synthetic"  # "synthetic", webdataset shards (dir/brace pattern), folder or csv/tsv
    synthetic_size: int = 512  # number of generated pairs when source is "synthetic"
    synthetic: SyntheticWorldConfig = field(default_factory=SyntheticWorldConfig)
    image_size: int = 224
    crop_scale: tuple[float, float] = (0.5, 1.0)  # RandomResizedCrop area range
    noun_prompts: bool = True  # pick original caption or a noun prompt per sample (GroupViT/TCL)
    num_workers: int = 0
    seed: int = 0


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = 15
    warmup_epochs: float = 2.0
    grad_clip: float = 0.0  # 0 disables clipping


@dataclass
class TrainConfig:
    batch_size: int = 32  # micro-batch per process
    global_batch: int = 0  # 0: batch_size * world_size; else reached by gradient accumulation
    # auto: bf16 where the device computes it natively (CUDA; a CPU with avx512_bf16 or AMX), else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"  # auto: torch.compile on CUDA only
    device: str = "auto"
    output_dir: str = "runs/mgca"
    log_every: int = 10
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0: once per epoch
    max_steps: int = 0  # stop after this many optimizer steps (0: run all epochs)
    resume: str | None = None  # checkpoint path, or "auto" for output_dir/last.pt
    overwrite: bool = False  # replace an earlier run's last.pt in output_dir (otherwise the run is refused)
    seed: int = 0
    # torch intra-op threads (0: torch's default, one per core). Float sums are split by thread, so two runs
    # give identical numbers only with the same count: the embedded default fixes it.
    num_threads: int = 0


@dataclass
class PretrainConfig:
    """Contrastive pretraining of a tiny CLIP on synthetic pairs (the embedded default; see mgca.clip_pretrain)."""

    enabled: bool = False  # only used when backbone.checkpoint is unset
    steps: int = 400
    batch_size: int = 128
    lr: float = 2.0e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    pool_size: int = 0  # 0: fresh pairs every step (the generator is index-addressable); else a pool rendered once
    # bf16 autocast for the CLIP's forward pass: 1.35x faster per step on a CPU with native bf16 (avx512_bf16,
    # AMX), ~10x slower on one without; auto picks bf16 only where it is native. The resolved precision is part
    # of the cache key, like every setting here.
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    seed: int = 0
    cache_dir: str = "runs/clip_cache"  # weights are reused from here when the recipe is unchanged


@dataclass
class BenchmarkConfig:
    """After training: frozen features vs the decoder on the synthetic benchmark (mgca.quality)."""

    enabled: bool = False
    root: str | None = None  # benchmark folder; None: output_dir/synthetic_benchmark (written if missing)
    count: int = 200  # held-out images
    image_size: int = 96
    seed: int = 10_000  # never a training seed
    # Inference settings; None takes the synthetic benchmark's protocol
    # (mgca.evalsets.specs: 96 px, windows 64/32, "a {}").
    short_side: int | None = None
    window: int | None = None
    stride: int | None = None
    units: tuple[int, int] = (0, 36)  # pixel units and the paper's 36 meta-points
    templates: str | None = None


@dataclass
class Config:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-safe dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Turn a YAML/CLI value into the field's declared type, or say what was expected."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: cannot read {value!r}")
    if origin is Literal:
        if isinstance(value, bool) and {"on", "off"} <= set(args):
            value = "on" if value else "off"  # YAML reads a bare on/off as a boolean
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values like 'a,b', got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation is int:
        return _integer(value, where)
    if annotation in (float, str):
        if annotation is float and isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}") from None
    return value


def _integer(value: Any, where: str) -> int:
    """An int from 3, 3.0, "3" or "3.0"; 2.5, "2.5" and true are errors, never rounded away."""
    number = value
    if isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) \
            or isinstance(number, float) and not number.is_integer():
        raise ConfigError(f"{where}: expected int (a whole number), got {value!r}")
    return int(number)


@dataclass(frozen=True)
class Limit:
    """The allowed range of a numeric setting (each element of a tuple setting); None: unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed
    high_open: bool = False

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)

    def allows(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            return False
        return not (self.high is not None and (value > self.high or self.high_open and value == self.high))


POSITIVE, AT_LEAST_ONE, NON_NEGATIVE, FRACTION = Limit(0, low_open=True), Limit(1), Limit(0), Limit(0, 1, low_open=True)

# Every numeric setting's range, in one place: `validate_config` checks them all before any work starts.
LIMITS: dict[str, Limit] = {
    "backbone.init_seed": NON_NEGATIVE,
    "decoder.upsample": AT_LEAST_ONE, "decoder.num_blocks": NON_NEGATIVE,
    "loss.k_obj": FRACTION, "loss.k_neg": FRACTION, "loss.k_pix": Limit(0, 1), "loss.tau": POSITIVE,
    "loss.scale": POSITIVE, "loss.chunk_size": NON_NEGATIVE,
    "data.synthetic_size": AT_LEAST_ONE, "data.image_size": AT_LEAST_ONE, "data.crop_scale": FRACTION,
    "data.num_workers": NON_NEGATIVE, "data.seed": NON_NEGATIVE,
    "data.synthetic.min_objects": Limit(1, 4), "data.synthetic.max_objects": Limit(1, 4),
    "data.synthetic.caption_backdrop": Limit(0, 1), "data.synthetic.caption_partial": Limit(0, 1),
    "data.synthetic.group_size": AT_LEAST_ONE, "data.synthetic.texture_contrast": Limit(0, 1),
    "data.synthetic.max_rotation": Limit(0, 180),
    "optim.lr": POSITIVE, "optim.weight_decay": NON_NEGATIVE, "optim.betas": Limit(0, 1, high_open=True),
    "optim.epochs": AT_LEAST_ONE, "optim.warmup_epochs": NON_NEGATIVE, "optim.grad_clip": NON_NEGATIVE,
    "train.batch_size": AT_LEAST_ONE, "train.global_batch": NON_NEGATIVE, "train.log_every": AT_LEAST_ONE,
    "train.checkpoint_every": NON_NEGATIVE, "train.max_steps": NON_NEGATIVE, "train.seed": NON_NEGATIVE,
    "train.num_threads": NON_NEGATIVE,
    "pretrain.steps": AT_LEAST_ONE, "pretrain.batch_size": Limit(2), "pretrain.lr": POSITIVE,
    "pretrain.weight_decay": NON_NEGATIVE, "pretrain.warmup_steps": NON_NEGATIVE, "pretrain.pool_size": NON_NEGATIVE,
    "pretrain.seed": NON_NEGATIVE,
    "benchmark.count": AT_LEAST_ONE, "benchmark.image_size": AT_LEAST_ONE, "benchmark.seed": NON_NEGATIVE,
    "benchmark.short_side": AT_LEAST_ONE, "benchmark.window": AT_LEAST_ONE, "benchmark.stride": AT_LEAST_ONE,
    "benchmark.units": NON_NEGATIVE,
}


def validate_config(cfg: Config) -> Config:
    """`cfg`, or a one-line ConfigError naming the first setting outside its range (`LIMITS`)."""
    for key, limit in LIMITS.items():
        value = functools.reduce(getattr, key.split("."), cfg)
        values = value if isinstance(value, tuple) else (value,)
        if value is not None and not all(limit.allows(float(v)) for v in values):
            raise ConfigError(f"{key}={value!r} is out of range: it must be {limit.describe()}"
                              + (" (each value)" if isinstance(value, tuple) else ""))
    world = cfg.data.synthetic
    if world.min_objects > world.max_objects:
        raise ConfigError(f"data.synthetic.min_objects={world.min_objects} exceeds max_objects={world.max_objects}")
    low, high = cfg.data.crop_scale
    if low > high:
        raise ConfigError(f"data.crop_scale={cfg.data.crop_scale!r}: the first value (smallest crop area) must not "
                          "exceed the second")
    return cfg


def _fill(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in '{where or 'config'}'; valid keys: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping of {sorted(f.name for f in dataclasses.fields(hint))}")
            kwargs[name] = _fill(hint, value, path)
        else:
            kwargs[name] = _coerce(value, hint, path)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], cls: type = Config) -> Any:
    """A config from nested plain data, types coerced and (for a full Config) ranges checked."""
    cfg = _fill(cls, data or {}, "")
    return validate_config(cfg) if cls is Config else cfg


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["train.batch_size=8", "loss.k_pix=0.1"]` -> nested dict (values stay strings until coerced)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.batch_size=8")
        key, value = item.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1], 1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                section = ".".join(parts[:depth])
                raise ConfigError(f"override {item!r} sets a key inside {section}, which another override sets to "
                                  f"the single value {node!r}; {section} is a section: set its keys one by one "
                                  f"({section}.KEY=VALUE)")
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else value
    return nested


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, cls: type = Config) -> Any:
    """Defaults, then the YAML file (if any), then `a.b=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing YAML file or omit --config")
        try:
            data = yaml.safe_load(read_text_file(path, "config file", ConfigError)) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML ({err.__class__.__name__}); "
                              "fix its syntax") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} holds a {type(data).__name__}, not a mapping of sections "
                              "(train:, data:, ...); write it as `section:` blocks of `key: value` lines")
    data = _merge(data, parse_overrides(overrides or []))
    return config_from_dict(data, cls)
