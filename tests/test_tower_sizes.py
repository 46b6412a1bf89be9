"""benchmarks/tower_sizes.py: every (tower, seed) is a real embedded-recipe run, scored and summarised per tower."""
from __future__ import annotations

import json

from benchmarks.tower_sizes import main
from mgca.clip_backbone import model_config

TINY = ["pretrain.steps=2", "pretrain.warmup_steps=1", "pretrain.batch_size=8", "data.synthetic_size=32",
        "train.batch_size=8", "benchmark.count=3"]


def test_two_towers_two_seeds_end_to_end(tmp_path, capsys):
    narrow, wide = model_config("mgca-synth"), model_config("mgca-synth-wide")
    assert wide["vision_cfg"]["width"] == 2 * narrow["vision_cfg"]["width"]
    assert {**wide, "vision_cfg": None} == {**narrow, "vision_cfg": None}

    out = tmp_path / "runs"
    overrides = [*TINY, f"pretrain.cache_dir={tmp_path / 'cache'}"]
    assert main(["--seeds", "0,1", "--out", str(out), "--threads", "1", "--write", str(tmp_path / "t.json"),
                 *overrides]) == 0
    results = json.loads((tmp_path / "t.json").read_text())
    assert list(results) == ["mgca-synth", "mgca-synth-wide"]
    for arch, res in results.items():
        assert res["tower"]["vision_width"] == model_config(arch)["vision_cfg"]["width"]
        gains = res["summary"]["synthetic"]["gain"]["per_seed"]
        decoder, frozen = (res["summary"]["synthetic"][k]["per_seed"] for k in ("decoder", "frozen"))
        assert all(abs(g - (d - f)) < 0.02 for g, d, f in zip(gains, decoder, frozen, strict=True))
        assert len(gains) == 2 and (out / f"{arch}-seed1" / "last.pt").is_file()
    # The two seeds train different decoders on the same frozen CLIP: same frozen row, other decoder rows.
    synth = results["mgca-synth"]["summary"]["synthetic"]
    assert synth["frozen"]["per_seed"][0] == synth["frozen"]["per_seed"][1]
    assert "| `mgca-synth-wide` | 4 x 256 |" in capsys.readouterr().out

    # A second call reuses every scored run instead of training again.
    main(["--seeds", "0,1", "--out", str(out), *overrides])
    assert capsys.readouterr().out.count("scored before, reused") == 4
