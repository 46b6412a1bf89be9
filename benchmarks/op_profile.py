"""Where a window's time goes: onnxruntime's profile per op type for a bundle's fp32 and int8 graphs, side by side.

    python benchmarks/op_profile.py BUNDLE                    # model.onnx and model.int8.onnx of a bundle
    python benchmarks/op_profile.py a.onnx b.onnx --runs 3    # any graphs taking N x 3 x win x win
    python benchmarks/op_profile.py BUNDLE --engine openvino --batch 2   # OpenVINO's per-layer counters

Each graph runs one window (batch 1) under the runtime's session settings (all graph optimisations, no
spin-waiting, no memory pattern), one warm-up then `--runs` profiled runs, the graphs taking turns so
background load hits them alike. Kernel times are summed per op type (as onnxruntime names the kernels that
ran after its fusions: QLinearMatMul is a quantised MatMul, FusedMatMul a MatMul with a folded transpose/scale).
With `--engine openvino` the same graphs are compiled as the runtime compiles them (latency hint; the QDQ graph
runs int8) with OpenVINO's performance counters, summed per executed layer type of its CPU plugin.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def session(path: Path, profile_dir: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(profile_dir, path.stem)
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def op_times(profile: str, runs: int) -> tuple[dict[str, float], dict[str, int]]:
    """ms per run and node count per op type, from the profiled runs after the first (warm-up) one."""
    events = json.loads(Path(profile).read_text())
    model_runs = [e for e in events if e.get("name") == "model_run"]
    after_warmup = model_runs[0]["ts"] + model_runs[0]["dur"]
    ms: dict[str, float] = collections.Counter()
    count: dict[str, int] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] > after_warmup:
            op = event["args"]["op_name"]
            ms[op] += event["dur"] / 1e3 / runs
            count[op] += 1
    return dict(ms), {op: n // runs for op, n in count.items()}


class OpenVinoProfile:
    """One graph compiled by OpenVINO with per-layer counters, called like an onnxruntime session; the first call
    is the warm-up and is not counted."""

    def __init__(self, path: Path):
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True})
        self.request = self.compiled.create_infer_request()
        self.ms: dict[str, float] = collections.Counter()
        self.count: dict[str, int] = collections.Counter()
        self.calls = 0

    def get_inputs(self) -> list:
        port = self.compiled.input(0)
        shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        return [argparse.Namespace(name=port.get_any_name(), shape=shape)]

    def run(self, _outputs, feed: dict) -> None:
        self.request.infer(feed)
        self.calls += 1
        if self.calls > 1:
            for info in self.request.profiling_info:
                if info.status == info.Status.EXECUTED:
                    self.ms[info.node_type] += info.real_time.total_seconds() * 1e3
                    self.count[info.node_type] += 1

    def times(self) -> tuple[dict[str, float], dict[str, int]]:
        """ms per call and layers per call, per executed layer type."""
        counted = max(1, self.calls - 1)
        return {op: ms / counted for op, ms in self.ms.items()}, {op: n // counted for op, n in self.count.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="a bundle folder, or ONNX files")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--top", type=int, default=14)
    parser.add_argument("--engine", choices=["onnxruntime", "openvino"], default="onnxruntime")
    parser.add_argument("--batch", type=int, default=1, help="windows per call (a 640x480 frame at 224 is 2)")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.paths]
    if len(paths) == 1 and paths[0].is_dir():
        paths = [p for p in (paths[0] / "model.onnx", paths[0] / "model.int8.onnx") if p.is_file()]
    print(f"# {args.engine} op profile, {args.batch} window(s) per call, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {p.name: session(p, tmp) if args.engine == "onnxruntime" else OpenVinoProfile(p) for p in paths}
        wall: dict[str, list[float]] = {name: [] for name in sessions}
        feeds = {}
        for name, sess in sessions.items():
            shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
            shape[0] = args.batch
            feeds[name] = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape, np.float32)}
            sess.run(None, feeds[name])  # warm-up
        for _ in range(args.runs):
            for name, sess in sessions.items():
                start = time.perf_counter()
                sess.run(None, feeds[name])
                wall[name].append(time.perf_counter() - start)
        results = {name: op_times(sess.end_profiling(), args.runs) if args.engine == "onnxruntime"
                   else sess.times() for name, sess in sessions.items()}
    names = list(results)
    ops = sorted({op for ms, _ in results.values() for op in ms}, key=lambda op: -max(r[0].get(op, 0.0)
                                                                                      for r in results.values()))
    header = "| op type | " + " | ".join(f"{n} ms (nodes)" for n in names) + " |"
    print(header + "\n|" + "---|" * (len(names) + 1))
    for op in ops[:args.top]:
        cells = [f"{r[0][op]:.0f} ({r[1][op]})" if op in r[0] else "" for r in results.values()]
        print(f"| {op} | " + " | ".join(cells) + " |")
    rest = [sum(ms for op, ms in r[0].items() if op not in ops[:args.top]) for r in results.values()]
    print("| other | " + " | ".join(f"{ms:.0f}" for ms in rest) + " |")
    print("| **kernels** | " + " | ".join(f"**{sum(r[0].values()):.0f}**" for r in results.values()) + " |")
    print("| wall per run | " + " | ".join(f"{1e3 * float(np.median(wall[n])):.0f}" for n in names) + " |")
    if len(names) == 2:
        a, b = (float(np.median(wall[n])) for n in names)
        print(f"\n{names[1]} is {a / b:.2f}x faster than {names[0]} (median wall, runs interleaved); load average "
              f"{os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
