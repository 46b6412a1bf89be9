"""Training throughput (images/s) of one optimizer step: frozen CLIP forward, decoder, MGCA loss, backward.

    python benchmarks/train_step.py                 # tiny model on CPU (+ ViT-B/16 rows on CUDA)
    python benchmarks/train_step.py --arch ViT-B-16 --batch 128 --precision bf16 fp16

A step of several micro-batches ("micro" < "batch") runs the gradient cache: the decoder runs
twice per micro-batch (no-grad, then with grad) for the exact full-batch loss; the row beside
the single micro-batch one shows what that costs.

Data loading is excluded (a fixed batch on the device) and timed separately, so the table
shows the model's ceiling and whether the loader keeps up. ViT-B/16 rows use random
weights: throughput depends on the architecture, not the weights.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# The repository first: this folder's runtime.py would otherwise shadow the `runtime` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mgca.config import Config, load_config
from mgca.train import Trainer, epoch_batches


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(trainer: Trainer, batch: dict, warmup: int, iters: int) -> list[float]:
    """Seconds per optimizer step (the batch fed in `trainer.accum` micro-batches), after `warmup` untimed steps."""
    micro = trainer.cfg.train.batch_size
    parts = [{"images": batch["images"][i:i + micro], "captions": batch["captions"][i:i + micro]}
             for i in range(0, len(batch["captions"]), micro)]
    times = []
    for i in range(warmup + iters):
        _sync(trainer.device)
        start = time.perf_counter()
        for part in parts:
            trainer._micro_step(part)
        trainer._optimizer_step()
        _sync(trainer.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def time_clip(trainer: Trainer, batch: dict, iters: int) -> list[float]:
    """Seconds per step spent in the frozen CLIP alone (text + dense image features of every micro-batch, under the
    step's autocast): what `_micro_step` runs before the gradient cache. The rest of a step is decoder + losses."""
    micro = trainer.cfg.train.batch_size
    times = []
    with torch.no_grad():
        for _ in range(iters):
            _sync(trainer.device)
            start = time.perf_counter()
            for i in range(0, len(batch["captions"]), micro):
                with trainer._autocast():
                    trainer.model.encode_captions(batch["captions"][i:i + micro])
                    trainer.model.backbone.dense_features(batch["images"][i:i + micro])
            _sync(trainer.device)
            times.append(time.perf_counter() - start)
    return times


def loader_images_per_s(trainer: Trainer, batches: int) -> float:
    iterator, _ = epoch_batches(trainer.cfg, trainer.transform, trainer.info, 0, 0)
    start, seen = time.perf_counter(), 0
    for _, batch in zip(range(batches), iterator, strict=False):
        seen += len(batch["captions"])
    return seen / (time.perf_counter() - start)


def bench(arch: str, batch_size: int, precision: str, compile_mode: str, device: str, warmup: int, iters: int,
          micro: int | None = None) -> dict:
    micro = micro or batch_size
    overrides = [f"backbone.arch={arch}", f"train.batch_size={micro}", f"train.global_batch={batch_size}",
                 f"train.precision={precision}",
                 f"train.compile={compile_mode}", f"train.device={device}", "data.source=synthetic",
                 f"data.synthetic_size={max(2 * batch_size, 64)}",
                 f"train.output_dir={Path(tempfile.gettempdir()) / 'mgca-bench'}"]  # never written: no step saves
    cfg: Config = load_config(None, overrides)
    trainer = Trainer(cfg)
    iterator, _ = epoch_batches(cfg, trainer.transform, trainer.info, 0, 0)
    parts = [next(iterator) for _ in range(trainer.accum)]
    batch = {"images": torch.cat([p["images"] for p in parts]).to(trainer.device),
             "captions": [c for p in parts for c in p["captions"]]}
    times = time_steps(trainer, batch, warmup, iters)
    median = statistics.median(times)
    clip_s = statistics.median(time_clip(trainer, batch, iters))
    return {"arch": arch, "device": str(trainer.device), "batch": batch_size, "micro": micro, "precision": precision,
            "compile": compile_mode, "step_ms": 1000 * median, "images_per_s": batch_size / median,
            "clip_ms": 1000 * clip_s, "outside_clip": max(0.0, 1.0 - clip_s / median),
            "loader_images_per_s": loader_images_per_s(trainer, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="*", default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--precision", nargs="*", default=None)
    parser.add_argument("--micro", type=int, default=None,
                        help="micro-batch of an extra gradient-cache row (default batch/4)")
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    rows = []
    cuda = torch.cuda.is_available()
    tiny_cpu = args.batch or 32
    plan = [("mgca-tiny", tiny_cpu, tiny_cpu, "fp32", "off", "cpu"),
            ("mgca-tiny", tiny_cpu, args.micro or tiny_cpu // 4, "fp32", "off", "cpu")]
    if cuda:
        plan += [("mgca-tiny", args.batch or 128, args.batch or 128, "bf16", "off", "cuda")]
        for precision in args.precision or ["bf16", "fp16"]:
            for compile_mode in ("off", "on"):
                plan.append(("ViT-B-16", args.batch or 128, args.batch or 128, precision, compile_mode, "cuda"))
        plan.append(("ViT-B-16", args.batch or 128, args.micro or (args.batch or 128) // 4, "bf16", "on", "cuda"))
    if args.arch:
        plan = [(a, args.batch or 32, args.micro or args.batch or 32, p, "off", "cuda" if cuda else "cpu")
                for a in args.arch for p in (args.precision or ["auto"])]
    torch.set_num_threads(torch.get_num_threads())
    for arch, batch, micro, precision, compile_mode, device in plan:
        rows.append(bench(arch, batch, precision, compile_mode, device, warmup=3, iters=args.iters, micro=micro))
        row = rows[-1]
        print(f"  measured {row['arch']} {row['device']} b{row['batch']}/{row['micro']} {row['precision']} "
              f"compile={row['compile']}: "
              f"{row['images_per_s']:.1f} img/s", flush=True)
    base = rows[0]["images_per_s"]
    print(f"\ntraining step throughput (torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          f"{', ' + torch.cuda.get_device_name() if cuda else ''})")
    header = (f"{'arch':<10} {'device':<7} {'batch':>5} {'micro':>5} {'prec':<5} {'compile':<7} {'ms/step':>9} "
              f"{'img/s':>9} {'x row1':>7} {'outside CLIP':>12} {'loader img/s':>13}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['arch']:<10} {row['device']:<7} {row['batch']:>5} {row['micro']:>5} {row['precision']:<5} "
              f"{row['compile']:<7} "
              f"{row['step_ms']:>9.1f} {row['images_per_s']:>9.1f} {row['images_per_s'] / base:>7.2f} "
              f"{100 * row['outside_clip']:>11.0f}% "
              f"{row['loader_images_per_s']:>13.1f}")


if __name__ == "__main__":
    main()
