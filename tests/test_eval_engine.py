"""`mgca-eval --engine BUNDLE`: an exported bundle evaluated through the runtime, alone and side by side with
its PyTorch checkpoint."""
from __future__ import annotations

import json

import pytest

from .support import EVAL_SMALL


def test_eval_engine_matches_torch_side_by_side(bundle, voc_tree, voc_cache, tiny_checkpoint, tmp_path, capsys):
    from mgca.cli import eval as eval_cli

    out_json = tmp_path / "cmp.json"
    code = eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--engine", str(bundle), "--text-cache",
                          str(voc_cache),
                          "--compare-torch", str(tiny_checkpoint), "--json", str(out_json), "--backend", "onnxruntime",
                          *EVAL_SMALL])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "engine: runtime onnxruntime fp32 (model.onnx) on CPUExecutionProvider" in out.out
    assert "mIoU" in out.out and "aeroplane" in out.out and "labels identical on" in out.out
    result = json.loads(out_json.read_text())
    assert result["label_agreement"] >= 0.999
    assert abs(result["mIoU"] - result["torch"]["mIoU"]) < 0.5
    assert result["inference"]["background_threshold"] == 0.95 and result["num_images"] == 3

    plain_json = tmp_path / "engine.json"
    code = eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--engine", str(bundle), "--text-cache",
                          str(voc_cache),
                          "--json", str(plain_json), "--backend", "onnxruntime", *EVAL_SMALL])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(plain_json.read_text())["mIoU"] == result["mIoU"]


@pytest.mark.parametrize("extra, message", [
    ([], "mgca-export text --checkpoint CKPT --dataset voc21"),  # the bundle's own cache lacks VOC's classes
    (["--text-cache", "VOC", "--window", "128"], "exported with"),
    (["--text-cache", "VOC", "--backend", "tensorrt"], "TensorRT fp16 model"),
])
def test_eval_engine_errors_are_one_line(bundle, voc_tree, voc_cache, capsys, extra, message):
    from mgca.cli import eval as eval_cli

    extra = [str(voc_cache) if e == "VOC" else e for e in extra]
    args = ["--dataset", "voc21", "--root", str(voc_tree), "--engine", str(bundle), *EVAL_SMALL, *extra]
    code = eval_cli.main(args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_eval_engine_scores_the_bundle_with_its_manifest_settings(bundle, voc_tree, voc_cache, tiny_checkpoint,
                                                                   tmp_path, capsys):
    """Issue 29 item 6: unset settings come from the bundle's manifest, not the paper's protocol (448/224, which
    refused this window-64 bundle with a message about a stride nobody gave), and the report says what the user
    overrode."""
    from mgca.cli import eval as eval_cli
    from runtime.bundle import load_bundle

    manifest = load_bundle(bundle).inference.to_dict()
    common = ["--dataset", "voc21", "--root", str(voc_tree), "--engine", str(bundle), "--text-cache", str(voc_cache),
              "--device", "cpu", "--no-progress", "--backend", "onnxruntime"]  # the PyTorch parity needs fp32
    plain = tmp_path / "plain.json"
    code = eval_cli.main([*common, "--json", str(plain)])
    out = capsys.readouterr()
    assert code == 0, out.err
    record = json.loads(plain.read_text())
    assert {k: record["inference"][k] for k in manifest} == json.loads(json.dumps(manifest))
    assert record["settings"] == {"from": f"bundle {bundle} manifest", "overridden": {}}
    assert f"settings: bundle {bundle} manifest, none overridden" in out.out

    changed = tmp_path / "changed.json"
    code = eval_cli.main([*common, "--units", "4", "--json", str(changed)])
    out = capsys.readouterr()
    assert code == 0, out.err
    record = json.loads(changed.read_text())
    assert record["inference"]["units"] == 4 and record["inference"]["short_side"] == manifest["short_side"]
    assert record["settings"]["overridden"] == {"units": 4}
    assert "overridden: units 4" in out.out

    compared = tmp_path / "compared.json"  # the PyTorch side takes the engine's settings: like for like
    code = eval_cli.main([*common, "--compare-torch", str(tiny_checkpoint), "--json", str(compared)])
    out = capsys.readouterr()
    assert code == 0, out.err
    record = json.loads(compared.read_text())
    assert record["label_agreement"] >= 0.999 and record["inference"]["units"] == manifest["units"]


@pytest.mark.parametrize("cli", ["eval", "segment"])
def test_dense_mode_with_an_engine_is_refused(bundle, voc_tree, voc_cache, tmp_path, capsys, cli):
    """Issue 29 item 11: the bundle's graph fixes the dense mode; another --dense-mode was silently ignored."""
    from mgca.cli import eval as eval_cli
    from mgca.cli import segment as segment_cli
    from runtime.bundle import load_bundle

    own = load_bundle(bundle).manifest["backbone"]["dense_mode"]
    other = "naclip" if own != "naclip" else "sclip"
    if cli == "eval":  # EVAL_SMALL: the bundle's own settings, so only the dense mode is wrong
        code = eval_cli.main(["--dataset", "voc21", "--root", str(voc_tree), "--engine", str(bundle), "--text-cache",
                              str(voc_cache), *EVAL_SMALL, "--dense-mode", other])
    else:
        photo = next((voc_tree / "JPEGImages").glob("*.jpg"))
        code = segment_cli.main([str(photo), "--classes", "cat,dog", "--engine", str(bundle), "--device", "cpu",
                                 "--out", str(tmp_path / "o.png"), "--dense-mode", other])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"--dense-mode {other}" in err and f"exported in dense mode {own}" in err
    assert not (tmp_path / "o.png").exists()
