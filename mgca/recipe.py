"""Which config keys a resumed run may change: `train.resume` continues exactly where last.pt stopped only when
the recipe (the data, its order, the model, the loss, the optimizer and its schedule) is the checkpoint's.

Safe to change are the keys that alter neither the numbers a step computes nor the batches it sees: where things
are written and how often, when to stop, how many threads and loader workers (batch b of epoch e depends only on
the seed, e and b: mgca/pairs/loader.py), the device, where the CLIP weights file lives now (its hashes are
checked apart), and the after-training benchmark. Every other key (including optim.epochs, which reshapes the
learning-rate schedule of the remaining steps) must match, else the run is refused in one line.
"""
from __future__ import annotations

from typing import Any

from .config import Config, ConfigError, config_to_dict

SAFE_TO_CHANGE = ("train.resume", "train.overwrite", "train.output_dir", "train.log_every", "train.checkpoint_every",
                  "train.max_steps", "train.num_threads", "train.device", "train.compile", "data.num_workers",
                  "backbone.checkpoint", "backbone.trust_torchscript", "pretrain.cache_dir", "benchmark")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(_flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def _is_safe(key: str) -> bool:
    return any(key == safe or key.startswith(f"{safe}.") for safe in SAFE_TO_CHANGE)


def recipe_changes(old: Config, new: Config) -> list[str]:
    """`key old -> new` for every recipe key that differs (the safe keys left out), in config order."""
    before, after = _flat(config_to_dict(old)), _flat(config_to_dict(new))
    return [f"{key} {before.get(key)!r} -> {after.get(key)!r}" for key in dict.fromkeys([*before, *after])
            if not _is_safe(key) and before.get(key) != after.get(key)]


class RecipeChangedError(ConfigError):
    """A resumed run's config differs from its checkpoint's in a key that changes the training."""


def check_same_recipe(old: Config, new: Config, where: str) -> None:
    """Refuse to resume `where` (a checkpoint) with a recipe other than the one it was trained with."""
    changes = recipe_changes(old, new)
    if changes:
        shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
        raise RecipeChangedError(f"cannot resume {where}: its recipe differs from this run's in {shown}; resume with "
                                 "the checkpoint's config, choose a new train.output_dir, or pass --overwrite "
                                 "(train.overwrite=true) to start it afresh (safe to change: "
                                 f"{', '.join(SAFE_TO_CHANGE)})")


__all__ = ["SAFE_TO_CHANGE", "RecipeChangedError", "check_same_recipe", "recipe_changes"]
