"""The paper's Tables 3 and 4 in miniature: which alignment terms, and how many semantic units, help.

    python benchmarks/ablation.py                 # 5 loss sets x 3 decoder seeds on one frozen tiny CLIP
    python benchmarks/ablation.py --seeds 1 --steps 100 --images 100   # a quick look
    python benchmarks/ablation.py --json runs/ablation/ablation.json

Every row shares one frozen tiny CLIP (the embedded default's, pretrained and cached as
`python -m mgca.train` does, or `--clip FILE`) and one held-out synthetic benchmark. For each loss
set of Table 3 ({obj}, {reg}, {pix}, {obj, reg}, {obj, reg, pix}) and each decoder seed, the
decoder is trained with the embedded recipe (`--steps` optimizer steps; the data stream is the
same for every row), then all rows are scored on the same images, each image embedded once per
model, at every unit count of Table 4 (pixel, 121, 64, 36, 16). Cells are mean ± std over seeds;
the headline differences carry a paired bootstrap 95% interval over images (the seed-mean mIoU of
both sides recomputed on each resample).

The frozen CLIP's outputs of each seed's data stream are computed by its first row and replayed for
the others (`mgca.replay`): same inputs, about a third of the work per row.

    python benchmarks/ablation.py --dense-modes tcl,scclip,sclip --loss-sets "obj + reg + pix"

trains the full decoder on several training-free dense modes of the same CLIP (issue 17's ladder):
each mode gets its own frozen row, and a last table puts the modes side by side.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgca.config import Config, load_config
from mgca.dense_modes import DENSE_MODES
from mgca.embedded import ensure_clip_weights
from mgca.evalsets import get_spec
from mgca.inference import InferenceConfig
from mgca.pairs.synthetic import world_look, write_benchmark
from mgca.quality import FROZEN, PROTOCOLS, ClassAreas, frozen_baseline, paired_bootstrap, score_models
from mgca.replay import FrozenStream, ReplayTrainer
from mgca.train import embedded_config_path, fix_thread_count

LOSS_SETS: dict[str, tuple[str, ...]] = {
    "obj": ("obj",), "reg": ("reg",), "pix": ("pix",), "obj + reg": ("obj", "reg"),
    "obj + reg + pix": ("obj", "reg", "pix"),
}
FULL = "obj + reg + pix"
UNITS = (0, 121, 64, 36, 16)
# The paper's numbers (mIoU %, ViT-B/16 on CC3M+CC12M): Table 3 (pixel units) and Table 4 (all losses).
PAPER_TABLE3 = {"voc20": {"frozen": 40.1, "obj": 66.5, "reg": 63.0, "pix": 78.2, "obj + reg": 71.6,
                          "obj + reg + pix": 77.5},
                "context59": {"frozen": 18.3, "obj": 28.7, "reg": 24.6, "pix": 31.1, "obj + reg": 30.2,
                              "obj + reg + pix": 31.8}}
PAPER_TABLE4_VOC20 = {0: 77.5, 121: 80.0, 64: 80.6, 36: 81.4, 16: 82.2}


def row_config(base: Config, losses: Sequence[str], seed: int, output_dir: Path,
               dense_mode: str | None = None) -> Config:
    """`base` with only `losses` switched on, the decoder seed `seed` (the data stream stays the base's)
    and, if given, another training-free dense mode of the same CLIP."""
    cfg = copy.deepcopy(base)
    if dense_mode is not None:
        cfg.backbone.dense_mode = dense_mode
    for term in ("obj", "reg", "pix"):
        setattr(cfg.loss, f"use_{term}", term in losses)
    cfg.train.seed = seed
    cfg.train.output_dir = str(output_dir)
    cfg.train.resume = "auto"  # a finished row is re-scored, not retrained; an interrupted one continues
    cfg.pretrain.enabled = False
    cfg.benchmark.enabled = False
    return cfg


def model_name(loss_set: str, seed: int, mode: str = "") -> str:
    return f"{mode + ' / ' if mode else ''}{loss_set} / seed {seed}"


def frozen_name(mode: str = "") -> str:
    return f"{FROZEN} {mode}" if mode else FROZEN


def summarise(cells: Mapping[tuple[str, str, int], ClassAreas], seeds: Sequence[int],
              samples: int = 1000, mode: str = "") -> dict:
    """mean/std over seeds of every (loss set, protocol, units) cell, the frozen row, and bootstrap gains;
    `mode` picks one dense mode's rows when the cells hold several."""
    cells = {(FROZEN if name == frozen_name(mode) else name, p, u): areas for (name, p, u), areas in cells.items()}
    protocols = tuple(dict.fromkeys(p for _, p, _ in cells))
    units = tuple(dict.fromkeys(u for _, _, u in cells))
    table: dict = {"frozen": {p: {u: 100 * cells[(FROZEN, p, u)].miou() for u in units} for p in protocols},
                   "rows": {}, "gain_95_interval": {}}
    for loss_set in LOSS_SETS:
        names = [model_name(loss_set, s, mode) for s in seeds]
        if (names[0], protocols[0], units[0]) not in cells:
            continue
        table["rows"][loss_set] = {p: {u: {"mean": float(np.mean(v := [100 * cells[(n, p, u)].miou() for n in names])),
                                           "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
                                       for u in units} for p in protocols}
        table["gain_95_interval"][loss_set] = {
            p: {u: [100 * x for x in paired_bootstrap(cells[(FROZEN, p, u)], [cells[(n, p, u)] for n in names],
                                                      samples)] for u in (0, 36) if u in units}
            for p in protocols}
    return table


def format_tables(table: Mapping, seeds: Sequence[int]) -> str:
    """Table 3 (pixel units and 36 units, both protocols) and Table 4 (all losses, every unit count)."""
    rows, frozen = table["rows"], table["frozen"]
    protocols = tuple(frozen)
    paper_key = {"synthetic": "voc20", "synthetic-stuff": "context59"}

    def cell(stats: Mapping) -> str:
        return f"{stats['mean']:6.2f} ± {stats['std']:4.2f}"

    lines = [f"Table 3 in miniature: mIoU % (mean ± std over {len(seeds)} decoder seeds), "
             "gain over frozen with its 95% bootstrap interval over images; paper: ViT-B/16, pixel units"]
    for u in (0, 36):
        where = "pixel" if u == 0 else f"{u} units"
        head = f"{'losses':<17}" + "".join(f"{PROTOCOLS[p] + ' (' + where + ')':>44}" for p in protocols) + \
            "".join(f"{'paper ' + paper_key[p]:>18}" for p in protocols)
        lines += ["", head, "-" * len(head)]
        lines.append(f"{'frozen (MaskCLIP)':<17}" + "".join(f"{frozen[p][u]:>44.2f}" for p in protocols)
                     + "".join(f"{PAPER_TABLE3[paper_key[p]]['frozen']:>18.1f}" for p in protocols))
        for name, stats in rows.items():
            text = ""
            for p in protocols:
                low, high = table["gain_95_interval"][name][p][u]
                gain = stats[p][u]["mean"] - frozen[p][u]
                text += f"{cell(stats[p][u])}  {gain:+6.2f} [{low:+5.1f}, {high:+5.1f}]".rjust(44)
            paper = "".join(f"{PAPER_TABLE3[paper_key[p]][name]:>18.1f}" for p in protocols)
            lines.append(f"{name:<17}" + text + paper)
    if FULL in rows:
        units = tuple(rows[FULL][protocols[0]])
        head = f"{'all losses':<24}" + "".join(f"{('pixel' if u == 0 else f'{u} units'):>17}" for u in units)
        lines += ["", "Table 4 in miniature: units, all three losses (paper VOC20: "
                      + ", ".join(f"{'pixel' if u == 0 else u} {v}" for u, v in PAPER_TABLE4_VOC20.items()) + ")",
                  head, "-" * len(head)]
        for p in protocols:
            lines.append(f"{'frozen ' + PROTOCOLS[p]:<24}" + "".join(f"{frozen[p][u]:>17.2f}" for u in units))
            lines.append(f"{'MGCA ' + PROTOCOLS[p]:<24}" + "".join(f"{cell(rows[FULL][p][u]):>17}" for u in units))
    return "\n".join(lines)


def run(base: Config, seeds: Sequence[int], images: int, output_dir: Path, loss_sets: Sequence[str],
        dense_modes: Sequence[str] = (), progress: bool = True) -> tuple[dict[str, dict], dict]:
    """Train every (dense mode, seed, loss set) decoder on one frozen CLIP and score them all.

    Returns ({mode: table}, timings); without `dense_modes` the one mode is the base config's, keyed "".
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    note = ensure_clip_weights(base, progress=progress)
    if note:
        print(f"ablation: {note}", flush=True)
    timings["tiny CLIP"] = time.perf_counter() - start
    bench = base.benchmark
    root = write_benchmark(output_dir / "synthetic_benchmark", images, bench.image_size, bench.seed, progress=progress,
                           **world_look(base.data.synthetic))
    models, frozen = {}, {}
    for mode in dense_modes or ("",):
        for seed in seeds:
            stream = FrozenStream()  # this seed's data stream through this mode: recorded once, replayed after
            for loss_set in loss_sets:
                tick = time.perf_counter()
                # The config's own mode shares the plain rows' folders, so a mode ladder run into the ablation's
                # --out re-scores its rows instead of training them again.
                prefix = f"{mode}-" if mode and mode != base.backbone.dense_mode else ""
                folder = output_dir / "runs" / f"{prefix}{loss_set.replace(' + ', '_')}-seed{seed}"
                trainer = ReplayTrainer(row_config(base, LOSS_SETS[loss_set], seed, folder, mode or None), stream)
                trainer.fit()
                models[model_name(loss_set, seed, mode)] = trainer.model.eval()
                timings[f"train {model_name(loss_set, seed, mode)}"] = time.perf_counter() - tick
            del stream
        frozen[frozen_name(mode)] = frozen_baseline(trainer.model)
    tick = time.perf_counter()
    settings = InferenceConfig(**get_spec("synthetic").protocol.settings(
        short_side=bench.short_side, window=bench.window, stride=bench.stride, templates=bench.templates))
    cells = score_models({**frozen, **models}, root, settings, UNITS, tuple(PROTOCOLS), progress=progress)
    timings["score"] = time.perf_counter() - tick
    tables = {mode: summarise(cells, seeds, mode=mode) | {"protocol": settings.to_dict()}
              for mode in dense_modes or ("",)}
    return tables, timings


def format_modes(tables: Mapping[str, Mapping], loss_set: str = FULL) -> str:
    """One line per dense mode: frozen and decoder mIoU (pixel, 36 units) and the gain over the frozen row."""
    protocols = tuple(next(iter(tables.values()))["frozen"])
    head = f"{'dense mode':<12}" + "".join(f"{PROTOCOLS[p] + ' ' + where:>46}" for p in protocols
                                          for where in ("pixel", "36 units"))
    lines = [f"Dense modes: frozen -> decoder ({loss_set}), mIoU %, decoder mean ± std over seeds, "
             "gain [95% bootstrap interval]", head, "-" * len(head)]
    for mode, table in tables.items():
        text = f"{mode:<12}"
        for p in protocols:
            for u in (0, 36):
                stats = table["rows"][loss_set][p][u]
                low, high = table["gain_95_interval"][loss_set][p][u]
                gain = stats["mean"] - table["frozen"][p][u]
                text += f"{table['frozen'][p][u]:6.2f} -> {stats['mean']:6.2f} ± {stats['std']:4.2f} " \
                        f"{gain:+6.2f} [{low:+5.1f}, {high:+5.1f}]".rjust(46)
        lines.append(text)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="decoder seeds per loss set (default 3)")
    parser.add_argument("--images", type=int, default=500, help="held-out benchmark images (default 500)")
    parser.add_argument("--steps", type=int, default=0, help="decoder optimizer steps per row (default: the embedded "
                                                              "recipe's)")
    parser.add_argument("--loss-sets", default=",".join(LOSS_SETS), help="comma-separated subset of: "
                        + ", ".join(LOSS_SETS))
    parser.add_argument("--dense-modes", default="", help="comma-separated training-free dense modes of the same CLIP "
                        "(backbone.dense_mode values); default: the config's one")
    parser.add_argument("--clip", default=None, help="tiny CLIP weights (default: the embedded default's, cached)")
    parser.add_argument("--out", default="runs/ablation", help="folder for the decoders and the benchmark")
    parser.add_argument("--json", default=None, help="also write the table here")
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value) on the embedded default")
    args = parser.parse_args(argv)
    loss_sets = [name.strip() for name in args.loss_sets.split(",")]
    unknown = [name for name in loss_sets if name not in LOSS_SETS]
    if unknown:
        parser.error(f"unknown loss set {unknown[0]!r}; choose from {', '.join(LOSS_SETS)}")
    modes = [m.strip() for m in args.dense_modes.split(",") if m.strip()]
    known = tuple(DENSE_MODES)
    if any(mode not in known for mode in modes):
        parser.error(f"unknown dense mode in {args.dense_modes!r}; choose from {', '.join(known)}")
    overrides = list(args.overrides)
    if args.clip:
        overrides.append(f"backbone.checkpoint={args.clip}")
    base = load_config(embedded_config_path(), overrides)
    if args.steps:  # the embedded recipe draws fresh pairs for one epoch: fewer steps = fewer pairs, same schedule
        base.data.synthetic_size = args.steps * base.train.batch_size
    fix_thread_count(base.train.num_threads)
    out = Path(args.out)
    tables, timings = run(base, list(range(args.seeds)), args.images, out, loss_sets, modes)
    for mode, table in tables.items():
        if mode:
            print(f"\n=== dense mode {mode} ===")
        print(format_tables(table, list(range(args.seeds))))
    if len(tables) > 1 and FULL in loss_sets:
        print("\n" + format_modes(tables))
    table = tables[""] if "" in tables else tables
    print("\ntimings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"table": table, "timings": timings,
                                               "seeds": args.seeds, "images": args.images}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
