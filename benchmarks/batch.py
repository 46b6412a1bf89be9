"""Folder segmentation throughput: the single-process loop against Ray Data with 1 and 2 Segmenter actors.

    python benchmarks/batch.py                         # ViT-B-16 random init, 16 Flickr8k photos (~6 min, 2 cores)
    python benchmarks/batch.py --arch mgca-tiny --images 32   # the tiny model (seconds)

Every configuration segments the same images from the same bundle into its own output folder through the same
per-image code (`runtime.batch.segment_file`): read, segment, write the label PNG, log the summary row. The
single-process loop runs `mgca-segment`'s local path (one Segmenter, onnxruntime's default threads, and capped at
one thread); the Ray runs go through `runtime.batch.run_ray` on a local Ray started once before the timings
(`ray.init(num_cpus=...)`), each actor holding one Segmenter capped at its CPUs. Times are wall clock for the
whole job, actor start-up and bundle loading included; labels are checked identical across configurations.
Paper defaults (short side 448, window 448, stride 224, 36 units), 19 Cityscapes classes. Weights are random:
timings are real, labels are not meaningful.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
FLICKR = REPO.parent / "shared" / "data" / "flickr8k_1k" / "data" / "images"


def _runtime_benchmark():
    """benchmarks/runtime.py (its checkpoint and bundle recipe); loaded by path, its name is the runtime package's."""
    spec = importlib.util.spec_from_file_location("runtime_benchmark", REPO / "benchmarks" / "runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def input_images(folder: Path, count: int) -> Path:
    """`count` photos: Flickr8k's when this machine has them, else blocky noise at 500 x 375."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted(FLICKR.glob("*.jpg"))[:count] if FLICKR.is_dir() else []
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    if not photos:
        from PIL import Image

        rng = np.random.default_rng(0)
        for index in range(count):
            small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(np.repeat(np.repeat(small, 16, 0), 16, 1)[:375, :500]).save(folder / f"{index:03d}.jpg")
    return folder


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16", help="CLIP architecture of the random-init model")
    parser.add_argument("--images", type=int, default=16, help="number of images")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs given to the local Ray")
    args = parser.parse_args(argv)

    import ray

    from runtime.batch import BatchOutput, RayOptions, list_tasks, run_local, run_ray
    from runtime.segmenter import Segmenter

    bench = _runtime_benchmark()
    work = Path(tempfile.mkdtemp(prefix="mgca-batch-"))
    print(f"load before: {uptime()}", flush=True)
    checkpoint = bench.make_checkpoint(args.arch, work / "model.pt")
    bundle = bench.make_bundle(checkpoint, work / "bundle", int8=False, fast=True)
    images = input_images(work / "images", args.images)
    tasks = list_tasks([str(images)])
    classes = list(bench.CITYSCAPES)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}})

    def local(threads: int | None):
        segmenter = Segmenter(bundle, backend="onnxruntime", device="cpu", num_threads=threads)

        def job(output: BatchOutput):
            run_local(tasks, lambda image: segmenter.segment(image, classes).labels, output, progress=False)
        return job

    def on_ray(actors: int, cpus: float):
        def job(output: BatchOutput):
            run_ray(tasks, str(bundle), {"backend": "onnxruntime", "device": "cpu"}, classes, None, output,
                    RayOptions(actors=actors, num_cpus=cpus), progress=False)
        return job

    configs = [("single process, onnxruntime default threads", local(None)),
               ("single process, 1 thread", local(1)),
               ("Ray Data, 1 actor x 1 CPU", on_ray(1, 1)),
               ("Ray Data, 2 actors x 1 CPU", on_ray(2, 1)),
               ("Ray Data, 1 actor x 2 CPUs", on_ray(1, 2))]
    rows, reference = [], None
    for name, job in configs:
        out = work / f"out-{len(rows)}"
        start = time.perf_counter()
        job(BatchOutput(out, tuple(classes)))
        seconds = time.perf_counter() - start
        labels = {p.name: p.read_bytes() for p in sorted((out / "labels").rglob("*.png"))}
        reference = reference or labels
        rows.append((name, seconds, len(labels), labels == reference))
        print(f"{name}: {seconds:.1f} s", flush=True)
    ray.shutdown()

    base = rows[0][1]
    print(f"\n{args.arch} random init, {len(tasks)} images ({'Flickr8k' if FLICKR.is_dir() else 'synthetic'}), "
          f"{os.cpu_count()} cores on the machine, Ray given {args.cpus} CPUs")
    print("| configuration | seconds | images/s | vs single process | labels identical |")
    print("|---|---|---|---|---|")
    for name, seconds, count, same in rows:
        print(f"| {name} | {seconds:.1f} | {count / seconds:.2f} | {base / seconds:.2f}x | {'yes' if same else 'NO'} |")
    print(f"load after: {uptime()}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
