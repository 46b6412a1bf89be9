"""Real CLIP weights, fetched once and on purpose: the one place mgca downloads anything.

`fetch_pretrained("ViT-B-16", "openai", "weights/")` asks open_clip's own pretrained download (Hugging Face hub, or
the release URL without huggingface_hub) for the file, checks that it loads into the architecture, and writes it as
one local file that every other command then names (`--weights`, `backbone.checkpoint`). The file is a torch state
dict (read back with weights_only) that also records whether the weights need QuickGELU, as OpenAI's do, so that
fact travels with the file instead of being a flag the user must remember.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import open_clip

from runtime.errors import MgcaError
from runtime.files import check_writable_file, file_sha256

from .checkpoint import atomic_torch_save
from .clip_backbone import _load_weights, _read_state_dict, is_bundled_arch, model_config


class WeightsError(MgcaError, ValueError):
    """The weights cannot be fetched or do not fit; the message says how to fix it."""


@dataclass(frozen=True)
class FetchedWeights:
    path: Path
    sha256: str
    arch: str
    pretrained: str
    source: str  # where open_clip fetched it from
    quick_gelu: bool
    parameters: int

    def describe(self) -> str:
        gelu = ", QuickGELU" if self.quick_gelu else ""
        return (f"wrote {self.path}: {self.arch} pretrained {self.pretrained} ({self.parameters / 1e6:.1f}M "
                f"parameters{gelu}; from {self.source}), sha256 {self.sha256}")


def weights_file_name(arch: str, pretrained: str) -> str:
    """`ViT-B-16.pt` for OpenAI's weights (the name OpenAI gives them), `ViT-B-16-laion2b_s34b_b88k.pt` otherwise."""
    return f"{arch}.pt" if pretrained == "openai" else f"{arch}-{pretrained}.pt"


def pretrained_config(arch: str, pretrained: str) -> dict:
    """open_clip's download record for (arch, tag), or a one-line error listing the tags it has."""
    if is_bundled_arch(arch):
        raise WeightsError(f"{arch} is mgca's own tiny architecture: no pretrained weights exist for it; name an "
                           "open_clip architecture such as ViT-B-16")
    model_config(arch)  # an unknown architecture is its own one-line error
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise WeightsError(f"open_clip has no pretrained {arch} called {pretrained!r}; choose one of "
                           f"{', '.join(tags) if tags else '(none for this architecture)'}")
    return dict(cfg)


def fetch_pretrained(arch: str, pretrained: str, out_dir: str | Path, cache_dir: str | None = None,
                     overwrite: bool = False) -> FetchedWeights:
    """Download (or take from open_clip's cache) `arch`'s `pretrained` weights and write them to `out_dir`."""
    cfg = pretrained_config(arch, pretrained)
    out = Path(out_dir).expanduser() / weights_file_name(arch, pretrained)
    if out.exists() and not overwrite:
        raise WeightsError(f"{out} already exists (sha256 {file_sha256(out)}); use it, or pass --overwrite to fetch "
                           "it again")
    check_writable_file(out, "--out")
    source = f"hf-hub:{cfg['hf_hub'].rstrip('/')}" if cfg.get("hf_hub") and open_clip.pretrained.has_hf_hub() \
        else cfg.get("url", "?")
    try:
        downloaded = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as err:  # network, offline mode, hub errors: many types, one message
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot fetch {arch} {pretrained} from {source} ({first[:300]}); run mgca-weights on a "
                           "machine with internet (HF_HUB_OFFLINE unset), then copy the written file here") from None
    if not downloaded:
        raise WeightsError(f"open_clip gave no file for {arch} {pretrained}")
    state, is_jit = _read_state_dict(Path(downloaded))
    quick_gelu = bool(cfg.get("quick_gelu", False) or is_jit)
    arch_cfg = {**model_config(arch), "quick_gelu": quick_gelu}
    model = open_clip.CLIP(**arch_cfg)
    _load_weights(model, state, Path(downloaded), arch)  # the file fits the architecture, before anything is written
    atomic_torch_save(out, {"state_dict": state, "quick_gelu": quick_gelu, "arch": arch, "pretrained": pretrained})
    return FetchedWeights(out, file_sha256(out), arch, pretrained, source, quick_gelu,
                          sum(t.numel() for t in model.state_dict().values()))


__all__ = ["FetchedWeights", "WeightsError", "fetch_pretrained", "pretrained_config", "weights_file_name"]
