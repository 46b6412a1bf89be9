"""Issue 28's ladder: every training-free dense mode, frozen and with the MGCA decoder, with and without PAMR.

    python benchmarks/ladder.py --write docs/results/ladder.json      # 3 seeds, 500 images, the embedded recipe
    python benchmarks/ladder.py --seeds 1 --steps 100 --images 50 --out runs/ladder-quick   # a quick look
    python benchmarks/ladder.py benchmark.seed=20000 --write docs/results/ladder-heldout.json
        # the same decoders (a finished row is re-scored, not retrained) on another held-out world

One frozen tiny CLIP (the embedded default's, pretrained and cached as `python -m mgca.train` does, or
`--clip FILE`) and one held-out synthetic benchmark. Each dense mode gets a frozen row; the modes in
`--decoder-modes` also get the MGCA decoder (all three losses, the embedded recipe, one decoder per seed).
Every row is scored on the same images at pixel units and 36 units, both protocols (objects; objects + stuff),
without PAMR and with `--pamr` iterations (the reference dilations). A decoder trained on mode M is scored on
mode M's features.

Per seed, the data stream is rendered and the CLIP trunk run once: the first mode's trainer records the
other modes' dense features of the same micro-batches beside its own (`SiblingRecorder`), and the other
modes' decoders replay them (`mgca.replay`). The text side does not depend on the mode.

The written file holds one row per (mode, decoder, PAMR) for objects at 36 units (mean and std over seeds),
the same for every protocol and unit count under "cells", and the issue's goal comparison with its paired
bootstrap interval over images.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ablation import FULL, LOSS_SETS, row_config
from mgca.clip_backbone import FrozenCLIP
from mgca.config import Config, load_config
from mgca.dense_modes import DENSE_MODES
from mgca.embedded import ensure_clip_weights
from mgca.evalsets import get_spec
from mgca.inference import InferenceConfig
from mgca.model import MGCA
from mgca.pairs.synthetic import world_look, write_benchmark
from mgca.quality import PROTOCOLS, ClassAreas, frozen_baseline, paired_bootstrap, score_models
from mgca.replay import FrozenStream, ReplayTrainer, stream_key
from mgca.train import embedded_config_path, fix_thread_count

FROZEN_MODES = ("tcl", "sclip", "clearclip", "naclip", "scclip")  # maskclip is tcl's computation
DECODER_MODES = ("tcl", "sclip", "naclip", "scclip")
UNITS = (0, 36)
HEADLINE = ("synthetic", 36)  # the goal: objects, 36 units


class SiblingRecorder(ReplayTrainer):
    """A replay trainer that also records other dense modes' features of the micro-batches it renders.

    The siblings share this trainer's CLIP, data stream and text embeddings; only the last block differs.
    """

    def __init__(self, cfg: Config, stream: FrozenStream, siblings: Mapping[str, tuple[Config, FrozenStream]]):
        super().__init__(cfg, stream)
        own = self.model.backbone
        self.siblings = []
        for mode, (sibling_cfg, sibling_stream) in siblings.items():
            key = stream_key(sibling_cfg)
            if sibling_stream.key not in (None, key):
                raise ValueError(f"the {mode} stream was recorded for other settings")
            sibling_stream.key = key
            self.siblings.append((FrozenCLIP(own.clip, own.arch, own.source, mode).to(self.device), sibling_stream))

    def _frozen_outputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        features, text = super()._frozen_outputs(batch)
        if "replayed" not in batch:
            images = batch["images"].to(self.device, non_blocking=True)
            with torch.no_grad(), self._autocast():
                for backbone, stream in self.siblings:
                    stream.batches[batch["stream_position"]] = (backbone.dense_features(images), text,
                                                                len(batch["captions"]))
        return features, text


def row_name(mode: str, decoder: bool, seed: int | None = None) -> str:
    return f"{mode} / {'decoder / seed ' + str(seed) if decoder else 'frozen'}"


def train_decoders(base: Config, modes: Sequence[str], seeds: Sequence[int], output_dir: Path,
                   timings: dict[str, float], progress: bool = True) -> dict[str, MGCA]:
    """One decoder per (mode, seed), all three losses; per seed the frozen outputs are computed once."""
    models: dict[str, MGCA] = {}
    for seed in seeds:
        configs = {mode: row_config(base, LOSS_SETS[FULL], seed, output_dir / "runs" / f"{mode}-seed{seed}", mode)
                   for mode in modes}
        streams = {mode: FrozenStream() for mode in modes}
        first, *rest = modes
        tick = time.perf_counter()
        trainer = SiblingRecorder(configs[first], streams[first], {m: (configs[m], streams[m]) for m in rest})
        resumed_at = trainer.state.step  # a finished run in the row's folder is resumed at its end: nothing trains
        trainer.fit()
        models[row_name(first, True, seed)] = trainer.model.eval()
        label = "checkpoint reused" if trainer.state.step == resumed_at else f"+ record {len(rest)} modes"
        timings[f"train {first} seed {seed} ({label})"] = time.perf_counter() - tick
        for mode in rest:
            tick = time.perf_counter()
            trainer = ReplayTrainer(configs[mode], streams[mode])
            resumed_at = trainer.state.step
            trainer.fit()
            models[row_name(mode, True, seed)] = trainer.model.eval()
            label = ("checkpoint reused" if trainer.state.step == resumed_at
                     else f"replayed {trainer.replayed_batches} batches")
            timings[f"train {mode} seed {seed} ({label})"] = time.perf_counter() - tick
            streams[mode] = FrozenStream()  # free the recorded features
        del streams
    return models


def frozen_rows(model: MGCA, modes: Sequence[str]) -> dict[str, MGCA]:
    """The frozen CLIP of `model` in each dense mode, without a decoder."""
    own = model.backbone
    return {row_name(mode, False): frozen_baseline(MGCA(FrozenCLIP(own.clip, own.arch, own.source, mode),
                                                        model.decoder)) for mode in modes}


def summarise(cells: Mapping[tuple[str, str, int, int], ClassAreas], frozen_modes: Sequence[str],
              decoder_modes: Sequence[str], seeds: Sequence[int], pamr: int, samples: int = 1000) -> dict:
    """Rows (mean/std over seeds) for every (protocol, units, mode, decoder, PAMR), and the goal comparison."""
    def areas(mode: str, decoder: bool, protocol: str, units: int, iterations: int) -> list[ClassAreas]:
        names = [row_name(mode, True, s) for s in seeds] if decoder else [row_name(mode, False)]
        return [cells[(name, protocol, units, iterations)] for name in names]

    all_rows = []
    for protocol in PROTOCOLS:
        for units in UNITS:
            for mode in frozen_modes:
                for decoder in (False, True):
                    if decoder and mode not in decoder_modes:
                        continue
                    for iterations in (0, pamr):
                        values = [100 * a.miou() for a in areas(mode, decoder, protocol, units, iterations)]
                        all_rows.append({"protocol": protocol, "units": units, "mode": mode, "decoder": decoder,
                                         "pamr": iterations, "miou_mean": round(float(np.mean(values)) / 100, 6),
                                         "miou_std": round(float(np.std(values, ddof=1)) / 100, 6)
                                         if len(values) > 1 else 0.0,
                                         "per_seed": [round(v / 100, 6) for v in values]})
    protocol, units = HEADLINE
    headline = [r for r in all_rows if (r["protocol"], r["units"]) == HEADLINE]
    rows = [{k: r[k] for k in ("mode", "decoder", "pamr", "miou_mean", "miou_std")} for r in headline]

    def mean(mode: str, decoder: bool, iterations: int) -> float:
        return next(r["miou_mean"] for r in headline
                    if (r["mode"], r["decoder"], r["pamr"]) == (mode, decoder, iterations))

    goal = {}
    if decoder_modes:
        best = max(decoder_modes, key=lambda m: max(mean(m, True, 0), mean(m, True, pamr)))
        best_pamr = max((0, pamr), key=lambda i: mean(best, True, i))
        baselines = {"frozen + PAMR": (best, False), "tcl + decoder + PAMR": ("tcl", True)}
        stronger = max(baselines, key=lambda b: mean(*baselines[b], pamr))
        base_mode, base_decoder = baselines[stronger]
        low, high = paired_bootstrap(areas(base_mode, base_decoder, protocol, units, pamr),
                                     areas(best, True, protocol, units, best_pamr), samples)
        goal = {"best_mode": best, "best_pamr": best_pamr, "best_miou": mean(best, True, best_pamr),
                "stronger_baseline": stronger, "baseline_miou": mean(base_mode, base_decoder, pamr),
                "gain": round(mean(best, True, best_pamr) - mean(base_mode, base_decoder, pamr), 6),
                "gain_95_interval": [round(low, 6), round(high, 6)], "target": 0.03}
    return {"rows": rows, "cells": all_rows, "goal": goal}


def format_table(summary: Mapping, pamr: int) -> str:
    """Markdown: one line per (mode, decoder), objects and objects + stuff at pixel and 36 units, PAMR off / on."""
    cells = summary["cells"]
    columns = [(p, u, i) for p in PROTOCOLS for u in UNITS for i in (0, pamr)]
    head = "| mode | decoder | " + " | ".join(
        f"{PROTOCOLS[p]}, {'pixel' if u == 0 else f'{u} units'}{', PAMR' if i else ''}" for p, u, i in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    keys = dict.fromkeys((r["mode"], r["decoder"]) for r in cells)
    for mode, decoder in keys:
        values = []
        for p, u, i in columns:
            r = next(r for r in cells if (r["mode"], r["decoder"], r["protocol"], r["units"], r["pamr"]) ==
                     (mode, decoder, p, u, i))
            values.append(f"{100 * r['miou_mean']:.2f} ± {100 * r['miou_std']:.2f}" if decoder
                          else f"{100 * r['miou_mean']:.2f}")
        lines.append(f"| `{mode}` | {'MGCA' if decoder else 'frozen'} | " + " | ".join(values) + " |")
    goal = summary["goal"]
    if goal:
        low, high = goal["gain_95_interval"]
        lines.append("")
        lines.append(f"Goal (objects, 36 units): decoder on `{goal['best_mode']}`"
                     f"{' + PAMR' if goal['best_pamr'] else ''} {100 * goal['best_miou']:.2f} against the stronger "
                     f"baseline, {goal['stronger_baseline']} {100 * goal['baseline_miou']:.2f}: "
                     f"{100 * goal['gain']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}] (target +3)")
    return "\n".join(lines)


def run(base: Config, frozen_modes: Sequence[str], decoder_modes: Sequence[str], seeds: Sequence[int],
        images: int, pamr: int, output_dir: Path, progress: bool = True) -> tuple[dict, dict[str, float]]:
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    note = ensure_clip_weights(base, progress=progress)
    if note:
        print(f"ladder: {note}", flush=True)
    timings["tiny CLIP"] = time.perf_counter() - tick
    bench = base.benchmark
    root = write_benchmark(output_dir / "synthetic_benchmark", images, bench.image_size, bench.seed,
                           progress=progress, **world_look(base.data.synthetic))
    models = train_decoders(base, decoder_modes, seeds, output_dir, timings, progress) if decoder_modes else {}
    if not models:  # frozen rows only: any trainer's model carries the CLIP
        probe = ReplayTrainer(row_config(base, LOSS_SETS[FULL], 0, output_dir / "runs" / "probe"), FrozenStream())
        models_for_clip = probe.model
    else:
        models_for_clip = next(iter(models.values()))
    models = {**frozen_rows(models_for_clip, frozen_modes), **models}
    settings = InferenceConfig(**get_spec("synthetic").protocol.settings(
        short_side=bench.short_side, window=bench.window, stride=bench.stride, templates=bench.templates))
    cells = {}
    for iterations in dict.fromkeys((0, pamr)):
        tick = time.perf_counter()
        scored = score_models(models, root, replace(settings, pamr=iterations), UNITS, tuple(PROTOCOLS),
                              progress=progress)
        cells.update({(name, p, u, iterations): a for (name, p, u), a in scored.items()})
        timings[f"score, PAMR {iterations}"] = time.perf_counter() - tick
    summary = summarise(cells, frozen_modes, decoder_modes, seeds, pamr)
    return summary, timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="decoder seeds per mode (default 3)")
    parser.add_argument("--images", type=int, default=500, help="held-out benchmark images (default 500)")
    parser.add_argument("--steps", type=int, default=0, help="decoder optimizer steps (default: the embedded recipe's)")
    parser.add_argument("--frozen-modes", default=",".join(FROZEN_MODES), help="modes scored frozen")
    parser.add_argument("--decoder-modes", default=",".join(DECODER_MODES), help="modes that get a decoder")
    parser.add_argument("--pamr", type=int, default=10, help="PAMR iterations of the 'with PAMR' rows (default 10)")
    parser.add_argument("--clip", default=None, help="tiny CLIP weights (default: the embedded default's, cached)")
    parser.add_argument("--out", default="runs/ladder", help="folder for the decoders and the benchmark")
    parser.add_argument("--write", default=None, help="write the ladder JSON here (e.g. docs/results/ladder.json)")
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value) on the embedded default")
    args = parser.parse_args(argv)
    frozen_modes = [m.strip() for m in args.frozen_modes.split(",") if m.strip()]
    decoder_modes = [m.strip() for m in args.decoder_modes.split(",") if m.strip()]
    for mode in frozen_modes + decoder_modes:
        if mode not in DENSE_MODES:
            parser.error(f"unknown dense mode {mode!r}; choose from {', '.join(DENSE_MODES)}")
    missing = [m for m in decoder_modes if m not in frozen_modes]
    if missing:
        parser.error(f"decoder modes need their frozen row: add {', '.join(missing)} to --frozen-modes")
    if args.pamr < 1:
        parser.error("--pamr is the 'with PAMR' rows' iteration count: at least 1")
    overrides = list(args.overrides)
    if args.clip:
        overrides.append(f"backbone.checkpoint={args.clip}")
    base = load_config(embedded_config_path(), overrides)
    if args.steps:  # the embedded recipe draws fresh pairs for one epoch: fewer steps = fewer pairs, same schedule
        base.data.synthetic_size = args.steps * base.train.batch_size
    fix_thread_count(base.train.num_threads)
    seeds = list(range(args.seeds))
    summary, timings = run(base, frozen_modes, decoder_modes, seeds, args.images, args.pamr, Path(args.out))
    print(format_table(summary, args.pamr))
    print("\ntimings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    if args.write:
        command = "python benchmarks/ladder.py " + " ".join(argv if argv is not None else sys.argv[1:])
        record = {"protocol": HEADLINE[0], "units": HEADLINE[1], "seeds": args.seeds, "images": args.images,
                  "steps": base.data.synthetic_size // base.train.batch_size, "pamr_iterations": args.pamr,
                  "benchmark_seed": base.benchmark.seed, "command": command, **summary,
                  "timings_s": {k: round(v) for k, v in timings.items()}}
        path = Path(args.write)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"ladder: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
