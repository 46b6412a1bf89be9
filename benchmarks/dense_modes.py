"""Per-window latency of each dense CLIP mode, PyTorch eager and onnxruntime, as ratios to `maskclip`.

    python benchmarks/dense_modes.py            # random-init ViT-B/16, 448 px window (~8.5 min on 2 cores, 6 GB)
    python benchmarks/dense_modes.py --quick    # 224 px window, fewer timed runs (~4 min)
    python benchmarks/dense_modes.py --decoder gated_conv --json out.json

One randomly initialised CLIP (open_clip's ViT-B-16; latency depends on the architecture only) is
shared by every mode. Each mode is exported with the production exporter (`export_onnx`, frozen
features unless --decoder, fixed window, opset 18) and loaded with the runtime's onnxruntime
settings (`export.parity.ort_session`). Then, in one process, every (mode, backend) pair is timed
round-robin at batch 1 (`interleaved_seconds`: one warm-up each, median of the timed runs), so
background load hits them alike. `tcl` is the same computation and graph as `maskclip` and is not
timed twice. The last column is the ONNX graph's fp32 max abs error against PyTorch on the timed
input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.export_parity import interleaved_seconds
from export.onnx_export import export_onnx
from export.parity import ort_session
from mgca.clip_backbone import FrozenCLIP, build_clip_model
from mgca.config import BackboneConfig, DecoderConfig
from mgca.decoder import build_decoder
from mgca.dense_modes import DENSE_MODES
from mgca.model import MGCA

BASELINE = "maskclip"
ALIASES = {"tcl": "maskclip"}


def build_models(arch: str, decoder: str, modes: list[str]) -> dict[str, MGCA]:
    """One random-init CLIP, one MGCA per mode around it (the decoder's weights shared too)."""
    cfg = BackboneConfig(arch=arch)
    clip, source = build_clip_model(cfg)
    backbones = {mode: FrozenCLIP(clip, arch, source, mode) for mode in modes}
    head = build_decoder(DecoderConfig(kind=decoder), backbones[modes[0]].embed_dim)
    return {mode: MGCA(backbone, head).eval() for mode, backbone in backbones.items()}


def fmt_table(rows: list[dict], window: int) -> str:
    header = ["mode", "torch ms", "x maskclip", "ORT ms", "x maskclip", "ORT max abs err", "export s"]
    lines = [header]
    for row in rows:
        if row.get("alias_of"):
            lines.append([row["mode"], f"= {row['alias_of']}", "", "", "", "", ""])
            continue
        lines.append([row["mode"], f"{row['torch_ms']:.1f}", f"{row['torch_ratio']:.2f}", f"{row['ort_ms']:.1f}",
                      f"{row['ort_ratio']:.2f}", f"{row['ort_max_abs_err']:.1e}", f"{row['export_s']:.0f}"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) for line in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return f"per-window latency, batch 1, {window} px window\n" + "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="ViT-B-16", help="open_clip architecture, random init (default ViT-B-16)")
    parser.add_argument("--window", type=int, default=448, help="window in pixels (default 448, the paper's)")
    parser.add_argument("--modes", default=",".join(DENSE_MODES), help="comma-separated modes (default: all)")
    parser.add_argument("--decoder", choices=["none", "gated_conv"], default="none",
                        help="time the frozen features (none, default) or features + the MGCA decoder")
    parser.add_argument("--repeats", type=int, default=12, help="timed rounds over all (mode, backend) pairs")
    parser.add_argument("--budget-s", type=float, default=240.0, help="stop timing after this many seconds")
    parser.add_argument("--quick", action="store_true", help="224 px window, 4 rounds, 60 s budget")
    parser.add_argument("--threads", type=int, default=0, help="torch and onnxruntime threads (0: all cores)")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.window, args.repeats, args.budget_s = 224, 4, 60.0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in DENSE_MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(DENSE_MODES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    timed = [m for m in modes if m not in ALIASES]
    if BASELINE not in timed:
        timed.insert(0, BASELINE)

    print(f"{args.arch} random init, window {args.window}, decoder {args.decoder}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores", flush=True)
    models = build_models(args.arch, args.decoder, timed)
    x = np.random.default_rng(0).standard_normal((1, 3, args.window, args.window)).astype(np.float32)
    xt = torch.from_numpy(x)
    rows: dict[str, dict] = {}
    fns = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in timed:
            t = time.perf_counter()
            path = export_onnx(models[mode], Path(tmp) / f"{mode}.onnx", window=args.window)
            export_s = time.perf_counter() - t
            session = ort_session(path, threads=args.threads)
            with torch.no_grad():
                reference = models[mode].pixel_embeddings(xt).numpy()
            err = float(np.abs(session.run(["embeddings"], {"image": x})[0] - reference).max())
            rows[mode] = {"mode": mode, "export_s": export_s, "ort_max_abs_err": err}
            print(f"  exported {mode} in {export_s:.0f} s (ORT max abs err {err:.1e})", flush=True)

            def torch_run(model=models[mode]):
                with torch.no_grad():
                    model.pixel_embeddings(xt)

            fns[f"{mode}/torch"] = torch_run
            fns[f"{mode}/ort"] = lambda session=session: session.run(["embeddings"], {"image": x})
        print(f"timing {len(fns)} (mode, backend) pairs round-robin ...", flush=True)
        secs = interleaved_seconds(fns, args.repeats, args.budget_s)
    for mode, row in rows.items():
        row.update(torch_ms=1e3 * secs[f"{mode}/torch"], ort_ms=1e3 * secs[f"{mode}/ort"])
    for row in rows.values():
        row.update(
            torch_ratio=row["torch_ms"] / rows[BASELINE]["torch_ms"],
            ort_ratio=row["ort_ms"] / rows[BASELINE]["ort_ms"],
            window=args.window,
            arch=args.arch,
            decoder=args.decoder,
            load_avg_1min=os.getloadavg()[0],
        )
    ordered = [rows[m] if m in rows else {"mode": m, "alias_of": ALIASES[m]} for m in modes]
    if BASELINE not in modes:
        ordered.insert(0, rows[BASELINE])
    print(fmt_table(ordered, args.window))
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(ordered, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
