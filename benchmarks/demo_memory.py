"""Peak memory of `mgca-demo` answering one request for a thin image (default 250000 x 4 px, 1 MP): the server's
peak RSS (Linux VmHWM, /proc) read before and after one request sent through Gradio's own client, so the figure
is the whole server's, Gradio's file handling included.

    python -m benchmarks.demo_memory BUNDLE [--height 250000 --width 4]

Linux only (it reads /proc). docs/reliability.md ("The demo page") has the figures before and after the O(pixels)
upsampling of runtime/postprocess.py.
"""
from __future__ import annotations

import argparse
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def peak_rss_gb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1e6
    raise RuntimeError("no VmHWM in /proc: this measure needs Linux")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--height", type=int, default=250_000)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--classes", default="cat, sky, road", help="classes of the bundle's vocabulary")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    from runtime.bundle import load_bundle

    folder = Path(tempfile.mkdtemp(prefix="demo-memory-"))
    image = folder / "thin.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (args.height, args.width, 3), dtype=np.uint8)).save(image)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = folder / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "mgca.cli.demo", "--engine", args.bundle, "--port", str(port),
                                   "--device", "cpu"], stdout=out, stderr=subprocess.STDOUT)
    try:
        while "mgca-demo: serving" not in log.read_text():
            if server.poll() is not None:
                raise SystemExit(f"mgca-demo exited: {log.read_text()[-2000:]}")
            time.sleep(1)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        before = peak_rss_gb(server.pid)
        start = time.perf_counter()
        settings = load_bundle(args.bundle).inference  # the page's defaults: the manifest's, auto's engine
        answer = client.predict(handle_file(str(image)), args.classes, None, settings.units, settings.pamr,
                                settings.bg_rule, False, 0.5, api_name="/segment")
        seconds = time.perf_counter() - start
        print(f"{platform.processor() or platform.machine()}; {args.height} x {args.width} PNG")
        print(f"status: {answer[1]}")
        print(f"server peak RSS: {before:.2f} GB before the request, {peak_rss_gb(server.pid):.2f} GB after; "
              f"request {seconds:.1f} s")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
