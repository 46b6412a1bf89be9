"""benchmarks/ablation.py: its row configs and tables, on hand-made class areas (no training)."""
from __future__ import annotations

import numpy as np

from benchmarks.ablation import (
    FULL,
    LOSS_SETS,
    UNITS,
    format_modes,
    format_tables,
    frozen_name,
    model_name,
    row_config,
    summarise,
)
from mgca.config import load_config
from mgca.quality import FROZEN, PROTOCOLS, ClassAreas
from mgca.train import embedded_config_path


def test_row_configs_switch_only_the_loss_terms_and_seed(tmp_path):
    base = load_config(embedded_config_path())
    for name, terms in LOSS_SETS.items():
        cfg = row_config(base, terms, seed=2, output_dir=tmp_path / name)
        assert {t for t in ("obj", "reg", "pix") if getattr(cfg.loss, f"use_{t}")} == set(terms)
        assert cfg.train.seed == 2 and not cfg.pretrain.enabled and not cfg.benchmark.enabled
        assert cfg.data == base.data and cfg.optim == base.optim  # same data stream and schedule for every row
    assert base.loss.use_obj and base.loss.use_reg and base.loss.use_pix  # the base is not modified


def _cells(accuracy: dict[str, float], seeds: list[int], images: int = 20, mode: str = "") -> dict:
    """Cells whose predictions are right on a known fraction of each image's pixels."""
    rng = np.random.default_rng(0)
    cells = {}
    rows = {frozen_name(mode): accuracy[FROZEN]} | {model_name(n, s, mode): accuracy[n] for n in LOSS_SETS
                                                    for s in seeds}
    for row, right in rows.items():
        for protocol in PROTOCOLS:
            for units in UNITS:
                areas = ClassAreas(4)
                for _ in range(images):
                    label = rng.integers(0, 4, 100)
                    prediction = np.where(rng.random(100) < right, label, (label + 1) % 4)
                    areas.add(prediction, label)
                cells[(row, protocol, units)] = areas
    return cells


def test_tables_rank_rows_as_their_accuracy_and_show_the_paper():
    seeds = [0, 1]
    accuracy = {FROZEN: 0.3, "obj": 0.5, "reg": 0.4, "pix": 0.7, "obj + reg": 0.6, FULL: 0.8}
    table = summarise(_cells(accuracy, seeds), seeds, samples=50)
    means = {n: table["rows"][n]["synthetic"][36]["mean"] for n in LOSS_SETS}
    assert sorted(means, key=means.get) == sorted(LOSS_SETS, key=accuracy.get)
    assert all(table["rows"][n]["synthetic"][0]["std"] > 0 for n in LOSS_SETS)
    low, high = table["gain_95_interval"][FULL]["synthetic"][36]
    assert 0 < low < means[FULL] - table["frozen"]["synthetic"][36] < high
    text = format_tables(table, seeds)
    assert "Table 3" in text and "Table 4" in text and "77.5" in text and "82.2" in text


def test_dense_modes_are_summarised_apart_and_side_by_side(tmp_path):
    seeds = [0, 1]
    low = {FROZEN: 0.3, **{n: 0.4 for n in LOSS_SETS}}
    high = {FROZEN: 0.5, **{n: 0.9 for n in LOSS_SETS}}
    cells = _cells(low, seeds, mode="tcl") | _cells(high, seeds, mode="scclip")
    tables = {mode: summarise(cells, seeds, samples=50, mode=mode) for mode in ("tcl", "scclip")}
    assert tables["scclip"]["frozen"]["synthetic"][0] > tables["tcl"]["frozen"]["synthetic"][0]
    full = {mode: tables[mode]["rows"][FULL]["synthetic"][36]["mean"] for mode in tables}
    assert full["scclip"] > full["tcl"]
    text = format_modes(tables)
    assert text.count("\n") == 4 and "tcl" in text and "scclip" in text
    cfg = row_config(load_config(embedded_config_path()), LOSS_SETS[FULL], 0, tmp_path, dense_mode="scclip")
    assert cfg.backbone.dense_mode == "scclip"
