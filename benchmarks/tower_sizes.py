"""Does the decoder's gain hold as the CLIP tower changes? The embedded default's miniature at two tower sizes.

    python benchmarks/tower_sizes.py --write docs/results/towers.json        # 2 towers x 3 decoder seeds
    python benchmarks/tower_sizes.py --archs mgca-synth --seeds 0 --out runs/towers-quick train.max_steps=200

Each (tower, seed) is one `python -m mgca.train backbone.arch=ARCH train.seed=SEED` run of the embedded recipe in
its own process (the tiny CLIP is pretrained once per tower and cached; the decoder seed changes only the decoder's
initialisation, the data stream stays the recipe's), skipped where OUT/ARCH-seedSEED/benchmark.json exists, so two
shells can share the work. Towers: `mgca-synth` (the default: ViT 4 x 128, patch 8) and `mgca-synth-wide` (the
same image tower at 2x width, 256; text tower and the 64-d joint space unchanged, so the decoder is the same
size). Per tower: the CLIP's zero-shot accuracy, image-tower parameters, and per seed the synthetic benchmark's
frozen / decoder mIoU and gain at 36 units (objects; objects + stuff), then mean +- std over seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

ARCHS = ("mgca-synth", "mgca-synth-wide")
UNITS = "36"
PROTOCOLS = {"synthetic": "objects", "synthetic-stuff": "objects + stuff"}


def run_dir(out: Path, arch: str, seed: int) -> Path:
    return out / f"{arch}-seed{seed}"


def train_run(arch: str, seed: int, out: Path, threads: int, overrides: list[str]) -> None:
    """One embedded-recipe run in its own process (its thread count fixed), unless its benchmark is there."""
    folder = run_dir(out, arch, seed)
    if (folder / "benchmark.json").is_file():
        print(f"{folder}: scored before, reused", flush=True)
        return
    command = [sys.executable, "-m", "mgca.train", f"backbone.arch={arch}", f"train.seed={seed}",
               f"train.output_dir={folder}", *([f"train.num_threads={threads}"] if threads else []), *overrides]
    print(" ".join(command[1:]), flush=True)
    start = time.time()
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    print(f"{folder}: {time.time() - start:.0f} s", flush=True)


def tower_facts(arch: str, overrides: list[str]) -> dict:
    """The pretrained CLIP's zero-shot accuracy (from its cache) and the image tower's size."""
    from mgca.clip_backbone import model_config
    from mgca.clip_pretrain import pretrain_clip
    from mgca.config import load_config
    from mgca.train import embedded_config_path

    cfg = load_config(embedded_config_path(), [f"backbone.arch={arch}", *overrides])
    report = pretrain_clip(arch, cfg.pretrain, cfg.data.synthetic, progress=False)
    vision = model_config(arch)["vision_cfg"]
    width, layers = int(vision["width"]), int(vision["layers"])
    return {"zero_shot": round(report.zero_shot_accuracy, 4), "backdrop_zero_shot": round(report.backdrop_accuracy, 4),
            "clip": str(report.path.name), "vision_width": width, "vision_layers": layers,
            "vision_block_params": layers * 12 * width * width}


def seed_row(folder: Path) -> dict:
    from mgca.quality import DECODER, FROZEN

    scores = json.loads((folder / "benchmark.json").read_text())
    frozen, decoder = scores["miou"][FROZEN], scores["miou"][DECODER]
    return {protocol: {"frozen": frozen[protocol][UNITS], "decoder": decoder[protocol][UNITS],
                       "gain": scores["gain"][protocol][UNITS],
                       "gain_95_interval": scores["gain_95_interval"][protocol][UNITS]} for protocol in PROTOCOLS}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for protocol in PROTOCOLS:
        cells = {}
        for key in ("frozen", "decoder", "gain"):
            values = [100 * row[protocol][key] for row in rows]
            cells[key] = {"mean": round(statistics.fmean(values), 2),
                          "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
                          "per_seed": [round(v, 2) for v in values]}
        out[protocol] = cells
    return out


def table(results: dict) -> str:
    lines = ["| tower | image tower | zero-shot | objects, 36 units: frozen | decoder | gain (per seed) | "
             "objects + stuff, 36 units: gain |", "|---|---|---|---|---|---|---|"]
    for arch, res in results.items():
        facts, obj, stuff = res["tower"], res["summary"]["synthetic"], res["summary"]["synthetic-stuff"]
        lines.append(
            f"| `{arch}` | {facts['vision_layers']} x {facts['vision_width']} | {100 * facts['zero_shot']:.1f}% | "
            f"{obj['frozen']['mean']:.2f} ± {obj['frozen']['std']:.2f} | {obj['decoder']['mean']:.2f} ± "
            f"{obj['decoder']['std']:.2f} | **{obj['gain']['mean']:+.2f}** ± {obj['gain']['std']:.2f} "
            f"({' / '.join(f'{g:+.1f}' for g in obj['gain']['per_seed'])}) | "
            f"{stuff['gain']['mean']:+.2f} ± {stuff['gain']['std']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated bundled tiny-CLIP archs")
    parser.add_argument("--seeds", default="0,1,2", help="decoder seeds (train.seed)")
    parser.add_argument("--out", default="runs/towers", help="one run folder per (arch, seed) under here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: the recipe's 2)")
    parser.add_argument("--write", help="also write the results as JSON here")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run (key=value)")
    args = parser.parse_args(argv)
    archs, seeds, out = args.archs.split(","), [int(s) for s in args.seeds.split(",")], Path(args.out)
    for arch in archs:
        for seed in seeds:
            train_run(arch, seed, out, args.threads, args.overrides)
    results = {}
    for arch in archs:
        rows = [seed_row(run_dir(out, arch, seed)) for seed in seeds]
        results[arch] = {"tower": tower_facts(arch, args.overrides), "seeds": seeds, "per_seed": rows,
                         "summary": summarise(rows)}
    print("\nmIoU %, mean ± std over decoder seeds; gain = decoder − frozen\n" + table(results))
    if args.write:
        Path(args.write).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
