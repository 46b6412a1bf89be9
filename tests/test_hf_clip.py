"""Hugging Face `transformers` CLIPModel checkpoints (mgca.hf_clip): converted on load to the open_clip CLIP that
gives transformers' own embeddings, carried through training, export and a decoder's identity check, and refused
in one line when they cannot be read as a CLIP.

The reference CLIPModels are random-init (no download): a TinyCLIP-ViT-8M/16-shaped one (GELU, saved as
safetensors, microsoft/Cream `TinyCLIP-ViT-8M-16-Text-3M.json`: image tower 256 wide, 10 blocks, 4 heads, patch 16;
text tower 256 wide, 3 blocks, 4 heads; 512-dim joint space) and a small OpenAI-style one (QuickGELU, patch 32,
saved as pytorch_model.bin).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mgca.clip_backbone import BackboneError, build_backbone, sha256_tensors
from mgca.config import BackboneConfig
from mgca.hf_clip import HFCheckpointError
from tests.support import one_line_error

transformers = pytest.importorskip("transformers", reason="transformers (train and test extras) builds the reference "
                                   "CLIPModel")

TINYCLIP_8M_16 = dict(
    projection_dim=512,
    vision_config=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=10, num_attention_heads=4,
                       patch_size=16, image_size=224, hidden_act="gelu"),
    text_config=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=3, num_attention_heads=4,
                     hidden_act="gelu"),
)
OPENAI_STYLE = dict(
    projection_dim=64,
    vision_config=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=3,
                       patch_size=32, image_size=224, hidden_act="quick_gelu"),
    text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                     hidden_act="quick_gelu"),
)
TEXTS = ["a photo of a cat.", "road", "a tree next to a building"]


def reference_clip(shape: dict, seed: int = 0):
    """A random-init transformers CLIPModel whose attention maps are far from uniform (q and k scaled up), so that
    a mix-up of q, k and v in the conversion shows in the embeddings."""
    config = transformers.CLIPConfig(**shape)
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "q_proj" in name or "k_proj" in name:
                param.mul_(6.0)
            elif name.endswith("bias") or "layer_norm" in name or "layrnorm" in name:
                param.add_(0.1 * torch.randn_like(param))  # zeros and ones would hide a swapped bias or scale
    return model


def save_checkpoint(model, folder: Path, weights: str = "safetensors") -> Path:
    """The folder transformers writes: config.json beside model.safetensors, or beside a pytorch_model.bin."""
    if weights == "safetensors":
        model.save_pretrained(folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def features(output) -> torch.Tensor:
    """transformers 4 returns the embeddings, 5 an output whose pooler_output holds them."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.fixture(scope="module")
def tinyclip(tmp_path_factory):
    model = reference_clip(TINYCLIP_8M_16)
    return model, save_checkpoint(model, tmp_path_factory.mktemp("hf") / "tinyclip-8m-16")


@pytest.fixture(scope="module")
def openai_style(tmp_path_factory):
    model = reference_clip(OPENAI_STYLE, seed=1)
    return model, save_checkpoint(model, tmp_path_factory.mktemp("hf") / "openai-style", weights="bin")


@pytest.mark.parametrize("case", ["tinyclip", "openai_style"])
def test_embeddings_equal_transformers(case, request):
    """Image and text embeddings of the converted CLIP equal transformers' forward within 1e-5, and the blocks the
    dense modes run give transformers' hidden states."""
    reference, folder = request.getfixturevalue(case)
    backbone = build_backbone(BackboneConfig(checkpoint=str(folder)))
    vision = reference.config.vision_config
    images = torch.randn(2, 3, vision.image_size, vision.image_size, generator=torch.Generator().manual_seed(0))
    tokens = backbone.tokenize(TEXTS)
    with torch.no_grad():
        expected_image = features(reference.get_image_features(pixel_values=images))
        expected_text = features(reference.get_text_features(input_ids=tokens))
        hidden = reference.vision_model(pixel_values=images, output_hidden_states=True).hidden_states
        x, tower, _ = backbone.tower_input(images)
        ours = [x, *tower.hidden_states(x, len(tower.blocks))]
    assert expected_image.abs().max() > 0.1 and expected_text.abs().max() > 0.1
    torch.testing.assert_close(backbone.clip.encode_image(images), expected_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(backbone.encode_text(TEXTS), expected_text, rtol=0, atol=1e-5)
    assert len(ours) == len(hidden) == vision.num_hidden_layers + 1
    for index, (a, b) in enumerate(zip(ours, hidden, strict=True)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4, msg=f"hidden state {index}")
    gelu = type(backbone.clip.visual.transformer.resblocks[0].mlp.gelu).__name__
    assert gelu == ("QuickGELU" if vision.hidden_act == "quick_gelu" else "GELU")
    assert backbone.patch_size == vision.patch_size and backbone.embed_dim == reference.config.projection_dim


def test_architecture_and_identity_come_from_the_checkpoint(tinyclip, tmp_path):
    """The config gives the architecture whatever backbone.arch says; the identity hashes the converted weights:
    the same for the folder and its weights file, different once one tensor of the file changes."""
    _, folder = tinyclip
    backbone = build_backbone(BackboneConfig(arch="ViT-B-16", checkpoint=str(folder)))
    assert backbone.arch == "hf-clip-vit-p16-w256-d10"
    visual = {k: v for k, v in backbone.clip.state_dict().items() if k.startswith("visual.")}
    assert backbone.identity.visual_sha256 == sha256_tensors(visual)
    assert backbone.identity.source == str(folder.resolve())
    as_file = build_backbone(BackboneConfig(checkpoint=str(folder / "model.safetensors")))
    assert as_file.identity.visual_sha256 == backbone.identity.visual_sha256
    assert as_file.identity.text_sha256 == backbone.identity.text_sha256

    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    state["vision_model.encoder.layers.3.self_attn.k_proj.bias"] += 1e-3
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "config.json").write_text((folder / "config.json").read_text())
    save_file(state, changed / "model.safetensors")
    other = build_backbone(BackboneConfig(checkpoint=str(changed)))
    assert other.identity.visual_sha256 != backbone.identity.visual_sha256
    assert other.identity.text_sha256 == backbone.identity.text_sha256


def test_bin_weights_never_run_code(tmp_path, openai_style):
    """pytorch_model.bin is read with torch.load(weights_only=True): a pickle that would run code is refused."""
    _, folder = openai_style
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "config.json").write_text((folder / "config.json").read_text())
    torch.save({"vision_model.embeddings.class_embedding": Payload()}, hostile / "pytorch_model.bin")
    with pytest.raises(BackboneError, match="is corrupt or not a PyTorch file"):
        build_backbone(BackboneConfig(checkpoint=str(hostile)))
    assert not marker.exists()


# ---------------------------------------------------------------- bad input, one line each

def copy_with_config(folder: Path, out: Path, **changes) -> Path:
    """The checkpoint at `folder` with config.json edited (`vision_config__num_hidden_layers=9` edits a tower)."""
    out.mkdir(parents=True)
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        section, _, name = key.partition("__")
        (config[section] if name else config).__setitem__(name or section, value)
    (out / "config.json").write_text(json.dumps(config))
    weights = next(p for p in folder.iterdir() if p.name != "config.json")
    (out / weights.name).symlink_to(weights)
    return out


def test_non_clip_transformers_checkpoint_is_refused(tmp_path):
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    with pytest.raises(HFCheckpointError, match="describes a transformers 'bert' model, not a CLIPModel"):
        build_backbone(BackboneConfig(checkpoint=str(tmp_path / "bert")))
    with pytest.raises(HFCheckpointError, match="'bert' model, not a CLIPModel"):  # the weights file, config beside
        build_backbone(BackboneConfig(checkpoint=str(tmp_path / "bert" / "model.safetensors")))
    vision_only = transformers.CLIPVisionConfig(**OPENAI_STYLE["vision_config"])
    transformers.CLIPVisionModel(vision_only).save_pretrained(tmp_path / "vision")
    with pytest.raises(HFCheckpointError, match="clip_vision_model, one of CLIP's two towers"):
        build_backbone(BackboneConfig(checkpoint=str(tmp_path / "vision")))


@pytest.mark.parametrize("change, problem", [
    (dict(vision_config__num_hidden_layers=2), "0 missing, 12 unexpected"),
    (dict(vision_config__intermediate_size=192), "0 missing, 0 unexpected, 9 wrong-shape"),
    (dict(projection_dim=32), "0 missing, 0 unexpected, 2 wrong-shape tensors, e.g. 'text_projection'"),
])
def test_config_and_weights_that_disagree_are_refused(openai_style, tmp_path, change, problem):
    _, folder = openai_style
    edited = copy_with_config(folder, tmp_path / "edited", **change)
    with pytest.raises(BackboneError, match=f"config.json and the weights .* disagree \\({problem}"):
        build_backbone(BackboneConfig(checkpoint=str(edited)))


def test_unreadable_configs_are_refused(openai_style, tmp_path):
    _, folder = openai_style
    for change, message in [
        (dict(vision_config__hidden_act="gelu"), "towers share gelu or quick_gelu"),
        (dict(text_config__hidden_act="gelu_new", vision_config__hidden_act="gelu_new"), "share gelu or quick_gelu"),
        (dict(text_config__vocab_size=32000), "CLIP's 49408-token BPE"),
        (dict(vision_config__num_attention_heads=5), "not divisible by its 5 attention heads"),
    ]:
        edited = copy_with_config(folder, tmp_path / str(len(list(tmp_path.iterdir()))), **change)
        with pytest.raises(HFCheckpointError, match=message):
            build_backbone(BackboneConfig(checkpoint=str(edited)))
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    with pytest.raises(HFCheckpointError, match="has no config.json"):
        build_backbone(BackboneConfig(checkpoint=str(no_config)))
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(HFCheckpointError, match="holds no model.safetensors or pytorch_model.bin"):
        build_backbone(BackboneConfig(checkpoint=str(no_weights)))
    loose = tmp_path / "loose" / "weights.bin"  # transformers tensors without their config.json
    loose.parent.mkdir()
    loose.write_bytes((folder / "pytorch_model.bin").read_bytes())
    with pytest.raises(BackboneError, match="holds transformers CLIPModel weights but no config.json"):
        build_backbone(BackboneConfig(checkpoint=str(loose)))


def test_cli_error_is_one_line(tmp_path, capsys):
    """mgca-segment with --clip-weights naming a non-CLIP transformers folder: one line, exit status 2."""
    from PIL import Image

    from mgca.cli import segment as segment_cli

    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 56, 3), 120, np.uint8)).save(photo)
    capsys.readouterr()  # transformers' own progress bar while saving
    code = segment_cli.main([str(photo), "--classes", "cat,dog", "--out", str(tmp_path / "overlay.png"),
                             "--decoder", "none", "--clip-weights", str(tmp_path / "bert"), "--device", "cpu"])
    line = one_line_error(code, capsys.readouterr().err)
    assert "not a CLIPModel" in line


# ---------------------------------------------------------------- a patch-32 tower through training, export, engines

@pytest.fixture(scope="module")
def p32_run(openai_style, tmp_path_factory):
    """`python -m mgca.train --weights FOLDER` (one step on the QuickGELU patch-32 CLIPModel), then `mgca-export
    --int8` at the tests' 64 px window: (decoder checkpoint, bundle)."""
    from mgca.train import main as train_main
    from tests.support import CLASSES, export_with_cli

    _, folder = openai_style
    run = tmp_path_factory.mktemp("p32") / "run"
    code = train_main(["--weights", str(folder), "pretrain.enabled=false", "benchmark.enabled=false",
                       "data.synthetic_size=8", "data.image_size=64", "train.batch_size=4", "optim.epochs=1",
                       "train.max_steps=1", f"train.output_dir={run}"])
    assert code == 0
    return run / "last.pt", export_with_cli(run / "last.pt", run.parent / "bundle", CLASSES, "--int8")


def p32_images(seed: int = 0) -> list[np.ndarray]:
    from tests.support import blocky_image

    rng = np.random.default_rng(seed)
    return [blocky_image(rng, h, w, block=16) for h, w in ((96, 150), (128, 128), (70, 200))]


@pytest.mark.slow
def test_patch32_tower_trains_exports_and_runs(p32_run):
    """The converted tower trains and exports; the bundle's geometry follows patch 32 (output stride 16 with the x2
    decoder, window on the patch grid) and onnxruntime gives PyTorch's embeddings and labels."""
    from export.onnx_export import read_metadata
    from mgca.checkpoint import load_model
    from runtime import Segmenter
    from runtime.text_cache import load_text_cache
    from tests.support import torch_predictor

    checkpoint, bundle = p32_run
    model, _ = load_model(checkpoint)
    assert model.backbone.arch == "hf-clip-vit-p32-w96-d3" and model.backbone.patch_size == 32
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["backbone"]["arch"] == "hf-clip-vit-p32-w96-d3" and manifest["output_stride"] == 16
    assert read_metadata(bundle / "model.onnx")["patch_size"] == "32"
    segmenter = Segmenter(bundle, backend="onnxruntime", device="cpu")
    predictor = torch_predictor(model, load_text_cache(bundle / "text_cache.npz").embeddings)
    window = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.pixel_embeddings(window).numpy()
    assert np.abs(segmenter.engine.run(window.numpy(), 2) - expected).max() <= 1e-5
    for image in p32_images():
        assert (segmenter.segment(image).labels == predictor.predict(image)).mean() >= 0.999


@pytest.mark.slow
def test_patch32_tower_on_openvino(p32_run):
    """OpenVINO fp32 equals onnxruntime; bf16 (where the CPU has it) and int8 (the graph the export's keep rule chose)
    agree with fp32 as on the tiny tower (tests/test_openvino.py's bounds)."""
    from runtime import Segmenter
    from runtime.openvino_engine import cpu_capabilities, openvino_available

    if not openvino_available():
        pytest.skip("openvino is not installed (pip install 'mgca[openvino]'); .ci/run installs it")
    _, bundle = p32_run
    reference = Segmenter(bundle, backend="onnxruntime", device="cpu")
    labels = [reference.segment(image).labels for image in p32_images()]

    def agreement(seg) -> float:
        pairs = zip(p32_images(), labels, strict=True)
        return float(np.mean([(seg.segment(image).labels == expected).mean() for image, expected in pairs]))

    fp32 = Segmenter(bundle, backend="openvino", device="cpu", precision="fp32")
    for image in p32_images():
        assert np.abs(fp32.embed(image) - reference.embed(image)).max() < 1e-4
    assert agreement(fp32) >= 0.999
    if "BF16" in cpu_capabilities():
        assert agreement(Segmenter(bundle, backend="openvino", device="cpu", precision="bf16")) >= 0.95
    manifest = json.loads((bundle / "manifest.json").read_text())
    int8 = Segmenter(bundle, backend="openvino", device="cpu", precision="int8")
    kept = manifest["nncf"]["kept"]
    assert int8.describe()["model"] == ("model.int8.nncf.onnx" if kept else "model.int8.onnx")
    assert agreement(int8) >= 0.80


@pytest.mark.slow
def test_window_off_the_patch_grid_is_refused(p32_run, tmp_path, capsys):
    """48 px is on the output-stride grid of the tiny tower but not on patch 32's: one line naming the patch size."""
    from export.cli import main as export_main

    checkpoint, _ = p32_run
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("cat\ndog\n")
    capsys.readouterr()
    code = export_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "bundle"), "--window", "48",
                        "--vocab", str(vocab)])
    assert "patch size 32" in one_line_error(code, capsys.readouterr().err)


@pytest.mark.slow
def test_decoder_identity_and_context_length(p32_run, openai_style, tmp_path):
    """A decoder trained on one tower is refused on another of the same shape; the bundle refuses a text cache made
    by a text tower with another context length."""
    from export.text_cache import build_text_cache
    from mgca.checkpoint import CheckpointError, load_model
    from mgca.config import DecoderConfig
    from mgca.model import build_model
    from runtime import Segmenter
    from runtime.errors import TextCacheError
    from tests.support import CLASSES

    checkpoint, bundle = p32_run
    other = save_checkpoint(reference_clip(OPENAI_STYLE, seed=2), tmp_path / "other", weights="bin")
    with pytest.raises(CheckpointError, match="was trained on backbone hf-clip-vit-p32-w96-d3 .* differs "
                       "\\(visual_sha256"):
        load_model(checkpoint, clip_weights=str(other))

    short = dict(OPENAI_STYLE, text_config=dict(OPENAI_STYLE["text_config"], max_position_embeddings=32))
    short_model = build_model(BackboneConfig(checkpoint=str(save_checkpoint(reference_clip(short, seed=1),
                                                                            tmp_path / "short"))),
                              DecoderConfig(kind="none"))
    assert short_model.backbone.clip.context_length == 32 and short_model.backbone.tokenize(["cat"]).shape == (1, 32)
    cache = build_text_cache(short_model, CLASSES, "single", tmp_path / "short.npz")
    with pytest.raises(TextCacheError, match="made by a text tower that reads 32 tokens but bundle .*'s reads 77"):
        Segmenter(bundle, backend="onnxruntime", device="cpu").set_vocabulary(cache)
