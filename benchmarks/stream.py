"""The stream API (runtime/stream.py) against the engine's own speed, and its live latency, side by side in one run.

    python benchmarks/stream.py --work /tmp/stream-bench       # the issue's durations: live 10 min tiny, 2 min ViT-B/16
    python benchmarks/stream.py --live-minutes-tiny 2 --live-minutes-vit 1 --work /tmp/stream-bench   # shorter
    python benchmarks/stream.py --no-vit-b16 --live-minutes-tiny 0.5                                  # a quick look

Both models (the tiny test model and ViT-B/16, random weights, bundles written by `mgca-export` at the paper's
protocol: short side 448, window 448, stride 224, 36 units, 19 Cityscapes classes; made as benchmarks/runtime.py
makes them) run OpenVINO bf16 by default, fp32 on a CPU without native bf16 (`--backend/--precision`), each
in its own process that never imports torch, on a synthetic 640x480 MJPG video written with cv2.VideoWriter
(moving shapes on blocky noise).

(a) policy "every" on the file: the stream's frames per second against 1 / (the engine's own time per frame, the
    same frames' windows through `engine.run` alone, timed before and after the stream), and where a frame's
    time goes when the steps run one after another (video decode, resize + windows, engine, post-processing);
    the temporal modes' cost per frame (decode with one state, in frame order); for the tiny model the same
    on the real clip `--clip` (default ../shared/data/video/tree.avi beside the checkout, 320x240).
(b) policy "latest" on a simulated 30 fps live source (the video's frames in memory, each stamped with its
    scheduled capture time): p95 latency against one frame's processing time (prepare + engine + post in
    series, the median of calls before and after the run), the latency per fifth of the run and its slope (a
    backlog would grow it), RSS sampled every 0.5 s (peak after warm-up against the RSS at its end), and the
    dropped frames. The durations are flags; the figures say what ran.
Weights are random: the timings are real, the labels are not meaningful.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # before benchmarks/ (the script's folder), whose runtime.py would shadow `runtime`

from benchmarks.runtime import CITYSCAPES, make_bundle, make_checkpoint  # noqa: E402

VIDEO_SIZE = (640, 480)  # width, height
VIDEO_FPS = 30.0
LIVE_FRAMES_IN_MEMORY = 30  # the live source cycles through these


# ---------------------------------------------------------------------------------------------- machine and inputs
def cpu_name() -> str:
    """lscpu's model name, core count and the flags that decide the engines' speed."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return f"unknown CPU ({os.cpu_count()} cores)"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    flags = set(fields.get("Flags", "").split())
    wanted = [f for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} cores, flags {' '.join(wanted) or 'none of avx512/amx'}"


def write_video(path: Path, frames: int, seed: int = 0) -> Path:
    """A 640x480 MJPG .avi: blocky noise drifting right, three discs moving along smooth paths."""
    import cv2

    width, height = VIDEO_SIZE
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 2, 3), dtype=np.uint8)
    background = np.repeat(np.repeat(small, 16, 0), 16, 1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"cv2.VideoWriter cannot write MJPG to {path}")
    try:
        for i in range(frames):
            shift = i % 16
            frame = np.ascontiguousarray(background[:height, shift:shift + width])
            for k, colour in enumerate(((255, 40, 40), (40, 255, 40), (40, 40, 255))):
                t = i / VIDEO_FPS + 2 * k
                centre = (int(width / 2 + 200 * np.cos(0.7 * t)), int(height / 2 + 150 * np.sin(1.1 * t)))
                cv2.circle(frame, centre, 40 + 10 * k, colour, -1)
            writer.write(frame)
    finally:
        writer.release()
    return path


def clip_head(clip: Path, frames: int, work: Path) -> Path:
    """The first `frames` frames of a real clip, re-written as MJPG in the work folder (a bounded run on any clip)."""
    import cv2

    out = work / f"{clip.stem}-{frames}.avi"
    if not out.is_file():
        cap = cv2.VideoCapture(str(clip))
        fps = cap.get(cv2.CAP_PROP_FPS) or VIDEO_FPS
        cap.release()
        writer = None
        for rgb in video_frames(clip, limit=frames):
            if writer is None:
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, rgb.shape[1::-1])
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if writer is not None:
            writer.release()
    return out


def video_frames(path: Path, limit: int | None = None):
    """RGB frames of a video file, read with OpenCV (what a file source does)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        count = 0
        while limit is None or count < limit:
            ok, bgr = cap.read()
            if not ok:
                return
            count += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# ---------------------------------------------------------------------------------------------- worker (no torch)
def processing_seconds(seg, frames: list[np.ndarray], calls: int) -> list[float]:
    """One frame's processing time in series, as segment() spends it: prepare, engine, post."""
    out = []
    for i in range(calls):
        start = time.perf_counter()
        seg.segment(frames[i % len(frames)], CITYSCAPES)
        out.append(time.perf_counter() - start)
    return out


def engine_pass(seg, prepared: list, runs: int) -> float:
    """Mean seconds per frame of the engine alone (all of a frame's windows in one engine.run, as encode does)."""
    start = time.perf_counter()
    for i in range(runs):
        seg.engine.run(prepared[i % len(prepared)].crops, seg.max_batch)
    return (time.perf_counter() - start) / runs


def temporal_costs(seg, encoded: list, repeats: int = 2) -> dict[str, float]:
    """Mean ms per frame of decode over the same frames in order, one state per pass, for each temporal mode (the
    passes round-robin, the best of `repeats`, so load from other processes hits every mode alike)."""
    from runtime.temporal import TEMPORAL_MODES

    best: dict[str, float] = {}
    for _ in range(repeats):
        for mode in TEMPORAL_MODES:
            state = seg.temporal_state(mode)
            start = time.perf_counter()
            for enc in encoded:
                seg.decode(enc, CITYSCAPES, state=state)
            best[mode] = min(best.get(mode, float("inf")), 1e3 * (time.perf_counter() - start) / len(encoded))
    return best


def every_worker(seg, video: Path, frames: int, engine_runs: int, sample_frames: int) -> dict:
    """Part (a): the stream on the file with policy every, between two engine-only passes; then the steps in series
    and the temporal modes' decode cost."""
    sample = list(video_frames(video, limit=min(frames, sample_frames)))
    prepared = [seg.prepare(f, "rgb") for f in sample]
    seg.segment(sample[0], CITYSCAPES)  # warm-up
    engine_before = engine_pass(seg, prepared, engine_runs)
    start = time.perf_counter()
    with seg.stream(video, CITYSCAPES, policy="every") as stream:  # the file, opened by runtime.video_sources
        count = sum(1 for _ in stream)
    wall = time.perf_counter() - start
    stats = stream.stats()
    engine_after = engine_pass(seg, prepared, engine_runs)
    # the same steps one after another, per frame: where the time goes
    steps = {"decode": [], "resize": [], "engine": [], "post": []}
    encodings = []
    reader = video_frames(video, limit=len(sample))
    for _ in range(len(sample)):
        t0 = time.perf_counter()
        frame = next(reader)
        t1 = time.perf_counter()
        prep = seg.prepare(frame, "rgb")
        t2 = time.perf_counter()
        encoded = seg.encode(prep)
        t3 = time.perf_counter()
        seg.decode(encoded, CITYSCAPES)
        t4 = time.perf_counter()
        for name, value in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            steps[name].append(value)
        encodings.append(encoded)
    reader.close()
    engine_s = (engine_before + engine_after) / 2
    return {"frames": count, "wall_s": wall, "stream_fps": count / wall, "engine_s_before": engine_before,
            "engine_s_after": engine_after, "engine_fps": 1 / engine_s, "ratio": (count / wall) * engine_s,
            "steps_ms": {k: 1e3 * float(np.mean(v)) for k, v in steps.items()}, "stats": stats,
            "windows": len(prepared[0].boxes), "source": stats["source"], "size": list(sample[0].shape[:2]),
            "temporal_ms": temporal_costs(seg, encodings)}


def live_source(frames: list[np.ndarray], seconds: float, fps: float, stop: threading.Event):
    """A simulated live camera: frame i is captured at t0 + i / fps (its `captured`), whatever the reader does."""
    from runtime.frames import Frame

    t0 = time.monotonic()
    index = 0
    while not stop.is_set():
        due = t0 + index / fps
        if due - t0 > seconds:
            return
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield Frame(index, index / fps, frames[index % len(frames)], due)
        index += 1


def live_worker(seg, video: Path, minutes: float, fps: float, calls: int) -> dict:
    """Part (b): policy latest on a simulated live source for `minutes`."""
    frames = list(video_frames(video, limit=LIVE_FRAMES_IN_MEMORY))
    seg.segment(frames[0], CITYSCAPES)  # warm-up
    before = processing_seconds(seg, frames, calls)
    seconds = 60.0 * minutes
    rss: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample_rss() -> None:
        start = time.monotonic()
        while not stop.wait(0.5):
            rss.append((time.monotonic() - start, rss_mib()))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    points = []  # (capture time since start, latency): no frames kept
    start = time.monotonic()
    with seg.stream(live_source(frames, seconds, fps, stop), CITYSCAPES, policy="latest") as stream:
        for record in stream:
            points.append((record.timestamp, record.latency))
    stats = stream.stats()
    stop.set()
    sampler.join()
    wall = time.monotonic() - start
    after = processing_seconds(seg, frames, calls)
    t = np.array([p[0] for p in points])
    lat = np.array([p[1] for p in points])
    fifths = [lat[(t >= seconds * i / 5) & (t < seconds * (i + 1) / 5)] for i in range(5)]
    warm = max(min(30.0, 0.25 * seconds), 0.1 * seconds)  # warm-up: 10% of the run, at least 30 s when it allows
    rss_t = np.array([r[0] for r in rss])
    rss_v = np.array([r[1] for r in rss])
    after_warm = rss_v[rss_t >= warm]
    at_warm = float(rss_v[rss_t >= warm][0]) if after_warm.size else float("nan")
    one_frame = float(np.median(before + after))
    keep = t >= warm
    slope = float(np.polyfit(t[keep], lat[keep], 1)[0]) if keep.sum() > 2 else float("nan")
    return {"minutes": minutes, "wall_s": wall, "fps_source": fps, "read": stats["read"], "frames": stats["frames"],
            "dropped": stats["dropped"], "dropped_by_queue": stats["dropped_by_queue"],
            "queue_depths": stats["queue_depths"], "one_frame_s": one_frame,
            "one_frame_p95_s": float(np.percentile(before + after, 95)),
            "one_frame_s_before": float(np.median(before)), "one_frame_s_after": float(np.median(after)),
            "latency_p50": float(np.percentile(lat, 50)), "latency_p95": float(np.percentile(lat, 95)),
            "latency_max": float(lat.max()), "p95_over_one_frame": float(np.percentile(lat, 95)) / one_frame,
            "fifths_p50_ms": [1e3 * float(np.percentile(f, 50)) if f.size else None for f in fifths],
            "fifths_p95_ms": [1e3 * float(np.percentile(f, 95)) if f.size else None for f in fifths],
            "slope_ms_per_min": 1e3 * 60 * slope, "warmup_s": warm, "rss_at_warmup_mib": at_warm,
            "rss_peak_after_warmup_mib": float(after_warm.max()) if after_warm.size else float("nan"),
            "rss_growth": float(after_warm.max()) / at_warm - 1 if after_warm.size else float("nan"),
            "rss_samples": len(rss)}


def run_worker(args) -> None:
    from runtime import Segmenter

    precision, why = args.precision, "asked for"
    if precision == "auto" and args.backend == "openvino":  # the bf16 where the CPU computes it natively
        from runtime.openvino_engine import cpu_capabilities

        caps = cpu_capabilities()
        precision = "bf16" if "BF16" in caps else "fp32"
        why = "the CPU computes bf16 natively" if precision == "bf16" else (
            f"bf16 wanted, but this CPU has no native bf16 (OpenVINO lists {', '.join(caps)}): fp32 instead")
    seg = Segmenter(args.bundle, backend=args.backend, device="cpu",
                    precision=None if precision == "auto" else precision)
    describe = seg.describe()
    result = {"engine": f"{describe['backend']} {describe['precision']} ({why})", "provider": describe.get("provider"),
              "window": describe["window"], "stride": describe["stride"], "short_side": describe["short_side"],
              "units": describe["units"], "assignment": describe["assignment"]}
    if args.part == "every":
        result["every"] = every_worker(seg, Path(args.video), args.frames, args.engine_runs, args.sample_frames)
    else:
        result["live"] = live_worker(seg, Path(args.video), args.minutes, args.fps, args.calls)
    result["torch_imported"] = "torch" in sys.modules
    Path(args.out).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------- parent
def spawn(bundle: Path, out: Path, **options) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--bundle", str(bundle), "--out", str(out)]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        raise SystemExit(f"worker {options} failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def every_line(what: str, e: dict) -> str:
    steps = e["steps_ms"]
    serial = sum(steps.values())
    return (f"{what} (source: {e['source']}): stream {e['stream_fps']:.2f} frames/s over {e['frames']} frames; engine "
            f"alone {e['engine_fps']:.2f} frames/s ({1e3 * e['engine_s_before']:.1f} ms per frame before the stream, "
            f"{1e3 * e['engine_s_after']:.1f} ms after); **stream / engine-only = {e['ratio']:.3f}** (target >= 0.9); "
            "in series the steps take "
            + ", ".join(f"{k} {v:.1f} ms ({100 * v / serial:.0f}%)" for k, v in steps.items())
            + f" = {serial:.1f} ms, {1e3 / serial:.2f} frames/s: the stream is {e['stream_fps'] * serial / 1e3:.2f}x "
            f"that; deepest queues {e['stats']['queue_depths']}")


def bench_model(label: str, arch: str, work: Path, args, frames: int, minutes: float, engine_runs: int,
                calls: int, sample_frames: int, clip: Path | None = None) -> str:
    video = work / f"synthetic-640x480-{frames}.avi"
    if not video.is_file():
        write_video(video, frames)
    checkpoint, bundle = work / f"{label}.pt", work / f"{label}-bundle"
    if not (checkpoint.is_file() and (bundle / "manifest.json").is_file()):  # --work DIR: made once, then reused
        make_checkpoint(arch, checkpoint)
        make_bundle(checkpoint, bundle, int8=False, fast=True)
    common = dict(backend=args.backend, precision=args.precision)
    lines = [f"## {label}: {arch}, random weights"]
    if args.no_every:
        minutes_only = True
    else:
        minutes_only = False
        a = spawn(bundle, work / f"{label}-every.json", part="every", video=video, frames=frames,
                  engine_runs=engine_runs, sample_frames=sample_frames, **common)
        e = a["every"]
        lines[0] += (f", {a['engine']} (provider {a['provider']}), window {a['window']}/{a['stride']}, short side "
                     f"{a['short_side']}, {a['units']} units, assignment {a['assignment']}; {e['windows']} windows "
                     f"per 640x480 frame; torch imported by the worker: {'yes' if a['torch_imported'] else 'no'}")
        lines.append(every_line(f"(a) policy every on the {frames}-frame 640x480 file", e))
    temporal = {} if minutes_only else e["temporal_ms"]
    if temporal:
        lines.append("    temporal option, decode per frame in order with one state (best of 2 passes): "
                     + ", ".join(f"{mode} {ms:.1f} ms" + (f" ({ms - temporal['off']:+.1f} ms)" if mode != "off"
                                                          else "") for mode, ms in temporal.items()))
    if clip is not None and not minutes_only:
        head = clip_head(clip, args.clip_frames, work)
        c = spawn(bundle, work / f"{label}-clip.json", part="every", video=head, frames=args.clip_frames,
                  engine_runs=engine_runs, sample_frames=sample_frames, **common)["every"]
        lines.append(every_line(f"(a') policy every on the real clip {clip.name}, its first {c['frames']} frames "
                                f"({c['size'][1]}x{c['size'][0]}, {c['windows']} windows per frame)", c))
    if minutes > 0:
        b = spawn(bundle, work / f"{label}-live.json", part="live", video=video, minutes=minutes, fps=args.fps,
                  calls=calls, **common)["live"]
        lines.append(
            f"(b) policy latest, simulated {b['fps_source']:g} fps live source, {b['minutes']:g} min "
            f"({b['wall_s']:.0f} s wall): {b['read']} frames captured, {b['frames']} labelled, {b['dropped']} dropped "
            f"({b['dropped_by_queue']}); one frame in series {1e3 * b['one_frame_s']:.1f} ms (median before "
            f"{1e3 * b['one_frame_s_before']:.1f}, after {1e3 * b['one_frame_s_after']:.1f}; p95 of those calls "
            f"{1e3 * b['one_frame_p95_s']:.1f}); latency p50 "
            f"{1e3 * b['latency_p50']:.1f} ms, p95 {1e3 * b['latency_p95']:.1f} ms, max {1e3 * b['latency_max']:.1f} "
            f"ms; **p95 / one frame = {b['p95_over_one_frame']:.2f}** (target <= 1.5)")
        lines.append(
            "    latency per fifth of the run, p50 / p95 ms: "
            + ", ".join(f"{p50:.0f} / {p95:.0f}" if p50 is not None else "-"
                        for p50, p95 in zip(b["fifths_p50_ms"], b["fifths_p95_ms"], strict=True))
            + f"; slope after warm-up {b['slope_ms_per_min']:+.2f} ms per minute (a backlog would grow it by about "
            "a frame's time per frame)")
        lines.append(
            f"    RSS: {b['rss_at_warmup_mib']:.0f} MiB at the end of the {b['warmup_s']:.0f} s warm-up, peak after it "
            f"{b['rss_peak_after_warmup_mib']:.0f} MiB: **{100 * b['rss_growth']:+.1f}%** (target within 5%), "
            f"{b['rss_samples']} samples; deepest queues {b['queue_depths']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="keep the video, bundles and results here; bundles are reused next time")
    parser.add_argument("--no-tiny", action="store_true")
    parser.add_argument("--no-vit-b16", action="store_true")
    parser.add_argument("--no-every", action="store_true", help="skip (a), run the live part (b) only")
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--precision", default="auto", help="auto: bf16 where the CPU computes it natively, else fp32")
    parser.add_argument("--frames-tiny", type=int, default=150, help="frames of the file for (a), tiny model")
    parser.add_argument("--frames-vit", type=int, default=24, help="frames of the file for (a), ViT-B/16")
    parser.add_argument("--live-minutes-tiny", type=float, default=10.0, help="(b) duration, tiny; 0 skips (b)")
    parser.add_argument("--live-minutes-vit", type=float, default=2.0, help="(b) duration, ViT-B/16; 0 skips (b)")
    parser.add_argument("--fps", type=float, default=VIDEO_FPS, help="the simulated live source's frame rate")
    parser.add_argument("--clip", default=str(REPO.parent / "shared" / "data" / "video" / "tree.avi"),
                        help="a real clip for (a) on the tiny model, skipped when absent ('' skips it)")
    parser.add_argument("--clip-frames", type=int, default=150, help="frames of the real clip to stream")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=["every", "live"], help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--engine-runs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--minutes", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sample-frames", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"# stream benchmark: {cpu_name()}; load average {os.getloadavg()[0]:.1f} at start; "
              f"python {' '.join(sys.argv)}\n", flush=True)
        if not args.no_tiny:
            clip = Path(args.clip) if args.clip and Path(args.clip).is_file() else None
            print(bench_model("tiny", "mgca-tiny", work, args, args.frames_tiny, args.live_minutes_tiny,
                              engine_runs=30, calls=20, sample_frames=10, clip=clip), flush=True)
            print()
        if not args.no_vit_b16:
            print(bench_model("vit-b16", "ViT-B-16", work, args, args.frames_vit, args.live_minutes_vit,
                              engine_runs=8, calls=5, sample_frames=8), flush=True)
    print(f"\ntotal {time.time() - start:.0f} s; load average {os.getloadavg()[0]:.1f} at end (other processes share "
          "these cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
