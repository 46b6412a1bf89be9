"""Training-free dense CLIP modes: how CLIP's last block turns tokens into patch features.

A mode takes the visual tower, the tokens after `ln_pre` (B, 1+N, C: CLS first, then the h x w
patch grid row by row) and the grid size, and returns tokens (B, T, C) whose last N are the patch
tokens (T = 1+N with CLS first, or T = N for SC-CLIP, which drops CLS itself). `ln_post` and
`proj` then map them into the joint space, and only then are the N patch tokens kept (onnxruntime's
fp16 graph optimiser crashes on the MaskCLIP graph sliced before `ln_post`). Notation of issue 17:
X is the last block's input, q, k, v are its per-head projections of LN1(X), s = 1/sqrt(head_dim).

| mode        | last-block attention                 | residual + FFN | source |
|-------------|--------------------------------------|----------------|--------|
| `maskclip`  | each token attends to itself: out_proj(v) | kept      | MaskCLIP, ECCV'22 |
| `tcl`       | alias of `maskclip` (TCL's `ignore_last_attn`) | kept | TCL, CVPR'23 |
| `sclip`     | softmax(s qq^T) + softmax(s kk^T)    | kept           | SCLIP, ECCV'24 |
| `clearclip` | softmax(s qq^T)                      | dropped        | ClearCLIP, ECCV'24 |
| `naclip`    | softmax(s kk^T + Omega), Gaussian Omega | dropped     | NACLIP, WACV'25 |
| `scclip`    | see `scclip` (more than the last block) | dropped     | SC-CLIP, 2024 |

docs/dense-modes.md gives each method's own evaluation settings and every place where a mode here
differs from its official code. Shapes depend only on the input size and nothing branches on
values, so for a fixed window every mode exports to ONNX with static shapes; the exported graph
carries the mode and the runtime needs nothing to know about it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from runtime.contract import DENSE_MODE_NAMES

Grid = tuple[int, int]

NACLIP_SIGMA = 5.0  # std of the neighbourhood Gaussian, in patches (NACLIP's `gaussian_std`)


@dataclass(frozen=True)
class SCCLIPSettings:
    """SC-CLIP's constants, the official defaults (`clip/model.py`, `VisionTransformer.__init__`)."""

    outlier_fraction: float = 0.05  # share of patch tokens treated as anomalies (LOF `contamination`)
    beta: float = 0.4  # similarities below beta do not aggregate features
    temperature: float = 3.0  # scale of the mean-centred similarity used as attention logits
    res_cls: float = 0.3  # weight of the CLS token added back to every patch token


SCCLIP = SCCLIPSettings()


@dataclass(frozen=True)
class SCCLIPLayers:
    """Blocks (1-based: block i's output is hidden state i) whose outputs SC-CLIP reads."""

    attention: int  # similarity for the pre-aggregation and the last block's attention (9 of 12)
    post: int  # similarity for the post-aggregation (4 of 12)
    fused: tuple[int, ...]  # hidden states summed for the multi-level branch (4..10 of 12)


def scclip_layers(depth: int) -> SCCLIPLayers:
    """SC-CLIP's layer indices for a ViT of any depth.

    The official code fixes them for 12 blocks: similarity from block 9 (`pre_adjust_idx=8`),
    post-aggregation from block 4 (`post_adjust_idx=3`), fused blocks 4..10 (`multi_start_idx=3`,
    `multi_end_idx=10`). Rule: block i of 12 becomes floor(i * depth / 12 + 1/2), clamped to
    1..depth-1 (the last block is replaced, so it is never read). 12 blocks: 9 / 4 / 4..10
    (the official ones); 24 (ViT-L/14): 18 / 8 / 8..20; 4 (mgca-synth): 3 / 1 / 1..3;
    2 (mgca-tiny): 1 / 1 / 1..1.
    """
    if depth < 2:
        raise ValueError(f"SC-CLIP needs a ViT with at least 2 blocks, this one has {depth}")

    def scaled(index_of_12: int) -> int:
        return min(max(math.floor(index_of_12 * depth / 12 + 0.5), 1), depth - 1)

    start, end = scaled(4), scaled(10)
    return SCCLIPLayers(attention=scaled(9), post=start, fused=tuple(range(start, end + 1)))


@dataclass(frozen=True)
class Tower:
    """The visual transformer's blocks, run batch-first whatever layout this open_clip uses."""

    blocks: Sequence[nn.Module]
    batch_first: bool = True

    @property
    def last(self) -> nn.Module:
        return self.blocks[-1]

    def hidden_states(self, x: torch.Tensor, count: int) -> list[torch.Tensor]:
        """The (B, L, C) outputs of the first `count` blocks, in order."""
        states = []
        x = x if self.batch_first else x.transpose(0, 1)
        for block in self.blocks[:count]:
            x = block(x)
            states.append(x if self.batch_first else x.transpose(0, 1))
        return states

    def run(self, x: torch.Tensor, count: int) -> torch.Tensor:
        """The output of the first `count` blocks (x itself when count is 0)."""
        states = self.hidden_states(x, count)
        return states[-1] if states else x


# ---------------------------------------------------------------- pieces of a block

def project_heads(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of LN1(x), each (B, heads, L, head_dim)."""
    attn: nn.MultiheadAttention = block.attn
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    batch, length, _ = qkv.shape
    q, k, v = qkv.reshape(batch, length, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    return q, k, v


def self_attention(a: torch.Tensor) -> torch.Tensor:
    """softmax(s a a^T) over the last axis: attention from a projection to itself (qq^T or kk^T)."""
    return torch.softmax(a @ a.transpose(-1, -2) * a.shape[-1] ** -0.5, dim=-1)


def attend(block: nn.Module, weights: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, L) weights applied to v, heads merged, out_proj (and layer scale): (B, L, C)."""
    batch, heads, length, dim = v.shape
    mixed = (weights @ v).transpose(1, 2).reshape(batch, length, heads * dim)
    return block.ls_1(block.attn.out_proj(mixed))


def value_path(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """out_proj(v): what attention gives when each token attends only to itself, without the L x L map."""
    attn: nn.MultiheadAttention = block.attn
    width = x.shape[-1]
    value = F.linear(block.ln_1(x), attn.in_proj_weight[2 * width:], attn.in_proj_bias[2 * width:])
    return block.ls_1(attn.out_proj(value))


def feed_forward(block: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The block's second half: y + mlp(LN2(y))."""
    return y + block.ls_2(block.mlp(block.ln_2(y)))


# ---------------------------------------------------------------- the modes

def maskclip(tower: Tower, x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """MaskCLIP (= TCL's `ignore_last_attn`): y = X + out_proj(v); y = y + mlp(LN2(y)).

    Official: MaskCLIP `mmseg/models/backbones/vit.py`, `TransformerEncoderLayer.forward(return_qkv)`
    (`v += x; v = self.ffn(self.norm2(v), identity=v)`); TCL `sclip/model.py`, `Transformer.forward`
    (diagonal attention mask on the last block, which keeps the residual and the MLP).
    """
    x = tower.run(x, len(tower.blocks) - 1)
    y = x + value_path(tower.last, x)
    return feed_forward(tower.last, y)


def sclip(tower: Tower, x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """SCLIP's correlative self-attention: A = softmax(s qq^T) + softmax(s kk^T) (a sum, rows add to 2);
    the residual and the FFN are kept. CLS takes part in the attention.

    Official: SCLIP `clip/model.py`, `VisionTransformer.forward` and `custom_attn(csa=True)`.
    """
    x = tower.run(x, len(tower.blocks) - 1)
    q, k, v = project_heads(tower.last, x)
    y = x + attend(tower.last, self_attention(q) + self_attention(k), v)
    return feed_forward(tower.last, y)


def clearclip(tower: Tower, x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """ClearCLIP: A = softmax(s qq^T); the output is the attention alone (no residual, no FFN).

    Official: ClearCLIP `open_clip/transformer.py`, `VisionTransformer.forward(ignore_residual=True)`
    and `custom_attn(model_type='ClearCLIP')`.
    """
    x = tower.run(x, len(tower.blocks) - 1)
    q, _, v = project_heads(tower.last, x)
    return attend(tower.last, self_attention(q), v)


def neighbourhood_bias(grid: Grid, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """NACLIP's Omega, (1+N, 1+N): exp(-|p_i - p_j|^2 / (2 sigma^2)) between patch positions (in
    patches), 0 in the CLS row and column (CLS gets no bias, it is not masked either)."""
    height, width = grid
    index = torch.arange(height * width, device=device)
    rows, cols = (index // width).to(dtype), (index % width).to(dtype)
    dist2 = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    return F.pad(torch.exp(-dist2 / (2 * sigma ** 2)), (1, 0, 1, 0))


def naclip(tower: Tower, x: torch.Tensor, grid: Grid, sigma: float = NACLIP_SIGMA) -> torch.Tensor:
    """NACLIP: A = softmax(s kk^T + Omega) with Omega the Gaussian neighbourhood bias (sigma = 5
    patches, added to the logits, the same for every head); no residual, no FFN ("reduced" arch).

    Official: NACLIP `clip/model.py`, `VisionTransformer.forward` (`arch == 'reduced'`),
    `custom_attn` (`attn_strategy == 'naclip'`), `gaussian_window`, `get_attention_addition`.
    """
    x = tower.run(x, len(tower.blocks) - 1)
    _, k, v = project_heads(tower.last, x)
    logits = k @ k.transpose(-1, -2) * k.shape[-1] ** -0.5 + neighbourhood_bias(grid, sigma, k.dtype, k.device)
    return attend(tower.last, torch.softmax(logits, dim=-1), v)


def outlier_mask(tokens: torch.Tensor, fraction: float) -> torch.Tensor:
    """(B, N) True for the max(1, floor(fraction * N)) tokens with the largest L2 norm (and ties).

    SC-CLIP's official code finds anomalous tokens with a local outlier factor; its authors note a
    top-k norm test finds the same tokens. This one has a static k, so it exports.
    """
    norms = tokens.norm(dim=-1)
    count = max(1, int(fraction * tokens.shape[1]))
    kth = norms.topk(count, dim=-1).values[:, -1:]
    return norms >= kth


def fill_outliers(tokens: torch.Tensor, outliers: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Each outlier token replaced by the mean of its non-outlier 8-neighbours (kept when it has none)."""
    batch, count, width = tokens.shape
    height, wide = grid
    fmap = tokens.transpose(1, 2).reshape(batch, width, height, wide)
    keep = (~outliers).to(tokens.dtype).reshape(batch, 1, height, wide)
    padded_sum, padded_keep = F.pad(fmap * keep, (1, 1, 1, 1)), F.pad(keep, (1, 1, 1, 1))
    ring = [(dy, dx) for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)]
    neighbour_sum = sum(padded_sum[..., dy:dy + height, dx:dx + wide] for dy, dx in ring)
    neighbour_count = sum(padded_keep[..., dy:dy + height, dx:dx + wide] for dy, dx in ring)
    replace = (1 - keep) * (neighbour_count > 0).to(tokens.dtype)
    filled = fmap * (1 - replace) + neighbour_sum / neighbour_count.clamp(min=1) * replace
    return filled.reshape(batch, width, count).transpose(1, 2)


def cosine_similarity(tokens: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(tokens, dim=-1)
    return unit @ unit.transpose(-1, -2)


def aggregate(tokens: torch.Tensor, similarity: torch.Tensor, beta: float) -> torch.Tensor:
    """Each token becomes the average of the tokens at least beta-similar to it, weighted by similarity."""
    weights = similarity * (similarity >= beta).to(similarity.dtype)
    return weights / (weights.sum(dim=-1, keepdim=True) + 1e-6) @ tokens


def calibrated_attention(
    block: nn.Module, tokens: torch.Tensor, similarity: torch.Tensor, temperature: float
) -> torch.Tensor:
    """SC-CLIP's last-block attention on patch tokens: the mean of softmax(s kk^T) and a softmax over
    the mean-centred, scaled similarity where every below-mean pair is masked out."""
    _, k, v = project_heads(block, tokens)
    centred = (similarity - similarity.mean(dim=(-1, -2), keepdim=True)) * temperature
    from_similarity = torch.softmax(centred.masked_fill(centred < 0, float("-inf")), dim=-1)
    weights = (from_similarity[:, None] + self_attention(k)) / 2
    return attend(block, weights, v)


def scclip(tower: Tower, x: torch.Tensor, grid: Grid, settings: SCCLIPSettings = SCCLIP) -> torch.Tensor:
    """Self-Calibrated CLIP, static version. With h_i the output of block i, L blocks, layers from
    `scclip_layers(L)` (12 blocks: a = 9, p = 4, fused 4..10) and P(.) the patch tokens:

    1. anomalies: the top-5% patch tokens of h_{L-1} by norm, each replaced by the mean of its
       normal 8-neighbours, in h_{L-1} and in h_a (the same positions);
    2. S_a = cos(P(h_a)), S_p = cos(P(h_p)); agg_S(t) averages t over pairs with S >= beta;
    3. x = agg_{S_a}(P(h_{L-1})); x = attn(x) + 0.3 CLS(h_{L-1}); x = agg_{S_p}(x), where attn is
       the last block's attention with weights (softmax(3 (S_a - mean S_a)), below-mean masked,
       + softmax(s kk^T)) / 2, out_proj, no residual, no FFN, CLS not attended;
    4. multi-level: f = sum of h_i over the fused blocks; x += agg_{S_p}(attn(P(f)) + 0.3 CLS(f)).

    Official: SC-CLIP `clip/model.py`, `VisionTransformer.forward`, `custom_attn`,
    `adaptively_aggregate`, `mean_interpolation`, `lof_pytorch`. Differences: top-k norm instead of
    LOF; the similarity mean is per image (the official code runs one image per batch).
    """
    depth = len(tower.blocks)
    layers = scclip_layers(depth)
    hidden = tower.hidden_states(x, depth - 1)
    penultimate = hidden[-1]
    outliers = outlier_mask(penultimate[:, 1:], settings.outlier_fraction)
    attention_similarity = cosine_similarity(fill_outliers(hidden[layers.attention - 1][:, 1:], outliers, grid))
    post_similarity = cosine_similarity(hidden[layers.post - 1][:, 1:])
    last = tower.last

    x = aggregate(fill_outliers(penultimate[:, 1:], outliers, grid), attention_similarity, settings.beta)
    x = (
        calibrated_attention(last, x, attention_similarity, settings.temperature)
        + settings.res_cls * penultimate[:, :1]
    )
    x = aggregate(x, post_similarity, settings.beta)

    fused = torch.stack([hidden[i - 1] for i in layers.fused]).sum(dim=0)
    detail = (
        calibrated_attention(last, fused[:, 1:], attention_similarity, settings.temperature)
        + settings.res_cls * fused[:, :1]
    )
    return x + aggregate(detail, post_similarity, settings.beta)


DenseMode = Callable[[Tower, torch.Tensor, Grid], torch.Tensor]

# The names are runtime.contract's list (the one place they are declared); each is the function of that name, "tcl"
# (TCL's dense features) being MaskCLIP's. A name without a function fails here, at import.
_ALIASES = {"tcl": "maskclip"}
_FUNCTIONS = {mode.__name__: mode for mode in (maskclip, sclip, clearclip, naclip, scclip)}
DENSE_MODES: dict[str, DenseMode] = {name: _FUNCTIONS[_ALIASES.get(name, name)] for name in DENSE_MODE_NAMES}

MIN_DEPTH = {"scclip": 2}  # blocks a mode needs; the others need one

__all__ = ["DENSE_MODES", "DenseMode", "MIN_DEPTH", "NACLIP_SIGMA", "SCCLIP", "SCCLIPLayers", "SCCLIPSettings", "Tower",
           "neighbourhood_bias", "scclip_layers"]
