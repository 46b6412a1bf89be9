"""What a model's CLIP knows, in one line every CLI and the demo print: a tiny CLIP pretrained on the synthetic
shapes world (the embedded default) or one with random weights labels a real photo with confident nonsense, and
nothing else would tell the user why.

The synthetic world's vocabulary is defined here (mgca.evalsets.specs and the generator take it from here), because
the notice names it and the lean runtime may not import mgca.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

# The generator's caption language: each backdrop is "<texture> background", each shape "<colour> <shape>".
SYNTHETIC_TEXTURES = ("noisy", "striped", "checkered", "gradient")
SYNTHETIC_COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SYNTHETIC_SHAPES = ("circle", "square", "triangle", "star", "diamond")

# The architectures mgca ships (mgca/model_configs/*.json: mgca-tiny, mgca-synth) are all named so; they are
# only ever random or pretrained on the synthetic world (tests/test_backbone.py pins the prefix to the files).
TINY_ARCH_PREFIX = "mgca-"
RANDOM_SOURCE_PREFIX = "random-init"  # BackboneIdentity.source of a CLIP built from a seed

REAL_WEIGHTS_HINT = ("for real classes, export a bundle from real CLIP weights: mgca-weights ViT-B-16 --pretrained "
                     "openai --out weights/, then mgca-export --clip ViT-B-16 --weights weights/ViT-B-16.pt "
                     "--no-decoder --vocab classes.txt --out bundle/ (README, 'A first real result')")


def backbone_notice(backbone: Mapping[str, Any]) -> str | None:
    """The one line to print for a backbone identity (a manifest's `backbone` block, `BackboneIdentity.to_dict()`),
    or None when its CLIP has real weights."""
    arch, source = str(backbone.get("arch", "")), str(backbone.get("source", ""))
    if source.startswith(RANDOM_SOURCE_PREFIX):
        return (f"this model's CLIP ({arch}) is randomly initialised ({source}): it knows no classes and its labels "
                f"mean nothing; {REAL_WEIGHTS_HINT}")
    if arch.startswith(TINY_ARCH_PREFIX):
        return (f"this model was pretrained on the synthetic shapes world; it knows only its colours "
                f"({', '.join(SYNTHETIC_COLORS)}) and shapes ({', '.join(SYNTHETIC_SHAPES)}) on "
                f"{', '.join(SYNTHETIC_TEXTURES)} backgrounds, so a real photo comes out as nonsense; "
                f"{REAL_WEIGHTS_HINT}")
    return None


def warn_backbone(backbone: Mapping[str, Any], prog: str | None = None) -> str | None:
    """Print the notice of `backbone` (if any) as one 'warning:' line on stderr; returns it."""
    notice = backbone_notice(backbone)
    if notice is not None:
        print(f"{prog + ': ' if prog else ''}warning: {notice}", file=sys.stderr, flush=True)
    return notice


__all__ = ["REAL_WEIGHTS_HINT", "SYNTHETIC_COLORS", "SYNTHETIC_SHAPES", "SYNTHETIC_TEXTURES", "TINY_ARCH_PREFIX",
           "backbone_notice", "warn_backbone"]
