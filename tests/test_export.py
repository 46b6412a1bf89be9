"""mgca-export: ONNX graph, parity, text cache, bundle, CLI, TensorRT (skipped without tensorrt + GPU)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from .support import BACKBONE_NOTICE, one_line_exit_2

onnx = pytest.importorskip("onnx", reason="export tests need onnx")
ort = pytest.importorskip("onnxruntime", reason="export tests need onnxruntime")
pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")

from calibration.reader import Preprocess
from export import ExportOptions, ExportOptionsError, export_bundle
from export.cli import main
from export.onnx_export import ExportError, export_onnx, read_metadata
from export.parity import ParityError, check_parity, parity_windows
from export.tensorrt_build import TRT_MISSING, tensorrt_available
from export.text_cache import VocabularyFileError, build_text_cache, read_vocab
from mgca.config import Config
from mgca.decoder import perturb_decoder
from mgca.model import build_model
from runtime.contract import InferenceSettings
from runtime.engines import OrtEngine

WINDOW = 64


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, tiny_model):
    return export_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "model.onnx", window=WINDOW)


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "classes.txt"
    path.write_text("# test vocabulary\ncat\ndog\n\nroad\nsky\n  tree  \n")
    return path


def _preprocess(model, window=WINDOW):
    output_stride = int(model.output_stride)
    settings = InferenceSettings.for_window(window, output_stride)
    return Preprocess(settings, tuple(model.backbone.mean), tuple(model.backbone.std), output_stride)


def _run(path, x: np.ndarray) -> np.ndarray:
    return OrtEngine(path, device="cpu").run(x)


# ---------------------------------------------------------------- graph

def test_graph_passes_checker_and_has_contract_io(onnx_file, tiny_model):
    onnx.checker.check_model(str(onnx_file), full_check=True)
    proto = onnx.load(str(onnx_file))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["embeddings"]
    assert any(o.version == 18 for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    in_dims = proto.graph.input[0].type.tensor_type.shape.dim
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert in_dims[0].dim_param and [d.dim_value for d in in_dims[1:]] == [3, WINDOW, WINDOW]
    grid = WINDOW // tiny_model.output_stride
    assert out_dims[0].dim_param and [d.dim_value for d in out_dims[1:]] == [tiny_model.embed_dim, grid, grid]


def test_graph_metadata_describes_the_model(onnx_file, tiny_model):
    meta = read_metadata(onnx_file)
    identity = tiny_model.backbone.identity
    assert meta["arch"] == "mgca-tiny"
    assert int(meta["window"]) == WINDOW
    assert int(meta["patch_size"]) == 16 and int(meta["output_stride"]) == 8
    assert int(meta["embed_dim"]) == tiny_model.embed_dim
    assert json.loads(meta["mean"]) == pytest.approx(list(tiny_model.backbone.mean))
    assert json.loads(meta["std"]) == pytest.approx(list(tiny_model.backbone.std))
    assert meta["visual_sha256"] == identity.visual_sha256 and meta["text_sha256"] == identity.text_sha256
    assert len(meta["decoder_sha256"]) == 64 and meta["input_normalized"] == "true"


@pytest.mark.parametrize("batch", [1, 3])
def test_ort_matches_torch_with_dynamic_batch(onnx_file, tiny_model, batch):
    x = torch.randn(batch, 3, WINDOW, WINDOW, generator=torch.Generator().manual_seed(batch))
    out = _run(onnx_file, x.numpy())
    with torch.no_grad():
        ref = tiny_model.pixel_embeddings(x).numpy()
    assert out.shape == ref.shape == (batch, tiny_model.embed_dim, WINDOW // 8, WINDOW // 8)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-4
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_parity_check_passes_and_reports(onnx_file, tiny_model):
    sets = parity_windows(_preprocess(tiny_model), None, max_windows=4)
    assert set(sets) == {"random", "synthetic"}
    report = check_parity(tiny_model, onnx_file, sets)
    assert report.passed and report.rel_err < 1e-4 and report.max_abs_err < 1e-4
    assert report.label_agreement > 0.999 and report.min_cosine > 0.9999
    assert set(report.per_set) == {"random", "synthetic"}


def test_parity_check_fails_loudly_for_another_model(onnx_file, tiny_config, tiny_model):
    other = build_model(tiny_config.backbone, tiny_config.decoder).eval()
    perturb_decoder(other.decoder, seed=1)  # same backbone, different decoder weights
    sets = parity_windows(_preprocess(tiny_model), None, num_synthetic=0, max_windows=2)
    with pytest.raises(ParityError, match="does not match the PyTorch model"):
        check_parity(other, onnx_file, sets)


def test_window_must_fit_patch_and_stride(tiny_model, tmp_path):
    with pytest.raises(ExportError, match="multiple of the patch size"):
        export_onnx(tiny_model, tmp_path / "bad.onnx", window=72)
    with pytest.raises(ExportError, match="example_batch"):
        export_onnx(tiny_model, tmp_path / "bad.onnx", window=WINDOW, example_batch=1)


def test_fp16_graph_keeps_sensitive_ops_in_fp32(onnx_file, tmp_path):
    """The fp16 copy TensorRT >= 11 builds from: runs on onnxruntime CPU here, close to fp32."""
    pytest.importorskip("onnxruntime.transformers.float16", reason="needs onnxruntime's float16 converter")
    from export.tensorrt_build import FP32_ONNX_OPS, fp16_onnx

    half = fp16_onnx(onnx_file, tmp_path / "model.fp16.onnx")
    proto = onnx.load(str(half))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O kept
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(proto.graph.value_info) + list(proto.graph.input)}
    for node in proto.graph.node:
        if node.op_type in FP32_ONNX_OPS and node.input[0] in types:
            assert types[node.input[0]] == onnx.TensorProto.FLOAT, node.name
    x = np.random.default_rng(0).standard_normal((2, 3, WINDOW, WINDOW)).astype(np.float32)
    a, b = _run(half, x), _run(onnx_file, x)
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-2


# ---------------------------------------------------------------- text cache

def test_vocab_file_parsing(vocab_file, tmp_path):
    assert read_vocab(vocab_file) == ["cat", "dog", "road", "sky", "tree"]
    dup = tmp_path / "dup.txt"
    dup.write_text("cat\ndog\ncat\n")
    with pytest.raises(VocabularyFileError, match="repeats"):
        read_vocab(dup)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(VocabularyFileError, match="no class names"):
        read_vocab(empty)
    with pytest.raises(VocabularyFileError, match="does not exist"):
        read_vocab(tmp_path / "missing.txt")


def test_text_cache_round_trip_and_mismatch_refusal(tmp_path, tiny_model, tiny_config, vocab_file):
    from mgca.prompts import get_templates
    from runtime.errors import TextCacheError
    from runtime.text_cache import load_text_cache

    names = read_vocab(vocab_file)
    path = build_text_cache(tiny_model, names, "tcl", tmp_path / "cache.npz")
    with np.load(path, allow_pickle=False) as data:  # plain numpy, no pickle
        assert set(data.files) == {"embeddings", "class_names", "templates", "meta"}
        assert data["embeddings"].dtype == np.float32
    identity = tiny_model.backbone.identity
    cache = load_text_cache(path, expected_text_sha256=identity.text_sha256, expected_embed_dim=tiny_model.embed_dim)
    assert cache.class_names == tuple(names)
    assert cache.templates == get_templates("tcl")
    assert cache.meta["format"] == "mgca-text-cache/1" and cache.meta["arch"] == "mgca-tiny"
    assert cache.meta["text_sha256"] == identity.text_sha256 and cache.meta["embed_dim"] == tiny_model.embed_dim
    assert cache.meta["template_set"] == "tcl" and cache.meta["template_average"] == "raw"  # TCL's set, TCL's way
    expected = tiny_model.backbone.class_embeddings(names, get_templates("tcl"), average="raw").numpy()
    np.testing.assert_allclose(cache.embeddings, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(cache.embeddings, axis=1), 1.0, atol=1e-5)

    # A cache made with another CLIP (different text tower) is refused by a runtime expecting this one.
    cfg = Config()
    cfg.backbone.init_seed = 1
    other = build_model(cfg.backbone, cfg.decoder).eval()
    other_path = build_text_cache(other, names, "single", tmp_path / "other.npz")
    with pytest.raises(TextCacheError, match="was made for backbone"):
        load_text_cache(other_path, expected_text_sha256=identity.text_sha256, bundle_label="the bundle")


# ---------------------------------------------------------------- CLI and bundle

@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, tiny_checkpoint, vocab_file):
    out = tmp_path_factory.mktemp("bundle") / "b"
    rc = main(["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--window", str(WINDOW),
               "--int8", "--calib-limit", "4", "--vocab", str(vocab_file), "--parity-windows", "4"])
    assert rc == 0
    return out


def test_bundle_layout_and_manifest(bundle_dir, tiny_model):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    kept_nncf = (manifest.get("nncf") or {}).get("kept")  # NNCF's graph: kept only where nearer fp32 (measured)
    models = {"model.onnx", "model.int8.onnx", *(["model.int8.nncf.onnx"] if kept_nncf else [])}
    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted({"manifest.json", "text_cache.npz", *models})
    identity = tiny_model.backbone.identity
    assert manifest["format"] == "mgca-bundle/2"
    assert manifest["backbone"]["arch"] == "mgca-tiny" and manifest["embed_dim"] == 64
    assert manifest["patch_size"] == 16 and manifest["output_stride"] == 8
    assert json.dumps(manifest).count('"window"') == 1  # each fact once: the window only in `inference`
    assert "arch" not in manifest and "shape" not in manifest["input"] and "shape" not in manifest["output"]
    assert manifest["input"]["name"] == "image" and manifest["input"]["normalized"] is True
    inp = manifest["input"]
    assert inp["dtype"] == "float32" and inp["layout"] == "NCHW" and inp["dynamic_batch"]
    assert manifest["input"]["mean"] == pytest.approx(list(tiny_model.backbone.mean))
    assert manifest["output"] == {**manifest["output"], "name": "embeddings", "layout": "NCHW", "l2_normalized": True}
    assert manifest["backbone"]["visual_sha256"] == identity.visual_sha256
    assert manifest["backbone"]["text_sha256"] == identity.text_sha256
    assert manifest["decoder_sha256"] == read_metadata(bundle_dir / "model.onnx")["decoder_sha256"]
    assert manifest["models"] == {"onnx": "model.onnx", "onnx_int8": "model.int8.onnx", "trt_fp16": None,
                                  "onnx_int8_nncf": "model.int8.nncf.onnx" if kept_nncf else None, "trt_int8": None}
    assert manifest["text_cache"] == "text_cache.npz"
    assert manifest["inference"] == {"short_side": WINDOW, "window": WINDOW, "stride": WINDOW // 2, "units": 36,
                                     "unit_scope": "image", "long_side": 2048, "padding": "crop",
                                     "bg_rule": "groupvit", "pamr": 0, "pamr_dilations": [1, 2, 4, 8, 12, 24],
                                     "temporal": "ema"}
    parity = manifest["parity"]
    assert parity["rel_err"] < 1e-4 and parity["label_agreement"] > 0.999 and parity["classes"] == "vocabulary"
    assert parity["int8"]["label_agreement"] > 0.8  # random-init tiny model, 5 classes
    assert manifest["calibration"]["images"] == "synthetic"
    assert set(manifest["files_sha256"]) == {*models, "text_cache.npz"}


def test_bundle_loads_in_the_runtime(bundle_dir):
    from runtime.bundle import load_bundle
    from runtime.text_cache import load_text_cache

    bundle = load_bundle(bundle_dir)
    assert bundle.inference == InferenceSettings.for_window(WINDOW, 8) and bundle.embed_dim == 64
    assert "model.int8.onnx" in {getattr(p, "name", None) for p in bundle.models.values()}
    cache = load_text_cache(bundle.text_cache, expected_text_sha256=bundle.text_sha256,
                            expected_embed_dim=bundle.embed_dim)
    assert cache.class_names == ("cat", "dog", "road", "sky", "tree")


def test_bundle_segments_with_the_runtime(bundle_dir):
    """End to end: the exported bundle drives runtime.Segmenter (numpy + onnxruntime, no torch)."""
    from calibration.reader import synthetic_images
    from runtime.segmenter import Segmenter

    image = synthetic_images(1, (50, 70), seed=4)[0]
    result = Segmenter(bundle_dir, backend="onnxruntime", device="cpu").segment(image)
    assert result.labels.shape == image.shape[:2]
    assert 0 <= result.labels.min() and result.labels.max() < 5


def test_export_is_a_python_function(tmp_path, tiny_model, tiny_config):
    """No argparse: a model in, a bundle out, the same one the CLI writes."""
    from runtime.segmenter import Segmenter

    lines: list[str] = []
    options = ExportOptions(window=WINDOW, stride=16, units=4, vocab=["cat", "sky"], templates=["a photo of a {}."],
                            parity_windows=2)
    result = export_bundle(tiny_model, tmp_path / "b", options, config=tiny_config, log=lines.append)
    assert result.path == tmp_path / "b" and result.parity.passed
    assert result.files == {"onnx": "model.onnx", "text_cache": "text_cache.npz"}
    assert result.manifest["inference"] == {"short_side": WINDOW, "window": WINDOW, "stride": 16, "units": 4,
                                            "unit_scope": "image", "long_side": 2048, "padding": "crop",
                                            "bg_rule": "groupvit", "pamr": 0, "pamr_dilations": [1, 2, 4, 8, 12, 24],
                                     "temporal": "ema"}
    assert any(line.startswith("wrote") and "manifest.json" in line for line in lines)
    segmenter = Segmenter(result.path, backend="onnxruntime", device="cpu")
    assert segmenter.class_names == ("cat", "sky") and segmenter.settings.stride == 16
    with pytest.raises(ExportOptionsError, match="eval_labels"):
        export_bundle(tiny_model, tmp_path / "c", ExportOptions(eval_images=tmp_path, eval_labels=tmp_path))
    assert not (tmp_path / "c").exists()  # options are checked before anything is written


def test_text_subcommand(tmp_path, tiny_checkpoint, vocab_file, capsys):
    out = tmp_path / "cache.npz"
    assert main(["text", "--checkpoint", str(tiny_checkpoint), "--vocab", str(vocab_file), "--templates", "tcl",
                 "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as data:
        assert data["embeddings"].shape == (5, 64)
        assert json.loads(str(data["meta"]))["template_set"] == "tcl"
    assert "5 classes x 9 templates" in capsys.readouterr().out


def test_text_subcommand_for_a_benchmark(tmp_path, tiny_checkpoint, capsys):
    from mgca.evalsets import get_spec

    out = tmp_path / "voc21.npz"
    assert main(["text", "--checkpoint", str(tiny_checkpoint), "--dataset", "voc21", "--templates", "single", "--out",
                 str(out)]) == 0
    with np.load(out, allow_pickle=False) as data:
        names = [str(n) for n in data["class_names"]]
    assert names == list(get_spec("voc21").prompt_classes) and "background" not in names


def _one_line_error(capsys) -> str:
    """The export's error line (beside the tiny model's backbone notice): one line, no traceback."""
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if BACKBONE_NOTICE not in line]
    assert len(lines) == 1 and lines[0].startswith(("mgca-export: error:", "mgca-export text: error:")), err
    return lines[0]


@pytest.mark.skipif(tensorrt_available(),
                    reason="tensorrt is installed here: the missing-TensorRT message cannot be shown")
def test_cli_without_tensorrt_says_so_in_one_line(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "b"
    assert main(["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--window", str(WINDOW), "--trt",
                 "fp16"]) == 2
    assert TRT_MISSING in _one_line_error(capsys)
    assert not out.exists()  # checked before any work


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "{missing}", "--out", "{out}"], "does not exist"),
    (["--checkpoint", "{ckpt}", "--out", "{out}", "--window", "72"], "multiple of the patch size"),
    (["--checkpoint", "{ckpt}", "--out", "{out}", "--vocab", "{missing}"], "vocabulary file"),
    (["--checkpoint", "{ckpt}", "--out", "{out}", "--calib-images", "{missing}"], "is not a directory"),
    (["--checkpoint", "{ckpt}", "--out", "{out}", "--trt", "fp32"], "invalid choice"),
    (["--checkpoint", "{ckpt}"], "required: --out"),
    (["text", "--checkpoint", "{ckpt}", "--vocab", "{missing}", "--out", "{out}.npz"], "vocabulary file"),
    (["text", "--checkpoint", "{ckpt}", "--vocab", "{vocab}", "--templates", "nope", "--out", "{out}.npz"],
     "template set"),
    (["text", "--checkpoint", "{ckpt}", "--dataset", "vocx", "--out", "{out}.npz"], "unknown dataset 'vocx'"),
    (["text", "--checkpoint", "{ckpt}", "--out", "{out}.npz"], "one of the arguments --vocab --dataset is required"),
    (["--checkpoint", "{ckpt}", "--out", "{out}", "--parity-tol", "nan"], "--parity-tol) must be a positive number"),
    (["--checkpoint", "{ckpt}", "--out", "{out}", "--parity-tol", "inf"], "--parity-tol) must be a positive number"),
])
def test_cli_bad_input_one_line_exit_2(tmp_path, tiny_checkpoint, vocab_file, capsys, argv, message):
    fill = {"missing": str(tmp_path / "missing"), "out": str(tmp_path / "out"), "ckpt": str(tiny_checkpoint),
            "vocab": str(vocab_file)}
    args = [a.format(**fill) for a in argv]
    try:
        rc = main(args)
    except SystemExit as exit_:  # argparse errors
        rc = exit_.code
    assert rc == 2
    assert message in _one_line_error(capsys)


def test_cli_fails_loudly_on_parity_error(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    import export.parity as parity

    real = parity.run_torch
    monkeypatch.setattr(parity, "run_torch", lambda model, windows,
                        batch_size=4: real(model, windows, batch_size) * 1.01)
    out = tmp_path / "b"
    assert main(["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--window", str(WINDOW), "--parity-windows",
                 "2"]) == 1
    assert "does not match the PyTorch model" in _one_line_error(capsys)
    assert not (out / "manifest.json").exists()  # no manifest: not a usable bundle


def _verified_files(out) -> dict[str, str]:
    """Every file the bundle's manifest names, each checked against its sha256 (name -> sha256)."""
    from runtime.bundle import load_bundle

    bundle = load_bundle(out)
    for path in [*bundle.models.values(), bundle.text_cache]:
        if path is not None:
            bundle.verify(path)
    return dict(bundle.files_sha256)


def test_failed_re_export_keeps_the_working_bundle(tmp_path, tiny_checkpoint, vocab_file, capsys):
    """Issue 30, item 2: the new bundle is built beside the old one and swapped in only when complete and checked."""
    out = tmp_path / "b"
    small = ["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--window", str(WINDOW), "--parity-windows",
             "2", "--vocab", str(vocab_file)]
    assert main([*small, "--int8", "--calib-limit", "2"]) == 0
    (out / "README.txt").write_text("mine\n")
    before = _verified_files(out)
    assert set(before) >= {"model.onnx", "model.int8.onnx", "text_cache.npz"}
    capsys.readouterr()
    assert main([*small, "--parity-tol", "1e-30"]) == 1
    assert "does not match the PyTorch model" in _one_line_error(capsys)
    assert _verified_files(out) == before and (out / "README.txt").read_text() == "mine\n"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging folder left beside it
    assert main(small) == 0  # a good re-export replaces every bundle file and keeps the user's
    after = _verified_files(out)
    assert set(after) == {"model.onnx", "text_cache.npz"} and not (out / "model.int8.onnx").exists()
    assert (out / "README.txt").read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_a_full_disk_during_export_is_one_line_and_keeps_the_bundle(tmp_path, tiny_checkpoint, vocab_file, capsys,
                                                                    monkeypatch):
    """ENOSPC while the bundle (first export or re-export) or a text cache is written: one line, no traceback, the
    earlier bundle kept, no staging folder left."""
    import errno

    import export.text_cache as text_cache
    import runtime.text_cache as runtime_cache

    out = tmp_path / "b"
    small = ["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--window", str(WINDOW), "--parity-windows",
             "2", "--vocab", str(vocab_file)]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(runtime_cache, "write_text_cache", full)
        assert main(small) == 2
        assert "No space left on device" in _one_line_error(capsys) and not out.exists()
    assert main(small) == 0
    before = _verified_files(out)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(runtime_cache, "write_text_cache", full)
        assert main(small) == 2
        assert "an earlier bundle there is kept" in _one_line_error(capsys)
        patch.setattr(text_cache, "write_text_cache", full)
        assert main(["text", "--checkpoint", str(tiny_checkpoint), "--vocab", str(vocab_file), "--out",
                     str(tmp_path / "c.npz")]) == 2
        assert "No space left on device" in _one_line_error(capsys)
    assert _verified_files(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_ctrl_c_while_the_heavy_modules_load_is_one_line(tmp_path, tiny_checkpoint):
    """Ctrl-C in mgca-export's first seconds (onnx, torch loading) ends as the other CLIs do: one line, status 130.
    The interrupt is raised where onnx is first imported (it was imported with the `export` package, before `main`
    could catch anything), as a real Ctrl-C during that import would be."""
    import subprocess
    import sys

    from .support import subprocess_env

    script = ("import sys\n"
              "class Interrupt:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'onnx':\n"
              "            raise KeyboardInterrupt\n"
              "sys.meta_path.insert(0, Interrupt())\n"
              "from export.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", script, "--checkpoint", str(tiny_checkpoint), "--out",
                           str(tmp_path / "b")], capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == "mgca-export: interrupted"


def test_text_cache_is_not_written_into_a_bundle(bundle_dir, tiny_checkpoint, vocab_file, capsys):
    """Issue 30, item 2: `mgca-export text --out bundle/text_cache.npz` would leave a manifest that no longer
    matches; it is refused and the bundle stays loadable."""
    before = _verified_files(bundle_dir)
    assert main(["text", "--checkpoint", str(tiny_checkpoint), "--vocab", str(vocab_file), "--out",
                 str(bundle_dir / "text_cache.npz")]) == 2
    assert "is a file of the bundle" in _one_line_error(capsys)
    assert _verified_files(bundle_dir) == before


def test_text_cache_never_overwrites_its_vocabulary(tmp_path, tiny_checkpoint, capsys):
    """Issue 30, item 3: no output resolves to an input."""
    vocab = tmp_path / "classes.npz"
    vocab.write_text("cat\ndog\n")
    assert main(["text", "--checkpoint", str(tiny_checkpoint), "--vocab", str(vocab), "--out", str(vocab)]) == 2
    assert "is the input file" in _one_line_error(capsys)
    assert vocab.read_text() == "cat\ndog\n"


# ---------------------------------------------------------------- TensorRT (GPU machines only)

def _require_trt_gpu():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (optional extra mgca[trt], NVIDIA GPU only)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs an NVIDIA GPU; none is visible")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_engine_build(tmp_path, onnx_file, tiny_model, precision):
    _require_trt_gpu()
    from calibration.quantize import quantize_int8
    from calibration.reader import ImageFolderCalibrationReader, synthetic_images
    from export.tensorrt_build import build_engine

    source = onnx_file
    if precision == "int8":
        reader = ImageFolderCalibrationReader(synthetic_images(4, (48, 64)), _preprocess(tiny_model), limit=4)
        source = quantize_int8(onnx_file, tmp_path / "model.int8.onnx", reader).path
    cache = tmp_path / "timing.cache"
    result = build_engine(source, tmp_path / f"model.{precision}.engine", precision, WINDOW, max_batch=4,
                          timing_cache=cache)
    assert result.path.stat().st_size > 0 and cache.stat().st_size > 0


def test_export_to_an_unwritable_folder_is_one_line(tiny_checkpoint, capsys):
    from export.cli import main as export_main

    for out in ["/proc/mgca-bundle", "/sys/mgca-bundle"]:
        code = export_main(["--checkpoint", str(tiny_checkpoint), "--out", out, "--window", "64"])
        one_line_exit_2(code, capsys.readouterr().err, f"--out {out} cannot be written")
