"""Hugging Face `transformers` CLIPModel checkpoints as open_clip CLIPs.

Small CLIPs (TinyCLIP among them) are published as a `transformers` folder: config.json beside
model.safetensors or pytorch_model.bin. A CLIPModel is the same network as open_clip's CLIP with
other tensor names (q, k and v apart instead of one in_proj, projections stored transposed), so
mgca reads the config (JSON) and the tensors (safetensors, or torch.load with weights_only, by
`mgca.clip_backbone`) and renames them; `transformers` itself is never imported and nothing in the
folder runs. The architecture comes from config.json alone: the weights must fit it exactly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.errors import MgcaError

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CLIP_VOCAB_SIZE = 49408  # open_clip's tokenizer is CLIP's BPE: a checkpoint with another vocabulary needs another
EOS_IDS = (2, 49407)  # 2: transformers' legacy configs (pool at the highest id), 49407: CLIP's end-of-text token
ACTIVATIONS = {"gelu": False, "quick_gelu": True}  # hidden_act -> open_clip's quick_gelu

# transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig defaults, for config.json files that omit a key
TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                     eos_token_id=49407)
VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
PROJECTION_DIM = 512

HF_HINT = "pass a transformers CLIPModel folder (config.json with model.safetensors or pytorch_model.bin)"


class HFCheckpointError(MgcaError, ValueError):
    """A transformers checkpoint mgca cannot read as a CLIP; the message names the fix."""


@dataclass(frozen=True)
class HFCheckpoint:
    """Where a transformers CLIPModel's config and weights are, and what they say."""

    config_path: Path
    weights_path: Path
    config: dict[str, Any]

    @property
    def preprocessor(self) -> dict[str, Any]:
        path = self.config_path.with_name(PREPROCESSOR_FILE)
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            return {}

    def image_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The normalisation of preprocessor_config.json, when it gives one (else CLIP's)."""
        pre = self.preprocessor
        mean, std = pre.get("image_mean"), pre.get("image_std")
        if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
            return tuple(float(m) for m in mean), tuple(float(s) for s in std)
        return None


def _read_config(path: Path) -> dict[str, Any] | None:
    """config.json as a dict, or None when it is not a transformers config (no model_type)."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise HFCheckpointError(f"{path} is not readable JSON ({type(err).__name__}); re-download the "
                                "checkpoint's config.json") from None
    return config if isinstance(config, dict) and "model_type" in config else None


def find_hf_checkpoint(path: Path) -> HFCheckpoint | None:
    """The transformers checkpoint at `path` (a folder, or a weights file with config.json beside it), or None
    when `path` is a plain weights file (OpenAI or open_clip). A non-CLIP transformers checkpoint is refused."""
    if path.is_dir():
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise HFCheckpointError(f"CLIP weights folder {path} has no {CONFIG_FILE}; {HF_HINT}, or a weights file")
        weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
        if weights is None:
            sharded = any(path.glob("*.index.json"))
            raise HFCheckpointError(f"folder {path} holds no {' or '.join(WEIGHT_FILES)}"
                                    + (" (sharded checkpoints are not read: save it unsharded)" if sharded else "")
                                    + f"; {HF_HINT}")
        config = _read_config(config_path)
        if config is None:
            raise HFCheckpointError(f"{config_path} is not a transformers config (no model_type); {HF_HINT}")
    else:
        config_path = path.with_name(CONFIG_FILE)
        config = _read_config(config_path) if config_path.is_file() else None
        if config is None:
            return None
        weights = path
    _check_model_type(config, config_path)
    return HFCheckpoint(config_path, weights, config)


def _check_model_type(config: dict[str, Any], where: Path) -> None:
    kind = config.get("model_type")
    if kind == "clip":
        return
    if kind in ("clip_vision_model", "clip_text_model"):
        raise HFCheckpointError(f"{where} describes a {kind}, one of CLIP's two towers; mgca needs a whole "
                                "CLIPModel (image and text towers, model_type 'clip')")
    raise HFCheckpointError(f"{where} describes a transformers {kind!r} model, not a CLIPModel; mgca reads "
                            "CLIPModel checkpoints (model_type 'clip', e.g. TinyCLIP) and OpenAI/open_clip weights")


def _tower(config: dict[str, Any], key: str, defaults: dict[str, Any]) -> dict[str, Any]:
    given = config.get(key) or config.get(f"{key}_dict") or {}
    return {**defaults, **given}


def _mlp_ratio(tower: dict[str, Any], name: str, where: Path) -> float:
    width, hidden = int(tower["hidden_size"]), int(tower["intermediate_size"])
    ratio = hidden / width
    if int(width * ratio) != hidden:  # open_clip sizes the MLP as int(width * mlp_ratio)
        raise HFCheckpointError(f"{where}: the {name} tower's intermediate_size {hidden} is not an open_clip MLP "
                                f"width for hidden_size {width}; mgca cannot build it")
    return ratio


def _heads(tower: dict[str, Any], name: str, where: Path) -> int:
    width, heads = int(tower["hidden_size"]), int(tower["num_attention_heads"])
    if heads < 1 or width % heads:
        raise HFCheckpointError(f"{where}: the {name} tower's hidden_size {width} is not divisible by its "
                                f"{heads} attention heads; the config is damaged, re-download it")
    return heads


def _norm(tower: dict[str, Any]) -> dict[str, Any]:
    eps = float(tower["layer_norm_eps"])
    return {} if eps == 1e-5 else {"norm_kwargs": {"eps": eps}}  # 1e-5: open_clip's LayerNorm default


def open_clip_config(hf: HFCheckpoint) -> tuple[dict[str, Any], str]:
    """(open_clip architecture dict, architecture name) of the checkpoint's config.json.

    The name spells the image tower's shape (patch, width, depth), so two checkpoints of the same shape share
    it and the weight hashes tell them apart."""
    where = hf.config_path
    vision = _tower(hf.config, "vision_config", VISION_DEFAULTS)
    text = _tower(hf.config, "text_config", TEXT_DEFAULTS)
    acts = {vision["hidden_act"], text["hidden_act"]}
    if not acts <= set(ACTIVATIONS) or len(acts) != 1:
        raise HFCheckpointError(f"{where}: hidden_act {vision['hidden_act']!r} (image) / {text['hidden_act']!r} "
                                f"(text); mgca builds CLIPs whose two towers share gelu or quick_gelu")
    if int(text["vocab_size"]) != CLIP_VOCAB_SIZE or int(text.get("eos_token_id") or 2) not in EOS_IDS:
        raise HFCheckpointError(f"{where}: a text vocabulary of {text['vocab_size']} tokens (end token "
                                f"{text.get('eos_token_id')}); mgca tokenizes with CLIP's {CLIP_VOCAB_SIZE}-token BPE")
    if int(vision["num_channels"]) != 3:
        raise HFCheckpointError(f"{where}: an image tower of {vision['num_channels']} channels; mgca feeds RGB")
    patch, size = int(vision["patch_size"]), int(vision["image_size"])
    if size % patch:
        raise HFCheckpointError(f"{where}: image_size {size} is not a multiple of patch_size {patch}; the config "
                                "is damaged, re-download it")
    width = int(vision["hidden_size"])
    heads = _heads(vision, "image", where)
    arch_cfg = {
        "embed_dim": int(hf.config.get("projection_dim", PROJECTION_DIM)),
        "quick_gelu": ACTIVATIONS[vision["hidden_act"]],
        "vision_cfg": {"image_size": size, "layers": int(vision["num_hidden_layers"]), "width": width,
                       "head_width": width // heads, "mlp_ratio": _mlp_ratio(vision, "image", where),
                       "patch_size": patch, **_norm(vision)},
        "text_cfg": {"context_length": int(text["max_position_embeddings"]), "vocab_size": int(text["vocab_size"]),
                     "width": int(text["hidden_size"]), "heads": _heads(text, "text", where),
                     "layers": int(text["num_hidden_layers"]), "mlp_ratio": _mlp_ratio(text, "text", where),
                     **_norm(text)},
    }
    name = f"hf-clip-vit-p{patch}-w{width}-d{arch_cfg['vision_cfg']['layers']}"
    return arch_cfg, name


_TOWERS = (("vision_model.", "visual."), ("text_model.", ""))
_TOP = {  # transformers name after the tower prefix -> open_clip name after the tower prefix
    "embeddings.class_embedding": "class_embedding",
    "embeddings.patch_embedding.weight": "conv1.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "pre_layrnorm.weight": "ln_pre.weight", "pre_layrnorm.bias": "ln_pre.bias",
    "post_layernorm.weight": "ln_post.weight", "post_layernorm.bias": "ln_post.bias",
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias",
}
_BLOCK = {
    "self_attn.out_proj.weight": "attn.out_proj.weight", "self_attn.out_proj.bias": "attn.out_proj.bias",
    "layer_norm1.weight": "ln_1.weight", "layer_norm1.bias": "ln_1.bias",
    "layer_norm2.weight": "ln_2.weight", "layer_norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight", "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight", "mlp.fc2.bias": "mlp.c_proj.bias",
}
_PROJECTIONS = {"visual_projection.weight": "visual.proj", "text_projection.weight": "text_projection"}


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CLIPModel state dict under open_clip's names: q, k, v joined into in_proj, projections transposed.

    A tensor with no open_clip counterpart keeps its name (and the loader reports it as unexpected); a block
    missing one of q, k, v gets no in_proj (reported as missing)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):  # a buffer older transformers saved: positions 0..n-1
            continue
        if key in _PROJECTIONS:
            out[_PROJECTIONS[key]] = value.t().contiguous()
            continue
        if key == "logit_scale":
            out[key] = value
            continue
        prefix = next(((hf, oc) for hf, oc in _TOWERS if key.startswith(hf)), None)
        if prefix is None:
            out[key] = value
            continue
        rest = key[len(prefix[0]):]
        if rest in _TOP:
            out[prefix[1] + _TOP[rest]] = value
            continue
        parts = rest.split(".", 3)
        if len(parts) == 4 and parts[:2] == ["encoder", "layers"] and parts[2].isdigit():
            block = f"{prefix[1]}transformer.resblocks.{parts[2]}."
            tail = parts[3]
            if tail in _BLOCK:
                out[block + _BLOCK[tail]] = value
                continue
            if tail.startswith("self_attn.") and tail[len("self_attn."):][:6] in ("q_proj", "k_proj", "v_proj"):
                which, kind = tail[len("self_attn."):].split(".", 1)
                qkv.setdefault((block, kind), {})[which] = value
                continue
        out[key] = value
    for (block, kind), parts in qkv.items():
        if set(parts) == {"q_proj", "k_proj", "v_proj"}:
            out[f"{block}attn.in_proj_{kind}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return out


__all__ = ["HFCheckpoint", "HFCheckpointError", "convert_state_dict", "find_hf_checkpoint", "open_clip_config"]
