"""Frozen CLIP backbone: dense features, positional resampling, text side, weight loading errors (the dense
modes themselves: test_dense_modes.py)."""
from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file

from mgca.clip_backbone import BackboneError, build_backbone, build_clip_model
from mgca.config import BackboneConfig
from mgca.prompts import TCL_TEMPLATES


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(BackboneConfig())


@pytest.fixture(scope="module")
def tiny_state(tmp_path_factory):
    model, _ = build_clip_model(BackboneConfig(init_seed=7))
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return model.state_dict(), path


@pytest.mark.parametrize("size", [(224, 224), (448, 320), (32, 96)])
def test_dense_features_any_multiple_of_patch(backbone, size):
    feats = backbone.dense_features(torch.randn(2, 3, *size))
    assert feats.shape == (2, backbone.embed_dim, size[0] // 16, size[1] // 16)
    assert torch.isfinite(feats).all()


def test_dense_features_reject_non_multiple(backbone):
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        backbone.dense_features(torch.randn(1, 3, 225, 224))


def test_positional_embedding_resampling(backbone):
    native = backbone.clip.visual.positional_embedding
    torch.testing.assert_close(backbone.positional_embedding(14, 14), native)
    resized = backbone.positional_embedding(28, 20)
    assert resized.shape == (1 + 28 * 20, native.shape[1])
    torch.testing.assert_close(resized[0], native[0])  # CLS position is not resampled


def test_frozen_and_always_eval(backbone):
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training and not backbone.clip.training


def test_class_embeddings_average_normalised_prompts(backbone):
    emb = backbone.class_embeddings(["cat", "grass"], TCL_TEMPLATES)
    assert emb.shape == (2, backbone.embed_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    single = backbone.encode_text([TCL_TEMPLATES[0].format("cat")], normalize=True)
    manual = torch.nn.functional.normalize(
        backbone.encode_text([t.format("cat") for t in TCL_TEMPLATES], normalize=True).mean(0), dim=-1)
    torch.testing.assert_close(emb[0], manual)
    assert not torch.allclose(emb[0], single[0])


def test_load_open_clip_pt_and_safetensors(tiny_state, tmp_path):
    state, pt_path = tiny_state
    st_path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, st_path)
    from_pt = build_backbone(BackboneConfig(checkpoint=str(pt_path)))
    from_st = build_backbone(BackboneConfig(checkpoint=str(st_path)))
    random = build_backbone(BackboneConfig(init_seed=0))
    assert from_pt.identity.visual_sha256 == from_st.identity.visual_sha256
    assert from_pt.identity.visual_sha256 != random.identity.visual_sha256
    assert from_pt.identity.source == str(pt_path.resolve())


def test_load_openai_torchscript_archive(tiny_state, tmp_path):
    """OpenAI's released files are TorchScript archives; they load and switch on QuickGELU."""
    model, _ = build_clip_model(BackboneConfig(init_seed=7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), (torch.randn(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long)),
                                 check_trace=False)
    path = tmp_path / "openai.pt"
    traced.save(str(path))
    loaded, _ = build_clip_model(BackboneConfig(checkpoint=str(path)))
    assert isinstance(loaded.visual.transformer.resblocks[0].mlp.gelu,
                      type(__import__("open_clip").transformer.QuickGELU()))
    torch.testing.assert_close(loaded.visual.proj, model.visual.proj)


def test_missing_checkpoint_error(tmp_path):
    with pytest.raises(BackboneError, match="does not exist; pass the local path"):
        build_backbone(BackboneConfig(checkpoint=str(tmp_path / "nope.pt")))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_checkpoint_error(tmp_path, suffix):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(BackboneError, match="(corrupt|not a readable)"):
        build_backbone(BackboneConfig(checkpoint=str(path)))


def test_architecture_mismatch_error(tiny_state, tmp_path):
    state, _ = tiny_state
    bad = dict(state)
    bad["visual.proj"] = torch.zeros(64, 32)
    del bad["ln_final.weight"]
    path = tmp_path / "other.pt"
    torch.save(bad, path)
    with pytest.raises(BackboneError, match="does not match architecture 'mgca-tiny'.*1 missing.*1 wrong-shape"):
        build_backbone(BackboneConfig(checkpoint=str(path)))


def test_unknown_architecture_error():
    with pytest.raises(BackboneError, match="unknown CLIP architecture 'ViT-Nope'"):
        build_backbone(BackboneConfig(arch="ViT-Nope"))
