"""benchmarks/ladder.py: sibling-recorded decoders equal directly trained ones; rows cover every combination."""
from __future__ import annotations

import json

import numpy as np
import torch

from benchmarks.ladder import SiblingRecorder, format_table, row_name, summarise
from mgca.quality import PROTOCOLS, ClassAreas
from mgca.replay import FrozenStream, ReplayTrainer
from mgca.train import Trainer

from .support import fast_config


def _decoder_after(trainer: Trainer) -> dict[str, torch.Tensor]:
    trainer.fit()
    return {k: v.clone() for k, v in trainer.model.decoder.state_dict().items()}


def test_a_decoder_replayed_from_a_sibling_recording_equals_one_trained_on_its_own_mode(tmp_path):
    sibling_cfg = fast_config(tmp_path / "sibling", "train.num_threads=1", "backbone.dense_mode=sclip")
    sibling_stream = FrozenStream()
    recorder = SiblingRecorder(fast_config(tmp_path / "first", "train.num_threads=1"), FrozenStream(),
                               {"sclip": (sibling_cfg, sibling_stream)})
    recorder.fit()
    assert len(sibling_stream.batches) == 12  # 2 epochs x 48 pairs / batch 8, recorded beside the tcl run
    replaying = ReplayTrainer(sibling_cfg, sibling_stream)
    replayed = _decoder_after(replaying)
    assert replaying.replayed_batches == 12
    direct = _decoder_after(Trainer(fast_config(tmp_path / "direct", "train.num_threads=1",
                                                "backbone.dense_mode=sclip")))
    assert all(torch.equal(replayed[k], direct[k]) for k in direct)
    first = recorder.model.decoder.state_dict()
    assert not all(torch.equal(first[k], direct[k]) for k in direct)  # the mode did change what was learnt


def _cells(accuracy: dict[str, float], seeds: list[int], pamr: int, images: int = 20) -> dict:
    """Cells whose predictions are right on a known fraction of pixels; PAMR adds 0.05."""
    rng = np.random.default_rng(0)
    cells = {}
    for name, right in accuracy.items():
        names = [row_name(name.split()[0], True, s) for s in seeds] if name.endswith("decoder") else \
            [row_name(name, False)]
        for row in names:
            for protocol in PROTOCOLS:
                for units in (0, 36):
                    for iterations in (0, pamr):
                        areas = ClassAreas(4)
                        for _ in range(images):
                            label = rng.integers(0, 4, 200)
                            hit = rng.random(200) < right + (0.05 if iterations else 0.0)
                            areas.add(np.where(hit, label, (label + 1) % 4), label)
                        cells[(row, protocol, units, iterations)] = areas
    return cells


def test_every_combination_gets_a_row_and_the_goal_compares_with_the_stronger_baseline():
    seeds, pamr = [0, 1], 10
    accuracy = {"tcl": 0.3, "scclip": 0.6, "tcl decoder": 0.5, "scclip decoder": 0.8}
    summary = summarise(_cells(accuracy, seeds, pamr), ["tcl", "scclip"], ["tcl", "scclip"], seeds, pamr,
                        samples=50)
    keys = {(r["mode"], r["decoder"], r["pamr"]) for r in summary["rows"]}
    assert keys == {(m, d, p) for m in ("tcl", "scclip") for d in (False, True) for p in (0, pamr)}
    assert len(summary["cells"]) == 8 * len(PROTOCOLS) * 2
    assert all(set(r) == {"mode", "decoder", "pamr", "miou_mean", "miou_std"} for r in summary["rows"])
    json.dumps(summary)  # what --write stores
    goal = summary["goal"]
    assert goal["best_mode"] == "scclip" and goal["best_pamr"] == pamr
    assert goal["stronger_baseline"] == "frozen + PAMR"  # scclip frozen + PAMR beats tcl + decoder + PAMR
    low, high = goal["gain_95_interval"]
    assert 0 < low < goal["gain"] < high
    table = format_table(summary, pamr)
    assert table.count("\n| `") == 4 and "target +3" in table
