"""Export parity and latency: ONNX (onnxruntime CPU) fp32/int8 vs PyTorch eager, per window.

    python benchmarks/export_parity.py            # trained tiny model (runs/embedded/last.pt) + mgca-tiny (random)
    python benchmarks/export_parity.py --vitb     # + ViT-B/16 (random init unless --clip-weights) at 448
    python benchmarks/export_parity.py --vitb --vitb-batch 8 --clip-weights /weights/ViT-B-16.pt

The trained row is the embedded default's checkpoint (`python -m mgca.train` writes it): its CLIP
is the tiny one pretrained on synthetic pairs and its decoder is trained, so its int8 agreement is
measured with the synthetic benchmark's class embeddings on held-out synthetic images.

For every row: export the graph (dynamo, opset 18), fp32 parity against `pixel_embeddings` on
random + synthetic windows (max abs err, relative error, label agreement over 20 random class
embeddings), int8 QDQ quantisation calibrated on synthetic images and its agreement with fp32,
then latency per window (median of timed runs after a warm-up, same batch, same process, all
cores, the three variants timed round-robin so background load hits them alike; the 1-minute
load average is printed per row) for PyTorch eager, onnxruntime fp32 and onnxruntime int8, and
the ratios.
Random-init rows measure latency (architecture) only: their int8 agreement says nothing about
trained weights.
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

from calibration.quantize import evaluate_int8, quantize_int8
from calibration.reader import ImageFolderCalibrationReader, Preprocess, synthetic_images
from export.onnx_export import export_onnx
from export.parity import check_parity, parity_windows, random_class_embeddings, run_torch
from mgca.config import Config
from mgca.decoder import perturb_decoder
from mgca.model import build_model
from runtime.contract import InferenceSettings
from runtime.engines import OrtEngine


def interleaved_seconds(fns: dict, repeats: int, budget_s: float) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin (torch, ort fp32, ort int8, torch, ...)
    after one warm-up call each, so that load from other processes hits every variant alike."""
    for fn in fns.values():
        fn()  # warm-up (allocations, onnxruntime's first-run work)
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return {name: float(np.median(v)) for name, v in times.items()}


def random_model(arch: str, clip_weights: str | None):
    """`arch` with random (or given) CLIP weights and a perturbed decoder: what latency and fp32 parity need."""
    cfg = Config()
    cfg.backbone.arch = arch
    cfg.backbone.checkpoint = clip_weights
    model = build_model(cfg.backbone, cfg.decoder).eval()
    perturb_decoder(model.decoder)
    return model, "trained CLIP weights" if clip_weights else "random init"


def trained_model(checkpoint: str):
    """The checkpoint's model, the class embeddings of the vocabulary it was trained for, and images of its domain."""
    from mgca.checkpoint import load_model
    from mgca.pairs.synthetic import CLASS_NAMES, SyntheticCaptions

    model, cfg = load_model(checkpoint)
    if cfg.data.source != "synthetic":
        return model, "trained", None, None
    classes = model.backbone.class_embeddings(CLASS_NAMES, ["a {}"]).numpy()
    size = cfg.benchmark.image_size
    held_out = SyntheticCaptions(16, size, seed=cfg.benchmark.seed + 1)
    images = [np.asarray(held_out[i][0]) for i in range(len(held_out))]
    return model, "trained (embedded)", classes, images


def bench(arch: str, model, weights: str, window: int, batches: list[int], calib_images: int, repeats: int,
          budget_s: float, workdir: Path, spinning: bool, classes: np.ndarray | None = None,
          images: list[np.ndarray] | None = None) -> list[dict]:
    """One export + int8 quantisation of `model` at `window`, then one latency row per batch size.

    `classes` (K, C) and `images` come from the model's own domain when it is trained; without them,
    random class embeddings and photo-like synthetic images are used.
    """
    base: dict = {"arch": arch, "weights": weights, "window": window}

    t = time.perf_counter()
    fp32_path = export_onnx(model, workdir / f"{arch}-{window}.onnx", window=window)
    base["export_s"] = time.perf_counter() - t
    output_stride = int(model.output_stride)
    settings = InferenceSettings.for_window(window, output_stride)
    pre = Preprocess(settings, tuple(model.backbone.mean), tuple(model.backbone.std), output_stride)
    sets = parity_windows(pre, images, num_random=1, num_synthetic=1, max_windows=8 if images else 2)
    classes = classes if classes is not None else random_class_embeddings(20, int(model.embed_dim))
    reference = {k: run_torch(model, w, batch_size=2) for k, w in sets.items()}
    fp32 = OrtEngine(fp32_path, device="cpu", spinning=spinning)
    report = check_parity(model, fp32_path, sets, classes, engine=fp32, reference=reference, batch_size=2)
    base.update(fp32_max_abs_err=report.max_abs_err, fp32_rel_err=report.rel_err,
                fp32_label_agreement=report.label_agreement)

    t = time.perf_counter()
    calib = images[:calib_images] if images else synthetic_images(calib_images, (window * 3 // 4, window), seed=1)
    reader = ImageFolderCalibrationReader(calib, pre, limit=calib_images)
    int8_path = quantize_int8(fp32_path, workdir / f"{arch}-{window}.int8.onnx", reader).path
    base["quantize_s"] = time.perf_counter() - t
    base["calib_windows"] = len(reader.windows)
    int8 = OrtEngine(int8_path, device="cpu", spinning=spinning)
    windows = np.concatenate(list(sets.values()))
    ev = evaluate_int8(fp32, int8, windows, classes, batch_size=2,
                       fp32_embeddings=np.concatenate([reference[k] for k in sets]))
    base.update(int8_label_agreement=ev["label_agreement"], int8_miou_vs_fp32=ev["miou_vs_fp32"],
                int8_mean_cosine=ev["mean_cosine"])

    out = []
    for batch in batches:
        row = {**base, "batch": batch}
        x = np.random.default_rng(0).standard_normal((batch, 3, window, window)).astype(np.float32)
        xt = torch.from_numpy(x)

        def torch_run(xt=xt):
            with torch.no_grad():
                model.pixel_embeddings(xt)

        secs = interleaved_seconds({
            "torch_ms": torch_run,
            "ort_fp32_ms": lambda x=x: fp32.run(x),
            "ort_int8_ms": lambda x=x: int8.run(x),
        }, repeats, budget_s)
        row.update({name: 1e3 * value / batch for name, value in secs.items()})
        row["load_avg_1min"] = os.getloadavg()[0]
        row["torch_over_ort_fp32"] = row["torch_ms"] / row["ort_fp32_ms"]
        row["torch_over_ort_int8"] = row["torch_ms"] / row["ort_int8_ms"]
        out.append(row)
    return out


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="runs/embedded/last.pt",
                        help="trained checkpoint for the 'trained' rows (default: the embedded run's; "
                             "skipped if missing)")
    parser.add_argument("--trained-windows", default="64,128",
                        help="windows for the trained checkpoint (64 = its training size)")
    parser.add_argument("--tiny-windows", default="224,448", help="windows for mgca-tiny (224 is its native grid)")
    parser.add_argument("--tiny-batch", type=int, default=4)
    parser.add_argument("--vitb", action="store_true", help="add ViT-B-16 rows")
    parser.add_argument("--vitb-windows", default="448", help="windows for ViT-B-16, e.g. 224,448")
    parser.add_argument("--vitb-batch", default="1", help="batches for ViT-B-16, e.g. 1,8")
    parser.add_argument("--clip-weights", help="ViT-B-16 CLIP weights (default: random init, latency only)")
    parser.add_argument("--calib-images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=60.0,
                        help="stop timing after this many seconds per row (>= 1 round)")
    parser.add_argument("--spinning", action="store_true",
                        help="let onnxruntime's idle threads spin (default off, as runtime.OrtEngine configures it)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs; "
          "latency = median "
          "per window (batch time / batch size), onnxruntime CPUExecutionProvider, ORT_ENABLE_ALL, "
          f"thread spinning {'on' if args.spinning else 'off'}")
    jobs = []
    if Path(args.checkpoint).is_file():
        model, weights, classes, images = trained_model(args.checkpoint)
        jobs += [(model.backbone.arch, model, weights, w, [args.tiny_batch], classes,
                  images) for w in _ints(args.trained_windows)]
    else:
        print(f"(no trained rows: {args.checkpoint} does not exist; run `python -m mgca.train` first)")
    model, weights = random_model("mgca-tiny", None)
    jobs += [("mgca-tiny", model, weights, w, [args.tiny_batch], None, None) for w in _ints(args.tiny_windows)]
    if args.vitb:
        model, weights = random_model("ViT-B-16", args.clip_weights)
        jobs += [("ViT-B-16", model, weights, w, _ints(args.vitb_batch), None, None) for w in _ints(args.vitb_windows)]
    header = (f"{'arch':10} {'weights':18} {'win':>4} {'bs':>3} | {'fp32 max|d|':>11} {'fp32 rel':>9} "
              f"{'fp32 agr':>8} | "
              f"{'int8 agr':>8} {'int8 mIoU':>9} | {'torch ms':>9} {'ort32 ms':>9} {'ort8 ms':>8} | {'t/ort32':>7} "
              f"{'t/ort8':>6} | load")
    print(header)
    print("-" * len(header))
    results = []
    with tempfile.TemporaryDirectory(prefix="mgca-bench-") as tmp:
        for arch, model, weights, window, batches, classes, images in jobs:
            for row in bench(arch, model, weights, window, batches, args.calib_images, args.repeats, args.budget_s,
                             Path(tmp),
                             args.spinning, classes, images):
                results.append(row)
                print(f"{arch:10} {row['weights'][:18]:18} {window:>4} {row['batch']:>3} | "
                      f"{row['fp32_max_abs_err']:>11.2e} "
                      f"{row['fp32_rel_err']:>9.2e} {row['fp32_label_agreement']:>8.2%} | "
                      f"{row['int8_label_agreement']:>8.2%} "
                      f"{row['int8_miou_vs_fp32']:>9.3f} | {row['torch_ms']:>9.1f} {row['ort_fp32_ms']:>9.1f} "
                      f"{row['ort_int8_ms']:>8.1f} | "
                      f"{row['torch_over_ort_fp32']:>7.2f} {row['torch_over_ort_int8']:>6.2f} | "
                      f"{row['load_avg_1min']:.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
