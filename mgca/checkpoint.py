"""Decoder checkpoints: written atomically, read back with one-line errors, matched to their backbone.

A checkpoint holds the decoder weights, the full config, the backbone identity (architecture,
weight source and hashes) and, for resuming, the optimizer/scheduler/scaler/RNG state. The
frozen CLIP weights are never copied into it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from runtime.errors import MgcaError
from runtime.files import atomic_path

from .config import Config, ConfigError, DecoderConfig, config_from_dict

CHECKPOINT_FORMAT = "mgca-checkpoint/1"


class CheckpointError(MgcaError, ValueError):
    """A checkpoint cannot be read or does not fit; the message names the fix."""


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """`torch.save` via a temporary file + rename, so a crash never leaves half a file (or loses the old one)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)
    return path


def _is_write_failure(err: RuntimeError) -> bool:
    """torch's zip writer reports a failed write (a full disk) as a RuntimeError of its own
    ("[enforce fail at inline_container.cc:...] . PytorchStreamWriter failed writing file ...: file write failed")."""
    return "PytorchStreamWriter failed" in str(err) or "file write failed" in str(err)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a decoder checkpoint atomically; a failed write (a full disk) is one line that says the earlier
    checkpoint is unchanged and how to go on."""
    path = Path(path)
    try:
        return atomic_torch_save(path, {"format": CHECKPOINT_FORMAT, **payload})
    except (OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not _is_write_failure(err):
            raise
        reason = err.strerror if isinstance(err, OSError) and err.strerror else (
            str(err) if isinstance(err, OSError) else "the write failed: is the disk full?")
        step = payload.get("train_state", {}).get("step")
        at = f" at step {step:,}" if isinstance(step, int) else ""
        earlier = f"the earlier {path.name} is unchanged" if path.is_file() else f"no {path.name} was written"
        raise CheckpointError(f"cannot write checkpoint {path}{at} ({reason}): {earlier}; free some "
                              f"space or make {path.parent} writable, then run the same command with "
                              "train.resume=auto to continue from the last checkpoint written") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at `path`, or a CheckpointError saying what is wrong with the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the .pt file written by `python -m mgca.train`")
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({err.strerror or type(err).__name__}); make it "
                              f"readable (chmod u+r {path}) or pass another file") from None
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}); use an earlier "
                              "checkpoint or retrain") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an mgca checkpoint (format "
                              f"{payload.get('format') if isinstance(payload, dict) else None!r}, expected "
                              f"{CHECKPOINT_FORMAT!r}); pass a file written by `python -m mgca.train`")
    return payload


def config_of(payload: dict[str, Any]) -> Config:
    try:
        return config_from_dict(payload["config"])
    except (KeyError, ConfigError) as err:
        raise CheckpointError(f"checkpoint config is unreadable ({err}); the file was written by an "
                              "incompatible mgca version") from None


def check_backbone_matches(recorded: dict[str, str], actual: dict[str, str], where: str) -> None:
    """Refuse to pair a decoder with CLIP weights other than the ones it was trained on."""
    for key in ("arch", "visual_sha256", "text_sha256"):
        if recorded.get(key) != actual.get(key):
            raise CheckpointError(
                f"{where} was trained on backbone {recorded.get('arch')} from {recorded.get('source')} "
                f"but the loaded CLIP differs ({key}: {str(recorded.get(key))[:12]} vs {str(actual.get(key))[:12]}); "
                "pass the same CLIP weights file with --clip-weights"
            )


def load_model(path: str | Path, clip_weights: str | None = None, device: str | torch.device = "cpu",
               dense_mode: str | None = None, with_decoder: bool = True, trust_torchscript: bool = False):
    """Rebuild (model, config) from a checkpoint, in eval mode on `device`.

    `clip_weights` overrides where the CLIP file now lives; `dense_mode` overrides the backbone's
    dense-feature mode; `with_decoder=False` keeps the checkpoint's CLIP but drops its decoder
    (the frozen-feature baseline on the same weights). `trust_torchscript` is the caller's to give: the
    checkpoint's own recorded value never lets a CLIP archive it names run code."""
    from .model import build_model

    payload = load_checkpoint(path)
    cfg = config_of(payload)
    cfg.backbone.trust_torchscript = trust_torchscript
    if clip_weights is not None:
        cfg.backbone.checkpoint = clip_weights
    if dense_mode is not None:
        cfg.backbone.dense_mode = dense_mode
    model = build_model(cfg.backbone, cfg.decoder if with_decoder else DecoderConfig(kind="none"))
    check_backbone_matches(payload.get("backbone", {}), model.backbone.identity.to_dict(), f"checkpoint {path}")
    if with_decoder:
        try:
            model.decoder.load_state_dict(payload["decoder"])
        except (KeyError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint {path} decoder weights do not fit decoder config {cfg.decoder} "
                                  f"({str(err).splitlines()[0]})") from None
    return model.to(device).eval(), cfg
