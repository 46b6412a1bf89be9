"""runtime/text_cache.py: every vocabulary, from a file, in memory or embedded by PyTorch, is checked alike
(issue 29, item 9)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from runtime import BundleError, MgcaError, Segmenter, TextCacheError, VocabularyError
from runtime.text_cache import make_text_cache

from .support import ONNX_CPU, copy_bundle, edit_manifest, torch_predictor

ROWS = np.eye(3, 8, dtype=np.float32)


@pytest.mark.parametrize("names, needle", [
    ("abc", "must be a list of names, got the string 'abc'"),  # was split into the classes a, b, c
    (["cat", "", "dog"], "name 1 is empty"),
    (["cat", " ", "dog"], "name 1 is empty"),
])
def test_bad_names_are_refused(names, needle):
    with pytest.raises(MgcaError, match=needle):
        make_text_cache(ROWS, names)


def test_a_plain_string_is_refused_by_the_segmenter_and_pytorch(segmenter, tiny_model):
    from .support import torch_predictor

    with pytest.raises(VocabularyError, match="got the string 'abc'"):
        segmenter.set_vocabulary(("abc", ROWS))
    with pytest.raises(VocabularyError, match="got the string 'cat'"):
        torch_predictor(tiny_model, np.eye(1, 512, dtype=np.float32), ["x"]).set_classes("cat")


def test_two_classes_with_one_embedding_are_refused_naming_them():
    rows = np.stack([ROWS[0], ROWS[1], ROWS[0]])
    with pytest.raises(VocabularyError, match=r"classes 'cat' and 'lion' have identical text embeddings .*77 tokens"):
        make_text_cache(rows, ["cat", "dog", "lion"])


def test_names_past_clips_77_tokens_are_refused_not_merged(tiny_model):
    """Two different names longer than CLIP's context were truncated to the same prompt, silently."""
    from .support import torch_predictor

    long = "a very long description of the thing in the picture " * 12
    predictor = torch_predictor(tiny_model, np.eye(2, 512, dtype=np.float32), ["x", "y"], templates="plain")
    with pytest.raises(VocabularyError, match="identical text embeddings"):
        predictor.set_classes([long + "cat", long + "dog"])


def test_mgca_export_text_refuses_names_past_77_tokens_when_writing(tiny_checkpoint, tmp_path, capsys):
    """`mgca-export text` wrote such a cache and the runtime refused it later: it is refused at writing, no file."""
    from export.cli import main

    from .support import one_line_error

    long = "a very long description of the thing in the picture " * 12
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(f"{long}cat\n{long}dog\n")
    out = tmp_path / "cache.npz"
    code = main(["text", "--checkpoint", str(tiny_checkpoint), "--vocab", str(vocab), "--out", str(out)])
    assert "identical text embeddings" in one_line_error(code, capsys.readouterr().err)
    assert not out.exists()


def test_in_memory_vocabularies_are_checked_like_files(bundle, tmp_path, segmenter):
    from runtime.text_cache import load_text_cache

    seg = Segmenter(bundle, **ONNX_CPU)
    emb = np.eye(3, 64, dtype=np.float32)
    with pytest.raises(TextCacheError, match="repeat 'cat'"):
        seg.set_vocabulary((["cat", "cat", "dog"], emb))
    nan = emb.copy()
    nan[1, 0] = np.nan
    with pytest.raises(TextCacheError, match="non-finite"):
        seg.set_vocabulary((["cat", "dog", "sky"], nan))
    with np.load(bundle / "text_cache.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "arch": "ViT-B-16", "text_sha256": "e" * 64}))
    np.savez(tmp_path / "other.npz", **arrays)
    foreign = load_text_cache(tmp_path / "other.npz")  # read without a bundle to compare with
    with pytest.raises(TextCacheError, match="was made for backbone ViT-B-16"):
        seg.set_vocabulary(foreign)
    seg.set_vocabulary((["cat", "dog", "sky"], emb))  # bare arrays: the caller vouches for the backbone
    assert seg.class_names == ("cat", "dog", "sky")


def test_manifest_without_text_hash_is_refused(bundle, tmp_path):
    stripped = copy_bundle(bundle, tmp_path / "b")
    manifest = edit_manifest(stripped)
    edit_manifest(stripped, backbone={k: v for k, v in manifest["backbone"].items() if k != "text_sha256"})
    with pytest.raises(BundleError, match="backbone.text_sha256 is missing"):
        Segmenter(stripped, **ONNX_CPU)


def test_repeated_classes_are_refused(segmenter, tiny_model, class_embeddings):
    with pytest.raises(VocabularyError, match="repeat 'cat'") as info:
        segmenter.segment(np.zeros((20, 20, 3), np.uint8), classes=["cat", "cat", "dog"])
    assert "\n" not in str(info.value)
    with pytest.raises(VocabularyError, match="repeat 'cat'"):
        torch_predictor(tiny_model, class_embeddings).set_classes(["cat", "cat", "dog"])
