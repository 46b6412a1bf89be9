"""Dense CLIP modes against slow references written from their formulas, and their ONNX export.

The references loop over heads and tokens in float64 numpy and share no code with mgca.dense_modes;
the earlier, unmodified blocks run through open_clip's own block code. Four towers: the 4-layer
`mgca-synth` (4 heads of 32) at a 64 px window (8 x 8 patches); a ViT-B/16-shaped tower (12
blocks, 12 heads, patch 16) whose width is shrunk from 768 to 384 (head width 32 instead of 64)
to keep the float64 copy and the loops fast, at a 96 px window (6 x 6 patches); and two other
plain-ViT shapes the modes must serve as well: patch 32 with QuickGELU (6 blocks, 3 heads of 32,
a 192 px window of 6 x 6 patches) and patch 16 with GELU and an odd head count (5 blocks, 5 heads
of 24, width 120, at 80 px: 5 x 5 patches).
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
import typing
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from mgca.clip_backbone import BackboneError, FrozenCLIP, build_backbone, build_clip_model, model_config
from mgca.config import BackboneConfig, DecoderConfig
from mgca.dense_modes import DENSE_MODES, SCCLIP, scclip_layers
from tests.support import CLASSES, WINDOW, blocky_image, export_with_cli, torch_predictor

MODES = ["maskclip", "tcl", "sclip", "clearclip", "naclip", "scclip"]
DISTINCT = ["maskclip", "sclip", "clearclip", "naclip", "scclip"]  # "tcl" is maskclip's alias
SIGMA = 5.0  # NACLIP's Gaussian, in patches
# SC-CLIP blocks read (similarity, post-aggregation, fused), spelled out: the official 12-block ones
# (`pre_adjust_idx=8`, `post_adjust_idx=3`, `multi_start_idx=3`, `multi_end_idx=10`, 0-based over
# the outputs of blocks 1..11) and the documented rule's choice for 4 blocks.
SCCLIP_BLOCKS = {12: (9, 4, range(4, 11)), 4: (3, 1, range(1, 4)), 6: (5, 2, range(2, 6)), 5: (4, 2, range(2, 5))}

VITB16_SHAPED = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 384, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}
PATCH32_QUICKGELU = {
    "embed_dim": 64, "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 6, "width": 96, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}
FIVE_HEADS_GELU = {
    "embed_dim": 48,
    "vision_cfg": {"image_size": 224, "layers": 5, "width": 120, "head_width": 24, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}
SHAPED = {"vitb16-shaped": VITB16_SHAPED, "p32-quickgelu": PATCH32_QUICKGELU, "5heads-gelu": FIVE_HEADS_GELU}
# tower -> (window px, images)
TOWERS = {"mgca-synth": (64, 2), "vitb16-shaped": (96, 1), "p32-quickgelu": (192, 1), "5heads-gelu": (80, 1)}


def _clip(tower: str):
    if tower == "mgca-synth":
        clip, _ = build_clip_model(BackboneConfig(arch="mgca-synth", init_seed=3))
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            clip = open_clip.CLIP(**SHAPED[tower])
    with torch.no_grad():  # random-init q/k are small: make attention maps far from uniform
        for block in clip.visual.transformer.resblocks:
            block.attn.in_proj_weight[:2 * block.attn.embed_dim].mul_(3.0)
    return clip.double().eval()


def blocky_images(count: int, window: int) -> torch.Tensor:
    """3 x 3 flat cells plus noise: neighbouring patches alike, far ones not, as in photos (so that
    SC-CLIP's similarity threshold keeps some pairs and drops others)."""
    generator = torch.Generator().manual_seed(1)
    cells = torch.randn(count, 3, 3, 3, generator=generator, dtype=torch.float64)
    noise = torch.randn(count, 3, window, window, generator=generator, dtype=torch.float64)
    return torch.nn.functional.interpolate(cells, size=(window, window), mode="nearest") + 0.3 * noise


class TowerCase:
    """A float64 CLIP, its test images, and each mode's production features computed once."""

    def __init__(self, name: str):
        self.name = name
        self.clip = _clip(name)
        self.images = blocky_images(TOWERS[name][1], TOWERS[name][0])
        self.hidden, self.grid = reference_hidden_states(self.clip, self.images)
        self._features: dict[str, torch.Tensor] = {}

    def features(self, mode: str) -> torch.Tensor:
        if mode not in self._features:
            self._features[mode] = FrozenCLIP(self.clip, self.name, "test", mode).dense_features(self.images)
        return self._features[mode]


@pytest.fixture(scope="module", params=list(TOWERS))
def tower(request):
    return TowerCase(request.param)


# ---------------------------------------------------------------- references (float64 numpy, loops)

def np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def layer_norm(x: np.ndarray, ln) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + ln.eps) * np64(ln.weight) + np64(ln.bias)


def gelu(x: np.ndarray, quick: bool) -> np.ndarray:
    if quick:
        return x / (1 + np.exp(-1.702 * x))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def mlp(block, y: np.ndarray) -> np.ndarray:
    quick = isinstance(block.mlp.gelu, open_clip.transformer.QuickGELU)
    hidden = gelu(y @ np64(block.mlp.c_fc.weight).T + np64(block.mlp.c_fc.bias), quick)
    return hidden @ np64(block.mlp.c_proj.weight).T + np64(block.mlp.c_proj.bias)


def heads(block, x: np.ndarray):
    """Per-head q, k, v of LN1(x): lists over heads of (L, d) arrays."""
    y = layer_norm(x, block.ln_1)
    w, b = np64(block.attn.in_proj_weight), np64(block.attn.in_proj_bias)
    width, n_heads = x.shape[-1], block.attn.num_heads
    d = width // n_heads
    q, k, v = (y @ w[i * width:(i + 1) * width].T + b[i * width:(i + 1) * width] for i in range(3))
    split = lambda a: [a[:, h * d:(h + 1) * d] for h in range(n_heads)]
    return split(q), split(k), split(v), d


def softmax(logits: list[float]) -> np.ndarray:
    row = np.array(logits)
    row = np.exp(row - row.max())
    return row / row.sum()


def attention(block, v_heads, weight) -> np.ndarray:
    """out_proj of concat_h sum_j weight(h, i, j) v_h[j], weight(h, i) giving the row over j."""
    tokens = v_heads[0].shape[0]
    out = np.zeros((tokens, sum(v.shape[1] for v in v_heads)))
    for h, v in enumerate(v_heads):
        d = v.shape[1]
        for i in range(tokens):
            row = weight(h, i)
            out[i, h * d:(h + 1) * d] = sum(row[j] * v[j] for j in range(tokens))
    return out @ np64(block.attn.out_proj.weight).T + np64(block.attn.out_proj.bias)


def dot_row(a, i, scale, bias=None):
    return [scale * float(a[i] @ a[j]) + (0.0 if bias is None else bias(i, j)) for j in range(a.shape[0])]


def gaussian(grid):
    """Omega(i, j) over tokens with CLS first: 0 with CLS, exp(-dist^2 / (2 sigma^2)) between patches."""
    width = grid[1]

    def omega(i, j):
        if i == 0 or j == 0:
            return 0.0
        (ri, ci), (rj, cj) = divmod(i - 1, width), divmod(j - 1, width)
        return math.exp(-((ri - rj) ** 2 + (ci - cj) ** 2) / (2 * SIGMA ** 2))
    return omega


def reference_last_block(mode: str, block, x: np.ndarray, grid) -> np.ndarray:
    """Tokens (1+N, C) entering the last block -> its output tokens, per the issue's formulas."""
    q, k, v, d = heads(block, x)
    s = d ** -0.5
    if mode == "maskclip":  # each token attends to itself only
        y = x + attention(block, v, lambda h, i: np.eye(x.shape[0])[i])
        return y + mlp(block, layer_norm(y, block.ln_2))
    if mode == "sclip":
        y = x + attention(block, v, lambda h, i: softmax(dot_row(q[h], i, s)) + softmax(dot_row(k[h], i, s)))
        return y + mlp(block, layer_norm(y, block.ln_2))
    if mode == "clearclip":
        return attention(block, v, lambda h, i: softmax(dot_row(q[h], i, s)))
    if mode == "naclip":
        return attention(block, v, lambda h, i: softmax(dot_row(k[h], i, s, gaussian(grid))))
    raise AssertionError(mode)


def cosine(a: np.ndarray) -> np.ndarray:
    n = a.shape[0]
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = a[i] @ a[j] / (np.linalg.norm(a[i]) * np.linalg.norm(a[j]))
    return out


def fix_anomalies(patches: np.ndarray, anomalies: set[int], grid) -> np.ndarray:
    height, width = grid
    fixed = patches.copy()
    for t in anomalies:
        r, c = divmod(t, width)
        normal = [
            (r + dr) * width + c + dc
            for dr in (-1, 0, 1)
            for dc in (-1, 0, 1)
            if (dr or dc)
            and 0 <= r + dr < height
            and 0 <= c + dc < width
            and (r + dr) * width + c + dc not in anomalies
        ]
        if normal:
            fixed[t] = np.mean([patches[n] for n in normal], axis=0)
    return fixed


def aggregate_ref(tokens: np.ndarray, sim: np.ndarray) -> np.ndarray:
    out = np.zeros_like(tokens)
    for i in range(tokens.shape[0]):
        weights = [sim[i, j] if sim[i, j] >= SCCLIP.beta else 0.0 for j in range(tokens.shape[0])]
        out[i] = sum(w * tokens[j] for j, w in enumerate(weights)) / (sum(weights) + 1e-6)
    return out


def calibrated_ref(block, patches: np.ndarray, sim: np.ndarray) -> np.ndarray:
    _, k, v, d = heads(block, patches)
    mean = sim.mean()

    def row(h, i):
        centred = [SCCLIP.temperature * (sim[i, j] - mean) for j in range(sim.shape[0])]
        from_sim = softmax([c if c >= 0 else -np.inf for c in centred])
        return (from_sim + softmax(dot_row(k[h], i, d ** -0.5))) / 2
    return attention(block, v, row)


def reference_scclip(blocks, hidden: list[np.ndarray], grid, stats: dict) -> np.ndarray:
    """SC-CLIP from its description (hidden[i] = output of block i, hidden[0] = input): patch tokens out."""
    depth = len(blocks)
    att, post, fused_blocks = SCCLIP_BLOCKS[depth]
    pen = hidden[depth - 1]
    norms = [np.linalg.norm(t) for t in pen[1:]]
    count = max(1, int(SCCLIP.outlier_fraction * len(norms)))
    anomalies = set(int(t) for t in np.argsort(norms)[::-1][:count])
    sim_a = cosine(fix_anomalies(hidden[att][1:], anomalies, grid))
    sim_p = cosine(hidden[post][1:])
    x = aggregate_ref(fix_anomalies(pen[1:], anomalies, grid), sim_a)
    x = calibrated_ref(blocks[-1], x, sim_a) + SCCLIP.res_cls * pen[0]
    x = aggregate_ref(x, sim_p)
    fused = sum(hidden[i] for i in fused_blocks)
    detail = calibrated_ref(blocks[-1], fused[1:], sim_a) + SCCLIP.res_cls * fused[0]
    stats.update(above_beta=float(np.mean(sim_a >= SCCLIP.beta)), above_beta_post=float(np.mean(sim_p >= SCCLIP.beta)),
                 fixed=float(np.abs(fix_anomalies(pen[1:], anomalies, grid) - pen[1:]).max()))
    return x + aggregate_ref(detail, sim_p)


def reference_hidden_states(clip, images: torch.Tensor) -> tuple[list[list[np.ndarray]], tuple[int, int]]:
    """Per image, the tokens after ln_pre and after each unmodified block (open_clip's own code)."""
    visual = clip.visual
    patch = visual.conv1.kernel_size[0]
    grid = (images.shape[-2] // patch, images.shape[-1] // patch)
    pos = np64(FrozenCLIP(clip, "ref", "ref", "maskclip").positional_embedding(*grid))  # bicubic resampling
    per_image = []
    for image in images:
        with torch.no_grad():
            conv = np64(visual.conv1(image[None]))[0]  # (width, h, w)
        tokens = np.concatenate([np64(visual.class_embedding)[None], conv.reshape(conv.shape[0], -1).T]) + pos
        hidden = [layer_norm(tokens, visual.ln_pre)]
        with torch.no_grad():
            for block in visual.transformer.resblocks[:-1]:
                hidden.append(np64(block(torch.from_numpy(hidden[-1])[None]))[0])
        per_image.append(hidden)
    return per_image, grid


def reference_features(clip, mode: str, hidden_per_image, grid, stats: dict) -> np.ndarray:
    """(B, C, h, w) patch features of `mode` from the hidden states of each image."""
    blocks = list(clip.visual.transformer.resblocks)
    out = []
    for hidden in hidden_per_image:
        if mode == "scclip":
            patches = reference_scclip(blocks, hidden, grid, stats)
        else:
            patches = reference_last_block(mode, blocks[-1], hidden[-1], grid)[1:]
        features = layer_norm(patches, clip.visual.ln_post) @ np64(clip.visual.proj)
        out.append(features.T.reshape(-1, *grid))
    return np.stack(out)


# ---------------------------------------------------------------- formula tests

@pytest.mark.parametrize("mode", DISTINCT)  # "tcl" is the same function (test_modes_listed_in_config_and_registry)
def test_mode_matches_formula_reference(tower, mode):
    stats: dict = {}
    expected = reference_features(tower.clip, mode, tower.hidden, tower.grid, stats)
    actual = tower.features(mode).numpy()
    assert actual.dtype == np.float64 and actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9)
    if mode == "scclip":  # the test case exercises every branch of SC-CLIP's formulas
        assert 0.05 < stats["above_beta"] < 0.95 and 0.05 < stats["above_beta_post"] < 0.95, stats
        assert stats["fixed"] > 1e-3, stats


def test_towers_have_the_shapes_they_are_named_for():
    """The formula tests above run on towers of other patch sizes, head counts, depths and activations."""
    seen = set()
    for name in TOWERS:
        visual = _clip(name).visual
        block = visual.transformer.resblocks[0]
        seen.add((visual.conv1.kernel_size[0], block.attn.num_heads, len(visual.transformer.resblocks),
                  type(block.mlp.gelu).__name__))
    assert seen == {(8, 4, 4, "GELU"), (16, 12, 12, "GELU"), (32, 3, 6, "QuickGELU"), (16, 5, 5, "GELU")}


@pytest.mark.parametrize("arch, why", [
    ("MobileCLIP-S1", "conv-hybrid FastViT"),
    ("ViT-B-16-SigLIP", "attention-pool head, not a CLS token"),
    ("convnext_base", "is a ConvNeXt"),
    ("RN50", "ModifiedResNet ending in an attention-pool head"),
    ("coca_ViT-B-32", "ends in an attention-pool head"),
    ("ViT-L-14-CLIPA", "pools the tokens \\('avg'\\) instead of reading the CLS token"),
    ("EVA02-B-16", "timm model"),
])
def test_towers_the_modes_cannot_serve_are_refused_at_load(arch, why):
    """Refused from the architecture's config, before any model is built (timm is not even needed), in one line
    that says why and names towers that work."""
    with pytest.raises(BackboneError) as caught:
        build_backbone(BackboneConfig(arch=arch))
    message = str(caught.value)
    assert f"architecture {arch!r} cannot give dense features" in message and "\n" not in message
    assert re.search(why, message) and "use a plain-ViT CLIP" in message and "ViT-B-16" in message


def test_modes_differ(tower):
    torch.testing.assert_close(tower.features("tcl"), tower.features("maskclip"), rtol=0, atol=0)
    for i, a in enumerate(DISTINCT):
        for b in DISTINCT[i + 1:]:
            assert (tower.features(a) - tower.features(b)).abs().max() > 1e-3, (a, b)


def test_maskclip_is_the_block_with_self_only_attention():
    """Independent of the formulas above: open_clip's own last block, with every token allowed to
    attend only to itself (TCL's `ignore_last_attn`), gives the `maskclip` features."""
    backbone = build_backbone(BackboneConfig(arch="mgca-synth", dense_mode="maskclip"))
    visual = backbone.clip.visual
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = visual.conv1(images)
        grid = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], dim=1) + backbone.positional_embedding(*grid)
        x = visual.ln_pre(x)
        mask = torch.full((x.shape[1], x.shape[1]), float("-inf")).fill_diagonal_(0.0)
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        x = visual.transformer.resblocks[-1](x, attn_mask=mask)
        expected = (visual.ln_post(x[:, 1:]) @ visual.proj).transpose(1, 2).reshape(2, -1, *grid)
    torch.testing.assert_close(backbone.dense_features(images), expected, rtol=1e-5, atol=1e-5)


def test_batch_items_are_independent():
    """Every mode maps each image alone (SC-CLIP's similarity mean is per image)."""
    clip, _ = build_clip_model(BackboneConfig(arch="mgca-synth"))
    images = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(2))
    for mode in DISTINCT:
        backbone = FrozenCLIP(clip, "mgca-synth", "test", mode)
        together = backbone.dense_features(images)
        alone = torch.cat([backbone.dense_features(image[None]) for image in images])
        torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4, msg=mode)


def test_scclip_layer_rule():
    assert scclip_layers(12) == type(scclip_layers(12))(attention=9, post=4, fused=tuple(range(4, 11)))
    for depth, (att, post, fused) in SCCLIP_BLOCKS.items():
        layers = scclip_layers(depth)
        assert (layers.attention, layers.post, layers.fused) == (att, post, tuple(fused))
    assert scclip_layers(24).attention == 18 and scclip_layers(24).fused == tuple(range(8, 21))
    assert scclip_layers(2) == type(scclip_layers(2))(attention=1, post=1, fused=(1,))
    for depth in range(2, 40):
        layers = scclip_layers(depth)
        assert all(1 <= i <= depth - 1 for i in (layers.attention, layers.post, *layers.fused)) and layers.fused


def test_modes_listed_in_config_and_registry():
    literal = typing.get_type_hints(BackboneConfig)["dense_mode"]
    assert set(typing.get_args(literal)) == set(DENSE_MODES) == set(MODES)
    assert DENSE_MODES["tcl"] is DENSE_MODES["maskclip"]


def test_unknown_mode_and_too_shallow_tower_are_one_line_errors():
    with pytest.raises(BackboneError, match="dense_mode 'fancy' is unknown; use one of tcl, maskclip"):
        build_backbone(BackboneConfig(dense_mode="fancy"))
    cfg = model_config("mgca-tiny")
    cfg["vision_cfg"] = {**cfg["vision_cfg"], "layers": 1}
    with pytest.raises(BackboneError, match="'scclip' needs a ViT with at least 2 blocks"):
        FrozenCLIP(open_clip.CLIP(**cfg), "one-block", "test", "scclip")


def test_identity_records_the_mode():
    for mode in ("tcl", "naclip"):
        assert build_backbone(BackboneConfig(dense_mode=mode)).identity.dense_mode == mode


# ---------------------------------------------------------------- ONNX export per mode

@pytest.fixture(scope="module")
def onnx_tools():
    pytest.importorskip("onnx", reason="ONNX parity needs onnx")
    pytest.importorskip("onnxruntime", reason="ONNX parity needs onnxruntime")
    pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")


def check_onnx_parity(model, path: Path, mode: str, window: int) -> None:
    """fp32 max abs error <= 1e-5 at batch 1 and 3, the graph records the mode, and its fp16 copy
    (what TensorRT >= 11 builds from) runs close to fp32."""
    from export.onnx_export import read_metadata
    from runtime.engines import OrtEngine

    assert read_metadata(path)["dense_mode"] == mode
    engine = OrtEngine(path, device="cpu")
    for batch in (1, 3):
        images = torch.randn(batch, 3, window, window, generator=torch.Generator().manual_seed(batch))
        out = engine.run(images.numpy())
        with torch.no_grad():
            ref = model.pixel_embeddings(images).numpy()
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= 1e-5, (mode, batch, np.abs(out - ref).max())
    if importlib.util.find_spec("onnxruntime.transformers") is not None:
        from export.tensorrt_build import fp16_onnx

        half = OrtEngine(fp16_onnx(path, path.with_suffix(".fp16.onnx")), device="cpu").run(images.numpy())
        assert np.linalg.norm(half - ref) / np.linalg.norm(ref) < 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("mode", [m for m in DISTINCT if m != "scclip"])  # scclip: the bundle test below
def test_onnx_export_matches_torch(mode, onnx_tools, tmp_path):
    """The production exporter (`export_onnx`), frozen features of the 4-block tower, 64 px window."""
    from export.onnx_export import export_onnx
    from mgca.model import build_model

    model = build_model(BackboneConfig(arch="mgca-synth", dense_mode=mode), DecoderConfig(kind="none")).eval()
    check_onnx_parity(model, export_onnx(model, tmp_path / f"{mode}.onnx", window=64), mode, 64)


@pytest.mark.slow
@pytest.mark.parametrize("mode", DISTINCT)
def test_onnx_export_of_a_patch32_quickgelu_tower(mode, onnx_tools, tmp_path):
    """Every mode exports on a tower of another shape too: patch 32, QuickGELU, 3 heads, 6 blocks, 128 px window."""
    from export.onnx_export import export_onnx
    from mgca.decoder import build_decoder
    from mgca.model import MGCA

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        clip = open_clip.CLIP(**PATCH32_QUICKGELU)
    backbone = FrozenCLIP(clip, "p32-quickgelu", "test", mode)
    model = MGCA(backbone, build_decoder(DecoderConfig(kind="none"), backbone.embed_dim)).eval()
    assert model.output_stride == 32
    check_onnx_parity(model, export_onnx(model, tmp_path / f"{mode}.onnx", window=128), mode, 128)


@pytest.mark.slow
def test_bundle_records_the_mode_and_the_runtime_runs_it_unchanged(onnx_tools, tmp_path):
    """A decoder trained with `backbone.dense_mode=scclip` goes through `mgca-export` into a bundle whose
    graph matches PyTorch and whose manifest names the mode; runtime.Segmenter, which knows nothing
    of modes, gives the PyTorch labels."""
    from mgca.checkpoint import save_checkpoint
    from mgca.config import Config, config_to_dict
    from mgca.decoder import perturb_decoder
    from mgca.model import build_model
    from runtime import Segmenter
    from runtime.text_cache import load_text_cache

    config = Config()
    config.backbone.dense_mode = "scclip"
    torch.manual_seed(0)
    model = build_model(config.backbone, config.decoder)
    perturb_decoder(model.decoder)
    model.eval()
    checkpoint = tmp_path / "scclip.pt"
    save_checkpoint(checkpoint, {"config": config_to_dict(config), "backbone": model.backbone.identity.to_dict(),
                                 "decoder": model.decoder.state_dict()})
    bundle = export_with_cli(checkpoint, tmp_path / "bundle", CLASSES)
    assert json.loads((bundle / "manifest.json").read_text())["backbone"]["dense_mode"] == "scclip"
    check_onnx_parity(model, bundle / "model.onnx", "scclip", WINDOW)
    segmenter = Segmenter(bundle, backend="onnxruntime", device="cpu")
    reference = torch_predictor(model, load_text_cache(bundle / "text_cache.npz").embeddings)
    rng = np.random.default_rng(0)
    for height, width in [(64, 64), (96, 150)]:
        image = blocky_image(rng, height, width)
        assert (segmenter.segment(image).labels == reference.predict(image)).mean() >= 0.999


def test_export_dense_mode_flag_rebuilds_the_backbone_and_the_manifest_records_the_protocol(tiny_checkpoint,
                                                                                            tmp_path):
    """`mgca-export --dense-mode naclip` on a checkpoint trained in another mode, with protocol flags: the bundle
    names the mode and holds each setting once in `inference`; the runtime follows both, as PyTorch does."""
    from mgca.checkpoint import load_model
    from runtime import Segmenter
    from runtime.text_cache import load_text_cache

    bundle = export_with_cli(tiny_checkpoint, tmp_path / "bundle", CLASSES, "--dense-mode", "naclip", "--bg-rule",
                             "tcl", "--pamr", "2", "--pamr-dilations", "8,16", "--long-side", "0")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["backbone"]["dense_mode"] == "naclip"
    assert {k: manifest["inference"][k] for k in ("bg_rule", "pamr", "pamr_dilations", "long_side", "padding")} == {
        "bg_rule": "tcl", "pamr": 2, "pamr_dilations": [8, 16], "long_side": 0, "padding": "crop"}
    segmenter = Segmenter(bundle, backend="onnxruntime", device="cpu")
    described = segmenter.describe()
    assert described["dense_mode"] == "naclip" and described["bg_rule"] == "tcl" and described["pamr"] == 2
    model, _ = load_model(tiny_checkpoint, dense_mode="naclip")
    reference = torch_predictor(model, load_text_cache(bundle / "text_cache.npz").embeddings, bg_rule="tcl", pamr=2,
                                pamr_dilations=(8, 16), long_side=0, background_threshold=0.4)
    rng = np.random.default_rng(1)
    for height, width in [(64, 64), (96, 150)]:
        image = np.clip(blocky_image(rng, height, width) + rng.normal(0, 4, (height, width, 3)), 0, 255)
        image = image.astype(np.uint8)
        assert (segmenter.segment(image, background_threshold=0.4).labels == reference.predict(image)).mean() >= 0.999
