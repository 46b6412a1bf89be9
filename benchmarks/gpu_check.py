"""The GPU check: training throughput, the share of a step outside the frozen CLIP, PyTorch inference per window.

    benchmarks/gpu_check.sh              # NVIDIA GPU: ViT-B/16 random init, fits in 8 minutes on an H200
    benchmarks/gpu_check.sh --dry-run    # CPU: tiny model, tiny sizes, the same code paths, ~1 minute

Training rows run the step `python -m mgca.train` runs (`Trainer._micro_step` per micro-batch, then
`_optimizer_step`: gradient-cache backward + AdamW) on synthetic data already on the device, with bf16
autocast on/off (`train.precision`) and torch.compile of the decoder on/off (`train.compile`) at one
micro-batch, then the global batch reached through the gradient cache (`train.global_batch`). "outside
CLIP" is the share of a step not spent in the frozen CLIP forward (text + dense image features, timed alone
under the same autocast): decoder, losses, backward and optimizer. The goal is <= 10%.

Inference rows time `MGCA.pixel_embeddings` (frozen CLIP + decoder + L2 norm, what the ONNX graph computes)
per window of `window` pixels under fp16/bf16 autocast, eager and replayed from a CUDA graph.

A path that cannot run here prints a row saying why (CUDA graphs on CPU; torch.compile in the CPU dry-run,
which would need a C++ toolchain and minutes of compile). Rows past `--budget-s` are skipped and say so, so the
script always ends with its tables inside the device's time limit. Weights are random: throughput depends on
the architecture, not the weights.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # before benchmarks/ (the script's folder), whose runtime.py would shadow `runtime`
if str(REPO / "benchmarks") not in sys.path:
    sys.path.append(str(REPO / "benchmarks"))

from train_step import bench

from mgca.config import Config
from mgca.model import build_model


@dataclass(frozen=True)
class CheckPlan:
    """Sizes of one check: the GPU one (ViT-B/16, micro-batch 256, global 1024, 448 windows) or the CPU dry-run."""

    arch: str
    device: str
    micro: int
    global_batch: int
    window: int
    window_batches: tuple[int, ...]
    train_dtypes: tuple[str, ...]
    infer_dtypes: tuple[str, ...]
    warmup: int
    iters: int
    budget_s: float


GPU_PLAN = CheckPlan(arch="ViT-B-16", device="cuda", micro=256, global_batch=1024, window=448,
                     window_batches=(1, 32), train_dtypes=("bf16", "fp32"), infer_dtypes=("fp16", "bf16"),
                     warmup=2, iters=5, budget_s=390)
DRY_PLAN = CheckPlan(arch="mgca-tiny", device="cpu", micro=4, global_batch=8, window=64, window_batches=(1, 2),
                     train_dtypes=("bf16", "fp32"), infer_dtypes=("bf16",), warmup=1, iters=1, budget_s=120)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


class Budget:
    """Wall-clock budget of the whole check; `left()` says whether another row may start."""

    def __init__(self, seconds: float):
        self.start, self.seconds = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> bool:
        return self.elapsed() < self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------ training
def training_rows(plan: CheckPlan, budget: Budget) -> list[dict]:
    cases = [(plan.micro, plan.micro, dtype, compile_mode) for dtype in plan.train_dtypes for compile_mode in
             ("off", "on")]
    cases.append((plan.global_batch, plan.micro, plan.train_dtypes[0], "on"))
    rows = []
    for batch, micro, dtype, compile_mode in cases:
        row = {"batch": batch, "micro": micro, "precision": dtype, "compile": compile_mode}
        if compile_mode == "on" and plan.device == "cpu":
            row["skipped"] = "torch.compile in the CPU dry-run (needs a C++ toolchain, minutes of compile)"
            if batch != micro:  # the gradient-cache path still runs, eager
                row = {**row, "compile": "off", "skipped": None}
        if not budget.left():
            row["skipped"] = f"time budget of {budget.seconds:.0f} s spent"
        if not row.get("skipped"):
            try:
                row.update(bench(plan.arch, batch, dtype, row["compile"], plan.device, warmup=plan.warmup,
                                 iters=plan.iters, micro=micro))
            except Exception as err:  # a failing row is reported, the check goes on
                row["skipped"] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
        rows.append(row)
        print(f"  train b{batch}/{micro} {dtype} compile={row['compile']}: "
              + (f"{row['images_per_s']:.1f} img/s, {100 * row['outside_clip']:.0f}% outside CLIP"
                 if not row.get("skipped") else f"skipped ({row['skipped']})")
              + f"  [{budget.elapsed():.0f} s]", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ inference
def _model(arch: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = Config()
    cfg.backbone.arch = arch
    return build_model(cfg.backbone, cfg.decoder).to(device).eval()


def _time(fn, device: torch.device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def window_runner(model: torch.nn.Module, images: torch.Tensor, dtype: torch.dtype | None, graph: bool):
    """A no-argument callable running the window forward; with `graph`, captured once into a CUDA graph and replayed
    (static input buffer; autocast's weight cache off, as graph capture requires)."""
    device = images.device

    def forward():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None,
                                             cache_enabled=False):
            return model.pixel_embeddings(images)

    if not graph:
        return forward
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):  # warm up on a side stream before capture (cuBLAS handles, autotuning)
            forward()
    torch.cuda.current_stream(device).wait_stream(side)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        forward()
    return cuda_graph.replay


def inference_rows(plan: CheckPlan, budget: Budget) -> list[dict]:
    device = torch.device(plan.device)
    model = _model(plan.arch, device)
    rows = []
    for dtype_name in ("fp32", *plan.infer_dtypes):
        for batch in plan.window_batches:
            for graph in (False, True):
                row = {"precision": dtype_name, "windows": batch, "cuda_graph": graph}
                if graph and device.type != "cuda":
                    row["skipped"] = "CUDA graphs need a CUDA device"
                elif dtype_name == "fp32" and graph:
                    row["skipped"] = "fp32 is the eager reference only"
                elif not budget.left():
                    row["skipped"] = f"time budget of {budget.seconds:.0f} s spent"
                else:
                    try:
                        images = torch.randn(batch, 3, plan.window, plan.window, device=device)
                        run = window_runner(model, images, DTYPES[dtype_name], graph)
                        seconds = _time(run, device, plan.warmup + 1, max(plan.iters, 3))
                        row.update(ms_per_window=1e3 * seconds / batch, windows_per_s=batch / seconds)
                    except Exception as err:
                        row["skipped"] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
                rows.append(row)
                print(f"  infer {dtype_name} x{batch} graph={graph}: "
                      + (f"{row['ms_per_window']:.2f} ms/window" if not row.get("skipped")
                         else f"skipped ({row['skipped']})") + f"  [{budget.elapsed():.0f} s]", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ report
def training_table(rows: list[dict]) -> list[str]:
    done = [r for r in rows if not r.get("skipped")]
    base = done[0]["images_per_s"] if done else None
    lines = ["| micro | global | precision | compile | ms/step | img/s | x first row | CLIP ms/step | outside CLIP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['micro']} | {r['batch']} | {r['precision']} | {r['compile']} |"
        if r.get("skipped"):
            lines.append(f"{head} skipped: {r['skipped']} | | | | |")
        else:
            lines.append(f"{head} {r['step_ms']:.1f} | {r['images_per_s']:.1f} | {r['images_per_s'] / base:.2f} | "
                         f"{r['clip_ms']:.1f} | {100 * r['outside_clip']:.1f}% |")
    return lines


def inference_table(rows: list[dict]) -> list[str]:
    eager = {(r["precision"], r["windows"]): r for r in rows if not r.get("skipped") and not r["cuda_graph"]}
    lines = ["| precision | windows/call | CUDA graph | ms/window | windows/s | vs eager same precision |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['precision']} | {r['windows']} | {'yes' if r['cuda_graph'] else 'no'} |"
        if r.get("skipped"):
            lines.append(f"{head} skipped: {r['skipped']} | | |")
            continue
        ref = eager.get((r["precision"], r["windows"]))
        ratio = f"{ref['ms_per_window'] / r['ms_per_window']:.2f}x faster" if ref and r["cuda_graph"] else ""
        lines.append(f"{head} {r['ms_per_window']:.2f} | {r['windows_per_s']:.1f} | {ratio} |")
    return lines


def describe(plan: CheckPlan) -> str:
    if plan.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        where = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    else:
        where = f"CPU, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    return f"torch {torch.__version__}, {where}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model and sizes: the same code paths")
    parser.add_argument("--budget-s", type=float, default=None, help="skip rows that would start after this")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-infer", action="store_true")
    args = parser.parse_args(argv)
    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch; run with --dry-run for the CPU form", file=sys.stderr)
        return 2
    if args.budget_s is not None:
        plan = CheckPlan(**{**plan.__dict__, "budget_s": args.budget_s})
    if plan.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 rows: what a user's fp32 run gets on Hopper
        torch.backends.cudnn.allow_tf32 = True
    budget = Budget(plan.budget_s)
    print(f"# gpu_check ({'dry-run, ' if args.dry_run else ''}{describe(plan)}; {plan.arch} random init)", flush=True)
    train = [] if args.skip_train else training_rows(plan, budget)
    infer = [] if args.skip_infer else inference_rows(plan, budget)
    out = []
    if train:
        out += ["", f"## training step, {plan.arch}, synthetic data on the device (median of {plan.iters} steps)",
                *training_table(train)]
    if infer:
        out += ["", f"## PyTorch inference per {plan.window}x{plan.window} window, {plan.arch} "
                f"(CLIP + decoder + L2 norm)", *inference_table(infer)]
    print("\n".join(out))
    print(f"\ngpu_check: done in {budget.elapsed():.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
