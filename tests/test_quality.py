"""mgca.quality: scoring the synthetic benchmark (embed once, assign units once)."""
from __future__ import annotations

from mgca.inference import InferenceConfig
from mgca.quality import PROTOCOLS, score_models


def test_units_are_assigned_once_per_image_and_unit_count(tiny_model, tmp_path, monkeypatch):
    """Both protocols share one embedding and one unit assignment per (image, unit count)."""
    import mgca.inference.units as units_module
    from mgca.pairs.synthetic import write_benchmark

    root = write_benchmark(tmp_path / "bench", count=3, image_size=48, seed=7)
    calls = []
    original = units_module.semantic_units

    def counted(embeddings, units):
        calls.append(units)
        return original(embeddings, units)

    monkeypatch.setattr(units_module, "semantic_units", counted)
    settings = InferenceConfig(short_side=32, window=32, stride=16)
    cells = score_models({"tiny": tiny_model}, root, settings, units=(0, 4), progress=False)
    assert calls == [4] * 3  # old code: once per protocol too (6)
    assert set(cells) == {("tiny", p, u) for p in PROTOCOLS for u in (0, 4)}
    assert all(len(cell.intersection) == 3 for cell in cells.values())
