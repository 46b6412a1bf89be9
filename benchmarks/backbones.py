"""Frames per second per CLIP tower on the CPU engines, in one run: what a smaller tower buys at the edge.

    python benchmarks/backbones.py                    # 4 towers x 2 protocols x 3 engines (exports ~1 h, timing 5 min)
    python benchmarks/backbones.py --towers tinyclip-8m-16,vit-b-16 --protocols 224 --calls 3 --work /tmp/bb

Towers (random weights: the timings are real, the labels are not meaningful): ViT-B/16 and ViT-B/32 by their
open_clip names, and TinyCLIP-ViT-39M/16- and 8M/16-shaped transformers CLIPModels (microsoft/Cream's
TinyCLIP model configs), written as Hugging Face folders and read by `--weights` like a downloaded one. Each
carries the default decoder (x2 upsampling, two 3x3 gated conv blocks at the 512-d joint space; `--decoder none`:
the frozen features alone) and is exported
by `mgca-export --int8` once per protocol: the paper's (short side 448, window 448, stride 224) and short side 224
with window 224 (stride 112). Engines: onnxruntime fp32, OpenVINO bf16 (native bf16 CPUs only; OpenVINO fp32
where the CPU has none) and OpenVINO int8
(the graph the export's keep rule chose), each in its own process that never imports torch
(benchmarks/runtime.py's workers). Per tower, protocol and engine: GFLOP per window (the whole graph, and the
tower alone), windows per frame, median ms and frames/s on a 640x480 frame, median ms on a 1024x2048 image, the
row's peak RSS, labels against the same tower's onnxruntime fp32, and the export's own ONNX-vs-PyTorch check (from
the bundle's manifest). Then one summary line per tower and
protocol for its fastest engine, with its speed-up over ViT-B/16 on that engine and protocol.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def _runtime_benchmark():
    """benchmarks/runtime.py (workers, checkpoint and bundle recipe, FLOP counter); loaded by path, its name is the
    runtime package's."""
    spec = importlib.util.spec_from_file_location("runtime_benchmark", REPO / "benchmarks" / "runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _runtime_benchmark()

# microsoft/Cream TinyCLIP/src/open_clip/model_configs: TinyCLIP-ViT-8M-16-Text-3M.json, -39M-16-Text-19M.json
TINYCLIP = {
    "tinyclip-8m-16": dict(vision=(256, 10, 4), text=(256, 3, 4)),
    "tinyclip-39m-16": dict(vision=(512, 12, 8), text=(512, 6, 8)),
}
TOWERS = ("vit-b-16", "vit-b-32", "tinyclip-39m-16", "tinyclip-8m-16")
OPEN_CLIP = {"vit-b-16": "ViT-B-16", "vit-b-32": "ViT-B-32"}
PROTOCOLS = {"paper": (448, 448), "224": (224, 224)}  # name -> (short side, window); stride half the window
ENGINES = (("onnxruntime", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))
FRAME, LARGE = (480, 640), (1024, 2048)  # (height, width): a 640x480 video frame, a Cityscapes image
FRAME_KEY, LARGE_KEY = "480x640", "1024x2048"


def tinyclip_folder(name: str, out: Path) -> Path:
    """A random-init TinyCLIP-shaped transformers CLIPModel, saved as its authors publish theirs."""
    import torch
    import transformers

    (v_width, v_layers, v_heads), (t_width, t_layers, t_heads) = TINYCLIP[name]["vision"], TINYCLIP[name]["text"]
    config = transformers.CLIPConfig(
        projection_dim=512,
        vision_config=dict(hidden_size=v_width, intermediate_size=4 * v_width, num_hidden_layers=v_layers,
                           num_attention_heads=v_heads, patch_size=16, image_size=224),
        text_config=dict(hidden_size=t_width, intermediate_size=4 * t_width, num_hidden_layers=t_layers,
                         num_attention_heads=t_heads))
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(out)
    return out


def tower_checkpoint(name: str, work: Path, decoder: str) -> Path:
    """The tower's checkpoint with the default decoder, or ("none") its frozen features alone."""
    out = work / f"{name}{'-frozen' if decoder == 'none' else ''}.pt"
    if out.is_file():
        return out
    if name in OPEN_CLIP:
        return bench.make_checkpoint(OPEN_CLIP[name], out, decoder=decoder)
    folder = work / f"{name}-hf"
    if not (folder / "config.json").is_file():
        tinyclip_folder(name, folder)
    return bench.make_checkpoint("mgca-tiny", out, clip_weights=str(folder), decoder=decoder)


def protocol_bundle(checkpoint: Path, protocol: str, work: Path, int8: bool) -> Path:
    short_side, window = PROTOCOLS[protocol]
    out = work / f"{checkpoint.stem}-{protocol}-bundle"
    if not (out / "manifest.json").is_file():
        bench.make_bundle(checkpoint, out, int8, fast=True,
                          extra=("--short-side", str(short_side), "--window", str(window)))
    return out


def engines_here(int8: bool) -> list[tuple[str, str]]:
    """ENGINES this machine runs: OpenVINO's where installed (bf16 only on native bf16, else OpenVINO fp32 stands in
    for it), int8 with an int8 export."""
    ov = bench.openvino_precisions(int8)
    stand_in = [("openvino", "fp32")] if ov and "bf16" not in ov else []
    return [(backend, precision) for backend, precision in [*ENGINES[:1], *stand_in, *ENGINES[1:]]
            if backend == "onnxruntime" or precision in ov]


def measure(protocol: str, checkpoint: Path, bundle: Path, images: Path, calls: int, int8: bool, work: Path,
            reuse: bool) -> dict:
    """Every engine on one tower's bundle: timings, peak RSS, labels (files), windows per image, GFLOP. `reuse`
    takes an engine's results from an earlier run in the same --work folder where they exist."""
    plan = {FRAME_KEY: [(1, calls)], LARGE_KEY: [(1, max(1, calls // 2))]}
    window = PROTOCOLS[protocol][1]
    parity = json.loads((bundle / "manifest.json").read_text()).get("parity", {})
    row = {"gflop": bench.window_gflop(checkpoint, window),
           "tower_gflop": bench.window_gflop(checkpoint, window, backbone_only=True), "engines": {},
           "onnx_parity": {k: parity.get(k) for k in ("max_abs_err", "label_agreement", "num_windows")}}
    for backend, precision in engines_here(int8):
        out = work / f"{checkpoint.stem}-{protocol}-{backend}-{precision}.json"
        if reuse and out.is_file() and out.with_suffix(".npz").is_file():
            res = json.loads(out.read_text())
        else:
            res = bench.spawn("runtime", bundle, images, plan, out, backend=backend, precision=precision)
        res["labels"] = str(out.with_suffix(".npz"))
        row["engines"][f"{backend} {precision}"] = res
    return row


def cpu_ms(timing: dict) -> str:
    """CPU time of the engine's process per call (all threads): far less sensitive than wall time to other work on
    the cores (not immune: shared caches); 2 idle cores fully used would take half of it."""
    return f"{timing['cpu_ms_per_call']:.0f}" if "cpu_ms_per_call" in timing else ""


def onnx_parity(row: dict) -> str:
    """The export's own check, from the bundle's manifest: ONNX (onnxruntime fp32) against PyTorch on its windows."""
    parity = row.get("onnx_parity") or {}
    if parity.get("max_abs_err") is None:
        return ""
    return f"{parity['max_abs_err']:.1e} / {100 * parity['label_agreement']:.0f}%"


def table(results: dict) -> str:
    rows = []
    for (name, protocol), row in results.items():
        fp32 = row["engines"]["onnxruntime fp32"]
        for engine, res in row["engines"].items():
            frame, large = res["timings"][f"{FRAME_KEY}/1"], res["timings"][f"{LARGE_KEY}/1"]
            agree = bench.agreement(Path(res["labels"]), Path(fp32["labels"]))
            rows.append([name, protocol, engine, f"{row['gflop']:.1f} ({row['tower_gflop']:.1f})",
                         str(res["windows"][FRAME_KEY]), f"{frame['median_ms']:.0f}",
                         f"{1e3 / frame['median_ms']:.1f}", cpu_ms(frame), f"{large['median_ms']:.0f}",
                         f"{max(frame['peak_rss_mib'], large['peak_rss_mib']):.0f}",
                         f"{100 * agree[FRAME_KEY]:.2f} / {100 * agree[LARGE_KEY]:.2f}%",
                         onnx_parity(row) if engine == "onnxruntime fp32" else ""])
    return bench.fmt_table(rows, ["tower", "protocol", "engine", "GFLOP / window (tower)", "windows / frame",
                                  "ms 640x480", "frames/s", "CPU ms 640x480", "ms 1024x2048", "peak RSS MiB",
                                  "labels = fp32 (640x480 / 1024x2048)", "ONNX vs PyTorch: max err / labels"])


def summary_lines(results: dict) -> list[str]:
    """Per tower and protocol, its fastest engine on the 640x480 frame, in the form
    `tinyclip-8m-16, 640x480, openvino bf16: 38.2 frames/s, 16.4x vit-b-16` (ratio on the same engine and
    protocol, measured in this run)."""
    lines = []
    for (name, protocol), row in results.items():
        ms = {engine: res["timings"][f"{FRAME_KEY}/1"]["median_ms"] for engine, res in row["engines"].items()}
        engine = min(ms, key=ms.get)
        base = results.get(("vit-b-16", protocol), {}).get("engines", {}).get(engine)
        ratio = (f", {base['timings'][f'{FRAME_KEY}/1']['median_ms'] / ms[engine]:.1f}x vit-b-16"
                 if base is not None and name != "vit-b-16" else "")
        windows = row["engines"][engine]["windows"][FRAME_KEY]
        cpu = row["engines"][engine]["timings"][f"{FRAME_KEY}/1"].get("cpu_ms_per_call")
        bound = f"; CPU {cpu:.0f} ms per frame, {2e3 / cpu:.1f} frames/s on 2 idle cores fully used" if cpu else ""
        lines.append(f"{name}, 640x480, {engine}: {1e3 / ms[engine]:.1f} frames/s{ratio} ({protocol} protocol, "
                     f"{windows} windows, {windows * row['gflop']:.1f} GFLOP per frame{bound})")
    return lines


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--towers", default=",".join(TOWERS), help=f"comma-separated, of {', '.join(TOWERS)}")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated, of paper, 224")
    parser.add_argument("--calls", type=int, default=5, help="timed calls on the 640x480 frame (half on 1024x2048)")
    parser.add_argument("--no-int8", action="store_true", help="export without int8 (no OpenVINO int8 row)")
    parser.add_argument("--decoder", choices=["gated_conv", "none"], default="gated_conv",
                        help="none: the towers' frozen features alone (the training-free path), no decoder")
    parser.add_argument("--work", help="keep checkpoints, bundles and results here and reuse them next time")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--reuse", action="store_true",
                        help="take each engine's timings from an earlier run in --work where they exist")
    args = parser.parse_args(argv)
    towers, protocols = args.towers.split(","), args.protocols.split(",")
    unknown = sorted(set(towers) - set(TOWERS)) + sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        parser.error(f"unknown tower or protocol {unknown}; towers: {', '.join(TOWERS)}; protocols: paper, 224")
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        images = work / "images.npz"
        np.savez(images, **bench.blocky_images(sizes=(FRAME, LARGE)))
        print(f"# backbones benchmark: {cpu_name()}, {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f} at start; random weights, {args.calls} calls per engine on 640x480, "
              f"{max(1, args.calls // 2)} on 1024x2048; decoder {args.decoder}", flush=True)
        results = {}
        for name in towers:
            checkpoint = tower_checkpoint(name, work, args.decoder)
            for protocol in protocols:
                t0 = time.time()
                bundle = protocol_bundle(checkpoint, protocol, work, not args.no_int8)
                results[(name, protocol)] = measure(protocol, checkpoint, bundle, images, args.calls,
                                                    not args.no_int8, work, args.reuse)
                print(f"{name} / {protocol}: {time.time() - t0:.0f} s", flush=True)
        print("\n" + table(results))
        print("\n" + "\n".join(summary_lines(results)))
        if args.json:
            Path(args.json).write_text(json.dumps({f"{n}/{p}": r for (n, p), r in results.items()}, indent=1))
    print(f"\ntotal {time.time() - start:.0f} s; load average {os.getloadavg()[0]:.1f} at end (other processes share "
          "these cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
