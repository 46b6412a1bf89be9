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
                          "--compare-torch", str(tiny_checkpoint), "--json", str(out_json), *EVAL_SMALL])
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
                          "--json", str(plain_json), *EVAL_SMALL])
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
