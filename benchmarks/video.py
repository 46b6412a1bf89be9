"""Temporal stability on the moving miniature and on real footage: docs/results/video.json.

    python benchmarks/video.py --checkpoint runs/embedded/last.pt --out docs/results/video.json
    python benchmarks/video.py --checkpoint runs/embedded/last.pt --seeds 29999 --out /tmp/val.json   # validation
    python benchmarks/video.py --checkpoint runs/embedded/last.pt --footage ../shared/data/video/tree.avi \\
        --vit-bundle /tmp/vitb16-bundle --no-synthetic --out /tmp/tree.json

Synthetic: the embedded default's trained decoder and its frozen baseline (the same CLIP without the decoder, as
the embedded benchmark scores it), each on the clips of every generator seed (`mgca.pairs.synthetic_video`, the
training world's look), at the synthetic protocol (96 px, windows 64/32, 36 units). Each frame is embedded once;
every temporal mode decodes it with its own stream state (mgca.video_evaluation). A row per (model, temporal mode):
the figures of the seeds pooled (mIoU over all frames, VC and TC averaged over clips and pairs), and each seed's.
`--diagnose` adds rows that say where flicker comes from: pixel units (no meta-points to re-draw) and clips without
sensor noise.

Footage: TC and label-free flicker of every mode on a real clip without labels, with the embedded model (its
protocol, the 44 synthetic classes) and, with `--vit-bundle`, a random ViT-B/16 bundle through the runtime (its
manifest's settings, its vocabulary). Decode cost per frame of each mode is timed side by side in the same run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.contract import TEMPORAL_ALPHA, TEMPORAL_GATE, TEMPORAL_GROW, TEMPORAL_MODES  # noqa: E402
from runtime.files import atomic_write_text  # noqa: E402
from runtime.video_metrics import VideoMetrics  # noqa: E402

MODELS = ("frozen", "decoder")
FIGURES = ("miou", "vc8", "vc16", "flicker", "tc")


def predictor_for(checkpoint: Path, mode: str, units: int, classes: str = "synthetic"):
    """The embedded checkpoint's decoder, or its frozen CLIP (the embedded benchmark's baseline), as a PyTorch
    predictor at the synthetic protocol."""
    from mgca.evalsets import get_spec
    from mgca.inference import InferenceConfig, SegmentationPredictor
    from mgca.inference.loading import load_inference_model
    from mgca.quality import frozen_baseline

    model = load_inference_model(str(checkpoint), "checkpoint")
    if mode == "frozen":
        model = frozen_baseline(model)
    spec = get_spec(classes)
    predictor = SegmentationPredictor(model, InferenceConfig(**spec.protocol.settings(units=units)))
    predictor.set_classes(spec.prompt_classes, spec.prompt_texts)
    return predictor


def world(checkpoint: Path) -> dict:
    from mgca.checkpoint import config_of, load_checkpoint

    cfg = config_of(load_checkpoint(checkpoint))
    synthetic = cfg.data.synthetic
    return {"image_size": cfg.benchmark.image_size, "max_objects": max(2, synthetic.max_objects),
            "texture_contrast": synthetic.texture_contrast, "max_rotation": synthetic.max_rotation}


def run_clips(predictor, root: Path, modes: tuple[str, ...]) -> tuple[dict[str, VideoMetrics], float]:
    from mgca.evalsets.sequences import open_sequences
    from mgca.video_evaluation import evaluate_video

    return evaluate_video(open_sequences("synthetic-video", root), predictor.embed,
                          lambda encoded, state: predictor.labels_from_embedding(*encoded, state=state),
                          predictor.temporal_state, modes, progress=False)


def run_clips_with(predictor, root: Path, new_state) -> VideoMetrics:
    """One "ema" run with states from `new_state` (other constants than the contract's)."""
    from mgca.evalsets.sequences import open_sequences
    from mgca.video_evaluation import evaluate_video

    return evaluate_video(open_sequences("synthetic-video", root), predictor.embed,
                          lambda encoded, state: predictor.labels_from_embedding(*encoded, state=state),
                          new_state, ("ema",), progress=False)[0]["ema"]


def pooled(per_seed: list[VideoMetrics]) -> dict:
    """Seeds pooled: each figure averaged over seeds weighted by their frames (equal counts: the plain mean)."""
    frames = np.array([m.frames for m in per_seed], dtype=np.float64)
    out = {}
    for name in FIGURES:
        values = np.array([getattr(m, name) for m in per_seed], dtype=np.float64)
        ok = ~np.isnan(values)
        out[name] = round(float((values[ok] * frames[ok]).sum() / frames[ok].sum()), 6) if ok.any() else None
    return out


def synthetic_rows(args, look: dict) -> tuple[list[dict], list[dict]]:
    from mgca.pairs.synthetic_video import SyntheticSequences, write_sequences

    modes = tuple(TEMPORAL_MODES)
    roots = {}
    for seed in args.seeds:
        sequences = SyntheticSequences(args.count, args.frames, seed=seed, noise=args.noise, **look)
        roots[seed] = write_sequences(args.work / f"clips-{seed}", sequences)
    rows, diagnosis = [], []
    for model in args.models:
        predictor = predictor_for(args.checkpoint, model, args.units)
        results = {}
        for seed, root in roots.items():
            results[seed], seconds = run_clips(predictor, root, modes)
            print(f"{model} seed {seed}: {seconds:.0f} s", file=sys.stderr, flush=True)
        for mode in modes:
            per_seed = [results[seed][mode] for seed in args.seeds]
            rows.append({"mode": model, "temporal": mode, "units": args.units, **pooled(per_seed),
                         "seeds": list(args.seeds), "sequences": sum(m.sequences for m in per_seed),
                         "frames": sum(m.frames for m in per_seed), "frames_per_sequence": args.frames,
                         "per_seed": {str(seed): {k: results[seed][mode].to_dict()[k] for k in FIGURES}
                                      for seed in args.seeds}})
        if args.diagnose:
            pixel = predictor_for(args.checkpoint, model, 0)
            per_seed = [run_clips(pixel, roots[seed], ("off",))[0]["off"] for seed in args.seeds]
            diagnosis.append({"mode": model, "temporal": "off", "units": 0, "what": "pixel units (no meta-points)",
                              **pooled(per_seed), "seeds": list(args.seeds)})
            from mgca.inference.temporal import TorchTemporalState

            first = [run_clips_with(predictor, roots[seed], lambda mode: TorchTemporalState("ema", 0.5, 0.05, 1))
                     for seed in args.seeds]
            diagnosis.append({"mode": model, "temporal": "ema", "units": args.units,
                              "what": "ema as first declared: alpha 0.5, gate 0.05, changed cells grown by one cell",
                              **pooled(first), "seeds": list(args.seeds)})
            clean = []
            for seed in args.seeds:
                sequences = SyntheticSequences(args.count, args.frames, seed=seed, noise=0.0, **look)
                clean.append(run_clips(predictor, write_sequences(args.work / f"clean-{seed}", sequences),
                                       ("off", "ema"))[0])
            for mode in ("off", "ema"):
                diagnosis.append({"mode": model, "temporal": mode, "units": args.units,
                                  "what": "clips without sensor noise", **pooled([c[mode] for c in clean]),
                                  "seeds": list(args.seeds)})
    return rows, diagnosis


def read_frames(path: Path, limit: int | None) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise SystemExit(f"{path}: no frames could be read")
    return frames


def footage_rows(args) -> list[dict]:
    from mgca.video_evaluation import footage_metrics
    from runtime import Segmenter

    frames = read_frames(args.footage, args.footage_frames)
    modes = tuple(TEMPORAL_MODES)
    rows = []
    models = []
    if args.checkpoint:
        predictor = predictor_for(args.checkpoint, "decoder", args.units, "synthetic-stuff")
        models.append(("embedded decoder (44 synthetic classes, 96 px protocol)", predictor.embed,
                       lambda encoded, state: predictor.labels_from_embedding(*encoded, state=state),
                       predictor.temporal_state))
    if args.vit_bundle:
        seg = Segmenter(args.vit_bundle)
        models.append((f"random ViT-B/16 bundle ({seg.backend} {seg.precision}, its manifest's settings, "
                       f"{len(seg.class_names)} classes)", seg.encode,
                       lambda encoded, state, seg=seg: seg.decode(encoded, state=state).labels, seg.temporal_state))
    for label, encode, decode, new_state in models:
        encoded = {id(frame): encode(frame) for frame in frames}  # the engine once per frame, for every mode

        def cached(frame, encoded=encoded):
            return encoded[id(frame)]
        timings = decode_costs(frames[:12], cached, decode, new_state, modes)
        metrics = footage_metrics(frames, cached, decode, new_state, modes)
        del encoded
        for mode in modes:
            rows.append({"model": label, "temporal": mode, "tc": metrics[mode].to_dict()["tc"],
                         "flicker": metrics[mode].to_dict()["flicker"], "frames": metrics[mode].frames,
                         "decode_ms_per_frame": timings[mode]})
        print(f"{label}: done", file=sys.stderr, flush=True)
    return rows


def decode_costs(frames, encode, decode, new_state, modes, repeats: int = 3) -> dict[str, float]:
    """Milliseconds per frame of each mode's decode (the engine excluded), best of `repeats`, modes interleaved."""
    encoded = [encode(frame) for frame in frames]
    best = {mode: float("inf") for mode in modes}
    for _ in range(repeats):
        for mode in modes:
            state = new_state(mode)
            start = time.perf_counter()
            for item in encoded:
                decode(item, state)
            best[mode] = min(best[mode], (time.perf_counter() - start) / len(encoded))
    return {mode: round(1e3 * seconds, 2) for mode, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="the embedded default's last.pt")
    parser.add_argument("--seeds", default="20000,20001,20002", help="sequence generator seeds")
    parser.add_argument("--count", type=int, default=20, help="clips per seed")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--noise", type=float, default=4.0, help="sensor noise std in 8-bit levels")
    parser.add_argument("--units", type=int, default=36)
    parser.add_argument("--models", default=",".join(MODELS), help="frozen, decoder or both (comma-separated)")
    parser.add_argument("--diagnose", action="store_true", help="add the pixel-unit and noise-free rows")
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--footage", type=Path, help="a real clip without labels (TC and flicker)")
    parser.add_argument("--footage-frames", type=int, default=None, help="first N frames of the footage")
    parser.add_argument("--vit-bundle", type=Path, help="a random ViT-B/16 bundle for the footage")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mgca-video"), help="where the clips are written")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.seeds = tuple(int(s) for s in args.seeds.split(","))
    args.models = tuple(m for m in args.models.split(",") if m)
    import cv2
    import torch

    # One thread each: on 2 shared cores, torch's and OpenCV's pools spinning against other jobs made a 96 px frame
    # 10x slower in wall time (measured: 0.3 s against 22 ms CPU per frame with all four modes).
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    record: dict = {"unit": "fraction",
                    "temporal_constants": {"alpha": TEMPORAL_ALPHA, "gate": TEMPORAL_GATE, "grow": TEMPORAL_GROW},
                    "command": "python benchmarks/video.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if not args.no_synthetic:
        look = world(args.checkpoint)
        record["synthetic"] = {"checkpoint": str(args.checkpoint), "seeds": list(args.seeds), "clips_per_seed":
                               args.count, "frames_per_clip": args.frames, "noise": args.noise, "world": look,
                               "protocol": "synthetic (objects; backdrop ignored): 96 px, windows 64/32, "
                                           f"{args.units} units, templates plain"}
        record["rows"], diagnosis = synthetic_rows(args, look)
        if diagnosis:
            record["diagnosis"] = diagnosis
    if args.footage:
        record["footage"] = {"file": str(args.footage), "rows": footage_rows(args)}
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    for row in record.get("rows", []):
        print(f"{row['mode']:<8} {row['temporal']:<6} " + "  ".join(
            f"{k} {100 * row[k]:.2f}" if row[k] is not None else f"{k} -" for k in FIGURES))
    for row in record.get("footage", {}).get("rows", []):
        print(f"{row['model'][:30]:<30} {row['temporal']:<6} tc {100 * row['tc']:.2f} flicker "
              f"{100 * row['flicker']:.2f} decode {row['decode_ms_per_frame']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
