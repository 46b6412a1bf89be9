"""End-to-end latency and memory of the lean runtime (onnxruntime fp32 / int8, OpenVINO fp32 / bf16 / int8) against
PyTorch eager, in one run.

    python benchmarks/runtime.py                      # tiny + ViT-B-16 random-init, ~15 minutes on 2 CPU cores
    python benchmarks/runtime.py --no-vit-b16         # tiny model only, ~3-4 minutes
    python benchmarks/runtime.py --quick --no-tiny --work /tmp/rt   # ViT-B-16 only; the bundle is reused next time

Both models (the tiny test model and ViT-B-16, random init) go through the same steps. Every engine
(PyTorch eager, runtime fp32 / int8 ORT, and where OpenVINO is installed runtime fp32 / bf16 (native bf16 CPUs
only) / int8 (NNCF) OpenVINO) runs in its own subprocess (the runtime ones never import torch), on the same bundle
and the same images: 448x448, 1024x2048 (Cityscapes size) and 4096x4096,
19 classes, paper defaults (short side 448, window 448, stride 224, 36 units). Per image size and number of
concurrent callers (threads sharing one Segmenter / predictor) it reports median and p90 latency per image,
images/s, the ratio to PyTorch eager, ms per megapixel of the input, the ratio to the floor (the window's GEMM
FLOPs at the GEMM rate onnxruntime reaches here, measured in the same run), the peak RSS of that row alone,
and label agreement with PyTorch eager; then one summary line per reduced-precision engine and image size
(`448x448, 1 caller: openvino bf16 speed-up over onnxruntime fp32 4.31x, labels = fp32 99.62%`), each engine's
construction and first-call time, and OpenVINO's compiled-model cache across two fresh processes. It also
times FAISS against numpy for the meta-point assignment. Weights are random (no real weights exist here):
the timings are real, the labels are not meaningful.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

CITYSCAPES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
              "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
SIZES = ((448, 448), (1024, 2048), (4096, 4096))


def peak_rss_mib() -> float:
    """Peak RSS of this process. VmHWM (Linux) starts afresh at exec; getrusage's ru_maxrss does not: a
    child keeps the parent's peak as a floor, which would charge the torch parent's memory to the runtime."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def reset_peak_rss() -> None:
    """Start VmHWM afresh (Linux: writing 5 to clear_refs), so each row reports its own peak; else it accumulates."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def blocky_images(seed: int = 0, sizes: tuple[tuple[int, int], ...] = SIZES) -> dict[str, np.ndarray]:
    """Piecewise-constant RGB noise (16 px blocks) at each (height, width), keyed "HxW"."""
    rng = np.random.default_rng(seed)
    out = {}
    for height, width in sizes:
        small = rng.integers(0, 256, (-(-height // 16), -(-width // 16), 3), dtype=np.uint8)
        out[f"{height}x{width}"] = np.ascontiguousarray(np.repeat(np.repeat(small, 16, 0), 16, 1)[:height, :width])
    return out


# ---------------------------------------------------------------------------------------------- workers
def time_calls(fn, image: np.ndarray, callers: int, calls_per_caller: int) -> dict:
    """Latency of `fn(image)` per call with `callers` threads calling at once; images/s over the wall time."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(callers)

    def worker():
        barrier.wait()
        for _ in range(calls_per_caller):
            start = time.perf_counter()
            fn(image)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(callers)]
    start, cpu_start = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    lat = np.asarray(latencies) * 1e3
    # CPU time of the whole process (every thread) per call: what a call costs whatever else shares the cores
    return {"median_ms": float(np.median(lat)), "p90_ms": float(np.percentile(lat, 90)),
            "images_per_s": len(lat) / wall, "calls": len(lat), "cpu_ms_per_call": 1e3 * cpu / len(lat)}


def run_worker(args) -> None:
    images = dict(np.load(args.images))
    plan = json.loads(args.plan)
    result: dict = {"engine": args.worker, "timings": {}}
    if args.worker == "torch":
        import torch

        from mgca.checkpoint import load_model
        from mgca.inference import InferenceConfig, SegmentationPredictor

        model, _ = load_model(args.checkpoint)
        with np.load(Path(args.bundle) / "text_cache.npz") as cache:
            embeddings, names = cache["embeddings"], [str(n) for n in cache["class_names"]]
        predictor = SegmentationPredictor(model, InferenceConfig())
        predictor.set_class_embeddings(torch.from_numpy(embeddings), names)
        fn = predictor.predict
        result["describe"] = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    else:
        from runtime import Segmenter

        start = time.perf_counter()
        segmenter = Segmenter(args.bundle, backend=args.backend, device="cpu", precision=args.precision,
                              assignment=args.assignment)
        result["construct_s"] = time.perf_counter() - start
        fn = lambda image: segmenter.segment(image).labels
        result["describe"] = segmenter.describe()
        assert "torch" not in sys.modules, "the runtime imported torch"
        if args.construct_only:
            Path(args.out).write_text(json.dumps(result))
            return
    labels = {}
    for key, image in images.items():
        start = time.perf_counter()
        labels[key] = fn(image)  # warm-up (thread pools, allocator, shape-specialised kernels)
        result.setdefault("first_call_ms", {})[key] = 1e3 * (time.perf_counter() - start)
        for callers, calls in plan[key]:
            reset_peak_rss()
            result["timings"][f"{key}/{callers}"] = time_calls(fn, image, callers, calls)
            result["timings"][f"{key}/{callers}"]["peak_rss_mib"] = peak_rss_mib()
        if args.worker == "runtime":
            result.setdefault("windows", {})[key] = len(segmenter._prepare(image, "rgb").boxes)
    if args.worker == "runtime" and args.assign_bench:
        result["assign"] = assignment_benchmark(segmenter, images)
    np.savez_compressed(Path(args.out).with_suffix(".npz"), **labels)
    result["peak_rss_mib"] = peak_rss_mib()
    result["torch_imported"] = "torch" in sys.modules
    Path(args.out).write_text(json.dumps(result))


def assignment_benchmark(segmenter, images) -> list[dict]:
    """FAISS vs numpy meta-point assignment on real stitched maps and on larger synthetic ones."""
    from runtime.contract import meta_point_indices
    from runtime.units import assign_faiss, assign_numpy

    def best_of(fn, *fn_args, repeats=7):
        fn(*fn_args)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*fn_args)
            samples.append(time.perf_counter() - start)
        return float(np.median(samples)) * 1e3

    rows = []
    cases = []
    for key, image in images.items():
        emb = segmenter.embed(image)
        channels, height, width = emb.shape
        cases.append((f"{key} map {height}x{width}", np.ascontiguousarray(emb.reshape(channels, -1).T), height, width,
                      36))
    rng = np.random.default_rng(0)
    for pixels, channels, units in ((6272, 512, 36), (6272, 512, 1024), (100_000, 512, 36), (100_000, 512, 256)):
        x = rng.standard_normal((pixels, channels), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        cases.append((f"random {pixels} px", x, pixels // 100, 100, units))
    for name, x, height, width, units in cases:
        points = np.ascontiguousarray(x[meta_point_indices(height, width, units)])
        same = bool(np.array_equal(assign_numpy(x, points), assign_faiss(x, points)))
        rows.append({"case": name, "pixels": x.shape[0], "channels": x.shape[1], "units": units,
                     "numpy_ms": best_of(assign_numpy, x, points), "faiss_ms": best_of(assign_faiss, x, points),
                     "identical": same})
    return rows


# ---------------------------------------------------------------------------------------------- setup (torch side)
def make_checkpoint(arch: str, out: Path, clip_weights: str | None = None, decoder: str = "gated_conv") -> Path:
    """A decoder checkpoint (gates opened) on `arch` with random-init CLIP weights, or on `clip_weights`; decoder
    "none" gives the frozen-feature model."""
    import torch

    from mgca.checkpoint import save_checkpoint
    from mgca.config import Config, config_to_dict
    from mgca.model import build_model

    torch.manual_seed(0)
    cfg = Config()
    cfg.backbone.arch = arch
    cfg.backbone.checkpoint = clip_weights
    cfg.decoder.kind = decoder
    model = build_model(cfg.backbone, cfg.decoder)
    with torch.no_grad():  # open the gates so the decoder is not the identity it starts as
        for name, param in model.decoder.named_parameters():
            if name.endswith("gate"):
                param.fill_(0.5)
    return save_checkpoint(out, {"config": config_to_dict(cfg), "backbone": model.backbone.identity.to_dict(),
                                 "decoder": model.decoder.state_dict()})


def make_bundle(checkpoint: Path, out: Path, int8: bool, fast: bool, extra: tuple[str, ...] = ()) -> Path:
    """The bundle, written by `mgca-export` (by default window 448, stride 224, short side 448, 36 units; `extra`
    flags change them)."""
    vocab = out.parent / f"{out.name}-vocab.txt"
    vocab.write_text("\n".join(CITYSCAPES) + "\n")
    cmd = [sys.executable, "-m", "export.cli", "--checkpoint", str(checkpoint), "--out", str(out), "--vocab",
           str(vocab), *extra]
    cmd += ["--int8"] if int8 else []
    cmd += ["--calib-limit", "8", "--parity-windows", "2"] if fast else []  # ViT-B on 2 cores: 16 calibration windows
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        raise SystemExit(f"mgca-export failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return out


# ---------------------------------------------------------------------------------------------- floor
def window_gflop(checkpoint: Path, window: int, backbone_only: bool = False) -> float:
    """GEMM/conv FLOPs of one window through the exported graph's computation (torch's FLOP counter); with
    `backbone_only`, of the CLIP tower's dense features alone (without the decoder)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mgca.checkpoint import load_model

    model, _ = load_model(checkpoint)
    run = model.eval().backbone.dense_features if backbone_only else model.eval().pixel_embeddings
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run(torch.zeros(1, 3, window, window))
    return counter.get_total_flops() / 1e9


def gemm_rate(kind: str, m: int = 1570, k: int = 768, n: int = 3072, repeats: int = 5) -> float:
    """G(FL)OP/s of onnxruntime's CPU GEMM here, the MLP's shape (2 windows of 785 tokens): "fp32" MatMul,
    "s8s8" / "u8s8" QLinearMatMul (int8 weights; int8 or uint8 activations). A bare S8S8 QLinearMatMul ran at a
    tenth of U8S8's rate here (AVX-512 without VNNI), while the QDQ graph's QLinearMatMuls ran near U8S8's: the
    floor uses U8S8."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if kind == "fp32":
        a = rng.standard_normal((m, k), dtype=np.float32)
        weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w")
        node = helper.make_node("MatMul", ["a", "w"], ["y"])
        inits, in_type, out_type = [weight], TensorProto.FLOAT, TensorProto.FLOAT
    else:
        act = np.int8 if kind == "s8s8" else np.uint8
        a = rng.integers(-100 if act is np.int8 else 0, 100, (m, k)).astype(act)
        inits = [numpy_helper.from_array(rng.integers(-100, 100, (k, n)).astype(np.int8), "w"),
                 numpy_helper.from_array(np.array(0.02, np.float32), "sa"),
                 numpy_helper.from_array(np.array(0, act), "za"),
                 numpy_helper.from_array(np.array(0.01, np.float32), "sw"),
                 numpy_helper.from_array(np.array(0, np.int8), "zw"),
                 numpy_helper.from_array(np.array(0.5, np.float32), "sy"),
                 numpy_helper.from_array(np.array(0, act), "zy")]
        node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "w", "sw", "zw", "sy", "zy"], ["y"])
        in_type = out_type = TensorProto.INT8 if act is np.int8 else TensorProto.UINT8
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", in_type, [m, k])],
                              [helper.make_tensor_value_info("y", out_type, [m, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    onnx.checker.check_model(model)
    session.run(None, {"a": a})
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"a": a})
        samples.append(time.perf_counter() - start)
    return 2 * m * k * n / float(np.median(samples)) / 1e9


def openvino_gemm_rate(precision: str, m: int = 1570, k: int = 768, n: int = 3072, repeats: int = 5) -> float | None:
    """G(FL)OP/s of OpenVINO's CPU MatMul at `precision` ("bf16"), the MLP's shape; None without OpenVINO or
    without native bf16 (the bf16 floor then is not shown)."""
    from runtime.openvino_engine import cpu_capabilities

    if "BF16" not in cpu_capabilities():
        return None
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    param = ops.parameter([m, k], np.float32, name="a")
    weight = ops.constant(rng.standard_normal((k, n), dtype=np.float32))
    model = ov.Model([ops.matmul(param, weight, False, False)], [param])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                      "PERFORMANCE_HINT": "LATENCY"})
    request, a = compiled.create_infer_request(), rng.standard_normal((m, k), dtype=np.float32)
    request.infer({0: a})
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer({0: a})
        samples.append(time.perf_counter() - start)
    return 2 * m * k * n / float(np.median(samples)) / 1e9


def floor_ms_per_window(checkpoint: Path, window: int) -> dict[str, float]:
    """The least time one window could take here: its FLOPs at the measured GEMM rate (all of them GEMM-bound)."""
    gflop = window_gflop(checkpoint, window)
    rates = {kind: gemm_rate(kind) for kind in ("fp32", "u8s8")}
    bf16 = openvino_gemm_rate("bf16") if openvino_precisions(False) else None
    return {"gflop": gflop, "fp32_gflops": rates["fp32"], "int8_gops": rates["u8s8"], "bf16_gflops": bf16 or 0.0,
            "fp32": 1e3 * gflop / rates["fp32"], "int8": 1e3 * gflop / rates["u8s8"],
            "bf16": 1e3 * gflop / bf16 if bf16 else float("nan")}


def openvino_precisions(int8: bool) -> list[str]:
    """The OpenVINO rows this machine can run: fp32, bf16 where native, int8 with an int8 export."""
    from runtime.openvino_engine import cpu_capabilities, openvino_available

    if not openvino_available():
        return []
    return ["fp32", *(["bf16"] if "BF16" in cpu_capabilities() else []), *(["int8"] if int8 else [])]


def summary_lines(results: dict, plan: dict) -> list[str]:
    """Per image size, 1 caller: each reduced-precision engine's speed-up over onnxruntime fp32 and its label
    agreement with it, one line each, in the form a check reads:
    `448x448, 1 caller: openvino bf16 speed-up over onnxruntime fp32 4.31x, labels = fp32 99.62%`."""
    base = results["runtime fp32 ORT"]
    lines = []
    for key in plan:
        for name, res in results.items():
            if not name.startswith("runtime ") or name == "runtime fp32 ORT":
                continue
            precision, engine = name.split()[1:3]
            engine = {"ORT": "onnxruntime", "OpenVINO": "openvino"}[engine]
            speed = base["timings"][f"{key}/1"]["median_ms"] / res["timings"][f"{key}/1"]["median_ms"]
            agree = agreement(res["labels"], base["labels"])[key]
            lines.append(f"{key}, 1 caller: {engine} {precision} speed-up over onnxruntime fp32 {speed:.2f}x, "
                         f"labels = fp32 {100 * agree:.2f}%")
    return lines


def cache_check(bundle: Path, images: Path, work: Path) -> str:
    """OpenVINO's compiled-model cache across processes: construct a bf16 (else fp32) Segmenter twice in fresh
    processes with $MGCA_OPENVINO_CACHE on an empty folder; the second loads the cached blob."""
    precision = "bf16" if "bf16" in openvino_precisions(False) else "fp32"
    cache = work / "ov-cache"
    import shutil

    shutil.rmtree(cache, ignore_errors=True)
    times = []
    for run in (1, 2):
        out = work / f"construct-{run}.json"
        res = spawn("runtime", bundle, images, {}, out, backend="openvino", precision=precision, construct_only=True,
                    env={"MGCA_OPENVINO_CACHE": str(cache)})
        times.append(res["construct_s"])
    return (f"OpenVINO {precision} compiled-model cache ($MGCA_OPENVINO_CACHE): Segmenter construction "
            f"{times[0]:.2f} s in a first process (compiles, writes the cache), {times[1]:.2f} s in a second "
            f"(loads it)")


# ---------------------------------------------------------------------------------------------- main
def spawn(worker: str, bundle: Path, images: Path, plan: dict, out: Path, env: dict | None = None, **extra) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, "--bundle", str(bundle), "--images",
           str(images),
           "--plan", json.dumps(plan), "--out", str(out)]
    for key, value in extra.items():
        if value is True:
            cmd.append(f"--{key.replace('_', '-')}")
        elif value not in (None, False):
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"worker {worker} {extra} failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def agreement(a: Path, b: Path) -> dict[str, float]:
    with np.load(a) as x, np.load(b) as y:
        return {k: float((x[k] == y[k]).mean()) for k in x.files}


def fmt_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def bench_model(label: str, arch: str, work: Path, plan: dict, int8: bool, assign_bench: bool) -> str:
    t0 = time.time()
    images = blocky_images()
    image_path = work / f"{label}-images.npz"
    np.savez(image_path, **{k: v for k, v in images.items() if k in plan})
    checkpoint, bundle = work / f"{label}.pt", work / f"{label}-bundle"
    if not (checkpoint.is_file() and (bundle / "manifest.json").is_file()):  # --work DIR: made once, then reused
        make_checkpoint(arch, checkpoint)
        make_bundle(checkpoint, bundle, int8, fast=arch != "mgca-tiny")
    setup_s = time.time() - t0
    engines = [("PyTorch eager", "torch", {"checkpoint": checkpoint})]
    engines.append(("runtime fp32 ORT", "runtime", {"backend": "onnxruntime", "precision": "fp32",
                                                    "assign_bench": assign_bench}))
    if int8:
        engines.append(("runtime int8 ORT", "runtime", {"backend": "onnxruntime", "precision": "int8"}))
    for precision in openvino_precisions(int8):
        engines.append((f"runtime {precision} OpenVINO", "runtime", {"backend": "openvino", "precision": precision}))
    results = {}
    for name, worker, extra in engines:
        out = work / f"{label}-{worker}-{extra.get('backend', 'torch')}-{extra.get('precision', 'eager')}.json"
        results[name] = spawn(worker, bundle, image_path, plan, out, **extra)
        results[name]["labels"] = out.with_suffix(".npz")
    torch_res = results["PyTorch eager"]
    floors = floor_ms_per_window(checkpoint, results["runtime fp32 ORT"]["describe"]["window"])
    windows = results["runtime fp32 ORT"]["windows"]
    rows = []
    for key in plan:
        megapixels = np.prod([int(v) for v in key.split("x")]) / 1e6
        for callers, _ in plan[key]:
            for name in results:
                t = results[name]["timings"][f"{key}/{callers}"]
                ref = torch_res["timings"][f"{key}/{callers}"]
                agree = agreement(results[name]["labels"], torch_res["labels"])[key]
                floor = floors["int8" if "int8" in name else "bf16" if "bf16" in name else "fp32"] * windows[key]
                rows.append([key, str(windows[key]), str(callers), name, f"{t['median_ms']:.0f}", f"{t['p90_ms']:.0f}",
                             f"{t['images_per_s']:.2f}", f"{t['median_ms'] / ref['median_ms']:.2f}x",
                             f"{t['median_ms'] / megapixels:.0f}",
                             f"{t['median_ms'] / floor:.2f}x" if callers == 1 else "",
                             f"{t['peak_rss_mib']:.0f}", f"{100 * agree:.2f}%"])
    lines = [f"## {label}: {arch}, random-init weights (bundle by mgca-export; checkpoint + export {setup_s:.0f} s)"]
    fp32 = results["runtime fp32 ORT"]["describe"]
    lines.append(f"runtime: provider {fp32['provider']}, window {fp32['window']}/{fp32['stride']}, units "
                 f"{fp32['units']}, one engine run at a time ({fp32.get('concurrent_runs')}), "
                 f"assignment {fp32['assignment']} ({fp32['assignment_reason']})")
    lines.append(f"floor per {fp32['window']} window: {floors['gflop']:.0f} GFLOP (torch FLOP counter) at the measured "
                 f"GEMM rate of onnxruntime here, fp32 {floors['fp32_gflops']:.0f} GFLOP/s -> {floors['fp32']:.0f} ms, "
                 f"int8 {floors['int8_gops']:.0f} GOP/s -> {floors['int8']:.0f} ms (QLinearMatMul U8S8, MLAS's x86 "
                 f"int8 kernel; GEMM shape 1570 x 768 x 3072; int8 / fp32 GEMM rate "
                 f"{floors['int8_gops'] / floors['fp32_gflops']:.2f}x)"
                 + (f"; bf16 {floors['bf16_gflops']:.0f} GFLOP/s (OpenVINO MatMul) -> {floors['bf16']:.0f} ms"
                    if floors["bf16_gflops"] else ""))
    lines.append(fmt_table(rows, ["image", "windows", "callers", "engine", "median ms", "p90 ms", "img/s",
                                  "latency / torch", "ms / MP", "x floor", "peak RSS MiB", "labels = torch"]))
    lines.extend(summary_lines(results, plan))
    lines.append("first call (compile, shape-specialised kernels) and construction: " + "; ".join(
        f"{name} construct {res['construct_s']:.1f} s, first {min(plan, key=len)} call "
        f"{res['first_call_ms'][min(plan, key=len)]:.0f} ms" for name, res in results.items() if "construct_s" in res))
    if openvino_precisions(False):
        lines.append(cache_check(bundle, image_path, work))
    lines.append("peak RSS: of each engine's process during that row alone (VmHWM reset before it); torch never "
                 "imported by the runtime processes: "
                 + ", ".join(f"{name} {'yes' if not res['torch_imported'] else 'NO'}" for name, res in results.items()
                             if name != "PyTorch eager"))
    if assign_bench and "assign" in results["runtime fp32 ORT"]:
        arows = [[r["case"], str(r["pixels"]), str(r["channels"]), str(r["units"]), f"{r['numpy_ms']:.2f}",
                  f"{r['faiss_ms']:.2f}",
                  f"{r['faiss_ms'] / r['numpy_ms']:.2f}x", "yes" if r["identical"] else "NO"]
                 for r in results["runtime fp32 ORT"]["assign"]]
        lines.append("meta-point assignment, FAISS (IndexFlatIP, top-2) vs numpy (matmul + argmax), both with the "
                     "exact tie check:")
        lines.append(fmt_table(arows,
                               ["case", "pixels", "dims", "units", "numpy ms", "faiss ms", "faiss / numpy",
                                "same labels"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--no-vit-b16", action="store_true",
                        help="skip ViT-B-16 random-init (export + timing: ~8 of the ~12 minutes)")
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny model")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--work", help="keep bundles and results here and reuse the bundles on the next run "
                        "(default: a temporary folder)")
    # worker mode (internal)
    parser.add_argument("--worker", choices=["runtime", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="onnxruntime", help=argparse.SUPPRESS)
    parser.add_argument("--construct-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--assignment", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--assign-bench", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    start = time.time()
    scale = 0.5 if args.quick else 1.0
    n = lambda k: max(1, int(round(k * scale)))
    plan = {"448x448": [(1, n(20)), (8, n(5))], "1024x2048": [(1, n(8)), (8, n(2))], "4096x4096": [(1, n(4))]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"# runtime benchmark ({os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start)\n",
              flush=True)
        if not args.no_tiny:
            print(bench_model("tiny", "mgca-tiny", work, plan, not args.no_int8, assign_bench=True), flush=True)
            print()
        if not args.no_vit_b16:  # ~1.5 s per 448 window on 2 cores: fewer calls, same sizes and callers
            vit_plan = {"448x448": [(1, n(4))], "1024x2048": [(1, n(2)), (8, 1)], "4096x4096": [(1, n(2))]}
            print(bench_model("vit-b16", "ViT-B-16", work, vit_plan, not args.no_int8, assign_bench=False), flush=True)
    print(f"\ntotal {time.time() - start:.0f} s; load average {os.getloadavg()[0]:.1f} at end (other processes "
          "share these cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
