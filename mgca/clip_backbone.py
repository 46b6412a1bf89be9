"""The frozen CLIP backbone: dense patch features (a training-free mode, see mgca.dense_modes) and
prompt-averaged text features.

Weights come only from a local file the user names (OpenAI TorchScript archive, an open_clip
state dict as .pt/.bin/.safetensors, or a Hugging Face `transformers` CLIPModel folder, converted
by mgca.hf_clip); without one the model is randomly initialised from a seed, which is what the
tests and the embedded default use. The dense modes need a plain ViT: other towers are refused
when they load, before any weights are read.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from runtime.contract import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from runtime.errors import MgcaError

from .config import BackboneConfig
from .dense_modes import DENSE_MODES, MIN_DEPTH, Tower
from .hf_clip import HFCheckpoint, convert_state_dict, find_hf_checkpoint, open_clip_config
from .torchscript import is_torchscript_archive, read_torchscript_state_dict


class BackboneError(MgcaError, ValueError):
    """The CLIP weights or architecture cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class BackboneIdentity:
    """What a decoder was trained on top of; checkpoints, exports and text caches record it."""

    arch: str
    source: str  # checkpoint path, or "random-init(seed=N)"
    dense_mode: str
    visual_sha256: str
    text_sha256: str
    context_length: int | None = None  # tokens the text tower reads: a text cache names it when it is refused

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bundled_config(arch: str) -> dict[str, Any] | None:
    path = resources.files("mgca").joinpath("model_configs").joinpath(f"{arch}.json")
    return json.loads(path.read_text()) if path.is_file() else None


def is_bundled_arch(arch: str) -> bool:
    """The tiny architectures shipped for tests and the embedded default (random init there is on purpose)."""
    return _bundled_config(arch) is not None


def model_config(arch: str) -> dict[str, Any]:
    """The architecture dict of a bundled (mgca-tiny) or open_clip model name."""
    cfg = _bundled_config(arch)
    if cfg is None:
        cfg = open_clip.get_model_config(arch)
    if cfg is None:
        known = ", ".join(open_clip.list_models()[:8])
        raise BackboneError(f"unknown CLIP architecture {arch!r}; use mgca-tiny or an open_clip name "
                            f"such as {known}, ...")
    return dict(cfg)


def _read_state_dict(path: Path, trust_torchscript: bool = False) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict in `path`, and whether its weights need QuickGELU (an OpenAI TorchScript archive, or a file
    of mgca-weights that records it).

    Nothing in the file runs: safetensors and torch.save files are read with weights_only, a TorchScript
    archive's tensors by mgca.torchscript; only `trust_torchscript` hands an archive to torch.jit.load."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), False
        except Exception as err:  # safetensors raises several error types for bad files
            raise BackboneError(f"CLIP checkpoint {path} is not a readable safetensors file ({err}); "
                                "re-download or re-save it") from None
    is_jit = is_torchscript_archive(path)
    if is_jit and not trust_torchscript:
        return read_torchscript_state_dict(path), True
    try:
        if is_jit:
            with warnings.catch_warnings():
                # torch.jit.load is deprecated; trusted OpenAI files may still want it
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(path), map_location="cpu").state_dict(), True
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise BackboneError(f"CLIP checkpoint {path} is corrupt or not a PyTorch file "
                            f"({type(err).__name__}); re-download it") from None
    quick_gelu = False
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        quick_gelu = obj.get("quick_gelu") is True  # recorded by mgca-weights (OpenAI's weights need QuickGELU)
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(f"CLIP checkpoint {path} holds no state dict of tensors; give CLIP weights (OpenAI .pt or "
                            "open_clip .pt/.safetensors)")
    return obj, quick_gelu


def _clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    return state


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str,
                  hf: HFCheckpoint | None = None) -> None:
    """Load `state` strictly. Plain weights may have another image size (positions resampled, as open_clip
    does); a transformers checkpoint must fit its own config.json exactly."""
    state = _clean_state_dict(state)
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    if hf is None:
        open_clip.factory.resize_pos_embed(state, model)
    own = model.state_dict()
    non_persistent = {name for name, _ in model.named_buffers()} - set(own)  # e.g. the text attn_mask
    state = {k: v for k, v in state.items() if k not in non_persistent}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        example = (wrong_shape or missing or unexpected)[0]
        if hf is not None:
            raise BackboneError(
                f"{hf.config_path.name} and the weights {hf.weights_path} disagree ({len(missing)} missing, "
                f"{len(unexpected)} unexpected, {len(wrong_shape)} wrong-shape tensors, e.g. {example!r}); "
                "re-download the checkpoint, or put back the config.json it was saved with"
            )
        raise BackboneError(
            f"CLIP checkpoint {path} does not match architecture {arch!r} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong_shape)} wrong-shape keys, e.g. {example!r}); "
            "set backbone.arch to the architecture these weights were trained with"
        )
    model.load_state_dict(state, strict=True)


def sha256_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """Hash of named tensors (sorted names + raw bytes): the identity of weights in checkpoints and exports."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


PLAIN_VIT_HINT = ("use a plain-ViT CLIP: an open_clip ViT (ViT-B-16, ViT-B-32, ViT-L-14, ...) or a transformers "
                  "CLIPModel such as TinyCLIP")
_CUSTOM_BLOCK_KEYS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")


def dense_tower_problem(arch_cfg: dict[str, Any]) -> str | None:
    """Why the dense modes cannot serve this image tower, or None. They replace the last attention block of a
    plain ViT whose CLS token, through ln_post and proj, is the image embedding; anything else has no such
    block or gives patch tokens the text space never saw."""
    vision = arch_cfg.get("vision_cfg", {})
    timm_name = str(vision.get("timm_model_name") or "")
    if "fastvit" in timm_name:
        return f"its image tower is a conv-hybrid FastViT ({timm_name}, MobileCLIP) ending in average pooling"
    if "siglip" in timm_name:
        return f"its image tower ({timm_name}) ends in an attention-pool head, not a CLS token"
    if "convnext" in timm_name:
        return f"its image tower is a ConvNeXt ({timm_name}): convolutions, no attention block"
    if timm_name:
        return f"its image tower is a timm model ({timm_name}) whose blocks the dense modes do not reach"
    if isinstance(vision.get("layers"), (list, tuple)):
        return "its image tower is a ModifiedResNet ending in an attention-pool head"
    if vision.get("attentional_pool"):
        return "its image tower ends in an attention-pool head"
    if vision.get("pool_type", "tok") != "tok":
        return f"its image tower pools the tokens ({vision['pool_type']!r}) instead of reading the CLS token"
    if vision.get("block_type") == "custom" or any(vision.get(key) for key in _CUSTOM_BLOCK_KEYS):
        return "its image tower uses open_clip's custom attention block"
    return None


def load_clip(cfg: BackboneConfig) -> tuple[nn.Module, str, str]:
    """(open_clip CLIP with the requested weights, architecture name, source description).

    The architecture is `cfg.arch`, except for a transformers checkpoint, whose config.json gives it (and its
    name, see `mgca.hf_clip.open_clip_config`); `cfg.quick_gelu` does not apply there either."""
    path, hf = None, None
    if cfg.checkpoint is not None:
        path = Path(cfg.checkpoint).expanduser()
        if not path.exists():
            raise BackboneError(f"CLIP checkpoint {path} does not exist; pass the local path of the weights "
                                "(nothing is downloaded)")
        hf = find_hf_checkpoint(path)
    arch, arch_cfg = (open_clip_config(hf)[::-1] if hf is not None else (cfg.arch, model_config(cfg.arch)))
    problem = dense_tower_problem(arch_cfg)
    if problem is not None:
        raise BackboneError(f"architecture {arch!r} cannot give dense features: {problem}; {PLAIN_VIT_HINT}")
    if arch_cfg.get("custom_text") or "hf_model_name" in arch_cfg.get("text_cfg", {}):
        raise BackboneError(f"architecture {arch!r} uses a Hugging Face text tower; mgca supports CLIP's own "
                            "text transformer")
    state, needs_quick_gelu = None, False
    if hf is not None:
        state = convert_state_dict(_read_state_dict(hf.weights_path)[0])
    elif path is not None:
        state, needs_quick_gelu = _read_state_dict(path, cfg.trust_torchscript)
        if any(key.startswith(("vision_model.", "text_model.")) for key in state):
            raise BackboneError(f"CLIP checkpoint {path} holds transformers CLIPModel weights but no config.json lies "
                                "beside it; pass the checkpoint's folder (config.json with the weights)")
    if hf is None:
        default_gelu = needs_quick_gelu or arch_cfg.get("quick_gelu", False)
        quick_gelu = cfg.quick_gelu if cfg.quick_gelu is not None else default_gelu
        arch_cfg["quick_gelu"] = quick_gelu
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        model = open_clip.CLIP(**arch_cfg)
    if hf is not None and hf.image_mean_std() is not None:
        model.visual.image_mean, model.visual.image_std = hf.image_mean_std()
    if state is not None:
        _load_weights(model, state, hf.weights_path if hf is not None else path, arch, hf)
        return model, arch, str(path.resolve())
    return model, arch, f"random-init(seed={cfg.init_seed})"


def build_clip_model(cfg: BackboneConfig) -> tuple[nn.Module, str]:
    """An open_clip CLIP with the requested weights; returns (model, source description)."""
    model, _, source = load_clip(cfg)
    return model, source


class FrozenCLIP(nn.Module):
    """CLIP's two towers, frozen, exposing dense pixel features and text features.

    Dense features: the tokens of every block but the last, then the last block as `dense_mode`
    defines it (mgca.dense_modes: "maskclip"/"tcl" is the paper's MaskCLIP computation, spec
    "Dense CLIP features"), then ln_post and proj on every patch token; CLS is dropped.
    """

    def __init__(self, clip: nn.Module, arch: str, source: str, dense_mode: str = "tcl"):
        super().__init__()
        if dense_mode not in DENSE_MODES:
            raise BackboneError(f"dense_mode {dense_mode!r} is unknown; use one of {', '.join(DENSE_MODES)}")
        blocks = clip.visual.transformer.resblocks
        if not isinstance(getattr(blocks[-1], "attn", None), nn.MultiheadAttention):
            raise BackboneError(f"architecture {arch!r} has no standard attention block; dense features need "
                                "a plain ViT CLIP")
        if len(blocks) < MIN_DEPTH.get(dense_mode, 1):
            raise BackboneError(f"dense_mode {dense_mode!r} needs a ViT with at least {MIN_DEPTH[dense_mode]} blocks; "
                                f"{arch!r} has {len(blocks)}: choose another mode or architecture")
        self.clip = clip
        self.arch = arch
        self.source = source
        self.dense_mode = dense_mode
        self.tokenizer = self._make_tokenizer(arch, clip.context_length)
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _make_tokenizer(arch: str, context_length: int):
        return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)

    def train(self, mode: bool = True) -> FrozenCLIP:
        """Always eval: the encoders are frozen (dropout and norm statistics never change)."""
        return super().train(False)

    @property
    def embed_dim(self) -> int:
        return int(self.clip.visual.proj.shape[1])

    @property
    def patch_size(self) -> int:
        patch = self.clip.visual.patch_size
        return int(patch[0] if isinstance(patch, (tuple, list)) else patch)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(getattr(self.clip.visual, "image_mean", None) or OPENAI_CLIP_MEAN)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(getattr(self.clip.visual, "image_std", None) or OPENAI_CLIP_STD)

    @cached_property
    def identity(self) -> BackboneIdentity:
        state = self.clip.state_dict()
        visual = {k: v for k, v in state.items() if k.startswith("visual.")}
        text = {k: v for k, v in state.items() if not k.startswith("visual.")}
        return BackboneIdentity(self.arch, self.source, self.dense_mode, sha256_tensors(visual), sha256_tensors(text),
                                int(self.clip.context_length))

    def positional_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """CLS + grid positional embeddings, bicubic-resampled to the input grid (cached per size)."""
        pos = self.clip.visual.positional_embedding
        key = (grid_h, grid_w, pos.device, pos.dtype)
        if key not in self._pos_cache:
            cls_pos, grid_pos = pos[:1], pos[1:]
            side = int(round(grid_pos.shape[0] ** 0.5))
            if (side, side) == (grid_h, grid_w):
                resized = grid_pos
            else:
                grid = grid_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
                grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
                resized = grid.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1).to(pos.dtype)
            self._pos_cache[key] = torch.cat([cls_pos, resized], dim=0).detach()
        return self._pos_cache[key]

    def _apply(self, fn, recurse=True):
        self._pos_cache = {}
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C, H/patch, W/patch) projected patch features."""
        height, width = images.shape[-2:]
        patch = self.patch_size
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if height % patch or width % patch:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch}; "
                             "pad or resize it")
        visual = self.clip.visual
        x, tower, (grid_h, grid_w) = self.tower_input(images)
        tokens = DENSE_MODES[self.dense_mode](tower, x, (grid_h, grid_w))
        x = (visual.ln_post(tokens) @ visual.proj)[:, -grid_h * grid_w:]
        return x.transpose(1, 2).reshape(images.shape[0], -1, grid_h, grid_w)

    def tower_input(self, images: torch.Tensor) -> tuple[torch.Tensor, Tower, tuple[int, int]]:
        """The transformer's (B, 1 + h*w, C) input (CLS, patches, positions, ln_pre), its blocks and the grid."""
        visual = self.clip.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype))
        batch, _, grid_h, grid_w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(batch, 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(grid_h, grid_w).to(x.dtype)
        transformer = visual.transformer
        tower = Tower(transformer.resblocks, getattr(transformer, "batch_first", True))
        return visual.ln_pre(x), tower, (grid_h, grid_w)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], normalize: bool = False) -> torch.Tensor:
        """Text features (N, C) for raw strings; not normalised unless asked (Eq. 2 uses raw dots)."""
        device = self.clip.token_embedding.weight.device
        return self.clip.encode_text(self.tokenize(texts).to(device), normalize=normalize)

    @torch.no_grad()
    def class_embeddings(self, class_names: Sequence[str], templates: Sequence[str],
                         batch_size: int = 256, average: str = "normalized",
                         prompts: Sequence[str | None] | None = None) -> torch.Tensor:
        """(K, C) L2-normalised class embeddings: each class's prompt embeddings averaged, then normalised.
        average "normalized" normalises each prompt embedding first (CLIP's zero-shot recipe); "raw" averages
        them as they come (TCL's `build_text_embedding`); see `mgca.prompts.template_average`. A class with its
        own prompt (`prompts[k]`, from a class file's `name: prompt`) is that one text, embedded verbatim."""
        from .prompts import class_prompts

        if average not in ("raw", "normalized"):
            raise ValueError(f"average must be 'raw' or 'normalized', got {average!r}")
        per_class = class_prompts(class_names, templates, prompts)
        texts = [text for group in per_class for text in group]
        chunks = [self.encode_text(texts[i:i + batch_size], normalize=average == "normalized")
                  for i in range(0, len(texts), batch_size)]
        features = torch.cat(chunks)
        owner = torch.repeat_interleave(torch.arange(len(per_class)), torch.tensor([len(g) for g in per_class]))
        sums = torch.zeros(len(per_class), features.shape[1], dtype=features.dtype, device=features.device)
        sums.index_add_(0, owner.to(features.device), features)
        return F.normalize(sums, dim=-1)  # a mean and a sum have the same direction


def build_backbone(cfg: BackboneConfig) -> FrozenCLIP:
    """The frozen backbone of `cfg`: architecture by name, weights from a local file or a seed."""
    clip, arch, source = load_clip(cfg)
    return FrozenCLIP(clip, arch, source, cfg.dense_mode)
