"""Command-line flags the CLIs share: the inference settings (generated from `runtime.contract.SETTING_SPECS`, the
one place each setting is declared), the model, inference and engine groups, and the argparse types they use.

mgca-eval, mgca-segment and mgca-export all build their setting flags here, so a setting added to the contract
gets its `--flag`, range check and help in every CLI at once. Every setting flag defaults to None (not given):
each CLI fills the unset ones from its own source (a dataset's protocol, a bundle's manifest, the export window),
and `settings_overrides` returns what the user gave. Torch-free: the lean `--engine` path imports this module.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.contract import BACKENDS, DEFAULT_SETTINGS, DENSE_MODE_NAMES, PRECISIONS, SETTING_SPECS, SettingSpec
from runtime.errors import SettingsError

from ..config import ConfigError
from ..evalsets.specs import SYNTHETIC_PROTOCOL

# ---------------------------------------------------------------------------------------------- argparse types

def int_at_least(minimum: int, wanted: str) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`, else a one-line usage error 'expected <wanted>'."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value
    return parse


non_negative_int = int_at_least(0, "an integer >= 0")
positive_int = int_at_least(1, "a positive integer")  # --limit 0 or -1 is an error, never a silent empty run


def setting_type(name: str, spec: SettingSpec) -> Callable[[str], Any]:
    """The argparse type of an integer or integer-list setting: parsed, then checked against its declared range
    (out of range: a usage error naming the range and why it is there)."""
    listed = spec.max_items is not None

    def parse(text: str) -> Any:
        try:
            value = tuple(int(v) for v in text.split(",") if v.strip()) if listed else int(text)
        except ValueError:
            wanted = "comma-separated integers like 1,2,4" if listed else "an integer"
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        try:
            return spec.check(name, value)
        except SettingsError:
            wanted = f"comma-separated {spec.describe()}" if listed else spec.describe()
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}{spec.reason(value)}") from None
    return parse


# ---------------------------------------------------------------------------------------------- settings

def flag(name: str) -> str:
    """The command-line flag of a setting: `pamr_dilations` -> `--pamr-dilations`."""
    return "--" + name.replace("_", "-")


def shown(value: Any) -> str:
    """A setting's value as it is typed on the command line (tuples comma-separated)."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def allowed(spec: SettingSpec) -> str:
    """A setting's range, short: 'crop / image', '0..1024', '1..16 values in 1..128'."""
    if spec.choices:
        return " / ".join(spec.choices)
    span = f"{spec.minimum}..{spec.maximum}"
    return span if spec.max_items is None else f"1..{spec.max_items} values in {span}"


def add_settings_args(parser: argparse.ArgumentParser, title: str, unset: str) -> argparse._ArgumentGroup:
    """A group `title` with one flag per declared inference setting, each defaulting to None (not given); `unset`
    says in the group's help where this CLI takes the settings the user leaves out."""
    group = parser.add_argument_group(title, f"Settings not given: {unset}. The defaults shown are the contract's "
                                             "(runtime.contract.SETTING_SPECS, the paper's protocol).")
    for name, spec in SETTING_SPECS.items():
        default = shown(getattr(DEFAULT_SETTINGS, name))
        if spec.choices:  # argparse lists the choices itself
            group.add_argument(flag(name), choices=spec.choices, default=None, help=f"{spec.help} (default {default})")
        else:
            group.add_argument(flag(name), type=setting_type(name, spec), default=None,
                               metavar="N,N" if spec.max_items else "N",
                               help=f"{spec.help} (default {default}; {allowed(spec)})")
    return group


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The inference settings the user gave (flags left unset are None and are left out)."""
    return {name: getattr(args, name) for name in SETTING_SPECS if getattr(args, name, None) is not None}


def settings_table() -> str:
    """The settings as a markdown table (docs/inference-contract.md, "Settings", shows it verbatim)."""
    rows = ["| setting | flag | default | range | what it does | why that range |", "|---|---|---|---|---|---|"]
    for name, spec in SETTING_SPECS.items():
        rows.append(f"| `{name}` | `{flag(name)}` | `{shown(getattr(DEFAULT_SETTINGS, name))}` | {allowed(spec)} | "
                    f"{spec.help} | {spec.why or '-'} |")
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------------------------------------- flag groups

def add_trust_flag(parser: argparse._ActionsContainer) -> None:
    parser.add_argument("--trust-torchscript", action="store_true",
                        help="let a TorchScript CLIP archive (OpenAI .pt) run its own code while loading; by default "
                        "only its tensors are read")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Which model: a trained checkpoint, or frozen CLIP features (`--decoder none`)."""
    group = parser.add_argument_group("model")
    group.add_argument("--checkpoint", help="decoder checkpoint written by `python -m mgca.train`")
    group.add_argument("--decoder", choices=["checkpoint", "none"], default="checkpoint",
                       help="'none' evaluates frozen MaskCLIP features (the paper's Table 3 baseline row)")
    group.add_argument("--arch", default="mgca-tiny", help="CLIP architecture for --decoder none without a checkpoint")
    group.add_argument("--clip-weights", help="local CLIP weights (OpenAI .pt, open_clip .pt/.safetensors, or a "
                       "transformers CLIPModel folder with its config.json)")
    add_trust_flag(group)
    group.add_argument("--dense-mode", choices=DENSE_MODE_NAMES,
                       help="override the backbone's last-block variant (training-free modes: docs/dense-modes.md); "
                            "not with --engine, whose bundle fixes it")
    group.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """The inference settings, templates and background value of mgca-eval and mgca-segment."""
    synthetic = "/".join(str(getattr(SYNTHETIC_PROTOCOL, name)) for name in ("short_side", "window", "stride"))
    group = add_settings_args(parser, "inference", "with --engine the bundle's manifest, else the dataset's "
                                                   f"protocol (the paper's: these defaults; synthetic: {synthetic})")
    group.add_argument("--templates", default=None,
                       help="prompt template set: tcl (averaged as TCL: raw mean, then L2), single, plain, none "
                            "(default: the dataset's, tcl)")
    group.add_argument("--background-threshold", type=float, default=None,
                       help="the background rule's value: the groupvit/softmax threshold (default: the dataset's, "
                            "GroupViT's .95 VOC, .35 Context, .95 COCO-Object) or the tcl constant (default .5, "
                            ".4 with PAMR)")


def add_engine_args(parser: argparse.ArgumentParser, compare: bool = True) -> None:
    """Run an exported bundle through the lean runtime (what applications ship) instead of PyTorch."""
    group = parser.add_argument_group("exported engine (runtime/)")
    group.add_argument("--engine", metavar="BUNDLE",
                       help="bundle directory written by mgca-export; labels come from runtime.Segmenter, with the "
                            "manifest's inference settings unless flags override them")
    group.add_argument("--backend", choices=["auto", *BACKENDS], default="auto",
                       help="runtime backend for --engine (auto: runtime.engine_choice's rule; the run's JSON and "
                            "printout say what was picked and why)")
    group.add_argument("--precision", choices=["auto", *PRECISIONS], default=None,
                       help="precision for --engine: fp32, bf16 (OpenVINO), int8 (NNCF graph on OpenVINO, else the "
                            "QDQ graph on onnxruntime) or fp16 (TensorRT); default auto: the backend's default")
    group.add_argument("--text-cache", help="text_cache.npz with the dataset's classes (default: the bundle's)")
    if not compare:
        return
    group.add_argument("--compare-torch", metavar="CKPT",
                       help="with --engine: also evaluate this checkpoint in PyTorch and print both side by side")


def engine_args(args: argparse.Namespace) -> dict[str, Any]:
    """runtime.Segmenter keyword arguments of the flags given: the engine choices, and the settings given in
    `settings` (apart from them; the bundle's manifest decides the rest)."""
    given = dict(backend=args.backend, device=args.device, precision=args.precision, text_cache=args.text_cache)
    return {**{key: value for key, value in given.items() if value is not None},
            "settings": settings_overrides(args)}


def check_engine_flags(args: argparse.Namespace) -> None:
    """A flag is applied or refused, never ignored: the engine's flags (--backend, --precision, --text-cache) need
    --engine (its --templates are checked against its text cache: `check_engine_templates`)."""
    if getattr(args, "engine", None):
        return
    given = [name for name, used in (("--backend", getattr(args, "backend", "auto") not in (None, "auto")),
                                     ("--precision", getattr(args, "precision", None) is not None),
                                     ("--text-cache", getattr(args, "text_cache", None) is not None)) if used]
    if given:
        raise ConfigError(f"{given[0]} applies to an exported engine only; pass --engine BUNDLE too, or drop "
                          f"{given[0]}")


def check_engine_templates(args: argparse.Namespace, template_set: str | None, cache: str) -> None:
    """--templates with --engine: the text cache's embeddings were averaged over the templates they were made with,
    so the flag can only agree with them; another set is refused, never ignored."""
    given = getattr(args, "templates", None)
    if given is not None and given != template_set:
        raise ConfigError(f"--templates {given} cannot apply to --engine: its text cache {cache} was made with "
                          f"templates {template_set or 'of its own'}; drop --templates, or make a cache with "
                          f"`mgca-export text --templates {given} ...` and pass it with --text-cache")


# ---------------------------------------------------------------------------------------------- inputs of a run

# Flags that name files a command reads, and folders whose images it reads: no output of the command may be one.
INPUT_FILE_FLAGS = ("checkpoint", "clip_weights", "classes", "palette", "templates", "text_cache", "compare_torch",
                    "vocab", "config")
INPUT_FOLDER_FLAGS = ("root", "images", "masks", "engine")


def read_files(args: argparse.Namespace, output: str | Path) -> tuple[Path, ...]:
    """The files `args` names for reading, plus `output` itself when it is an existing image inside a folder the
    command reads (a dataset's image or mask): what `check_writable_file(output, ..., inputs=...)` must refuse."""
    from runtime.image_files import is_image_name

    files = [Path(value) for name in INPUT_FILE_FLAGS if isinstance(value := getattr(args, name, None), str)]
    out = Path(output).expanduser()
    if out.is_file() and is_image_name(out):
        for name in INPUT_FOLDER_FLAGS:
            folder = getattr(args, name, None)
            if isinstance(folder, str) and out.resolve().is_relative_to(Path(folder).expanduser().resolve()):
                files.append(out)
    return tuple(files)


__all__ = ["DENSE_MODE_NAMES", "INPUT_FILE_FLAGS", "INPUT_FOLDER_FLAGS", "read_files",
           "int_at_least", "non_negative_int", "positive_int", "setting_type", "flag", "shown",
           "allowed",
           "add_settings_args", "settings_overrides", "settings_table", "add_trust_flag", "add_model_args",
           "add_inference_args", "add_engine_args", "engine_args", "check_engine_flags",
           "check_engine_templates"]
