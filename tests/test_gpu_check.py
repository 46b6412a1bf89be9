"""benchmarks/gpu_check.sh --dry-run: the GPU check's CPU form runs its code paths end to end, so it cannot rot
before a session with a GPU runs it. No timing is asserted: only that every row ran or says why it did not."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import REPO, subprocess_env


@pytest.mark.slow
def test_gpu_check_dry_run_prints_both_tables():
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env=subprocess_env(PYTHON=sys.executable, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "## training step, mgca-tiny" in out and "## PyTorch inference per 64x64 window" in out
    train = [line for line in out.splitlines() if re.match(r"\| \d+ \| \d+ \| (bf16|fp32) \|", line)]
    measured = [line for line in train if "skipped" not in line]
    # bf16 and fp32 at one micro-batch, and the global batch through the gradient cache, each with a share
    assert {line.split("|")[3].strip() for line in measured} == {"bf16", "fp32"}
    assert any(line.split("|")[1].strip() != line.split("|")[2].strip() for line in measured), train
    assert all(re.search(r"\| \d+\.\d% \|$", line) for line in measured), measured
    # compile rows say why they did not run on CPU; CUDA-graph rows likewise
    assert all("torch.compile in the CPU dry-run" in line for line in train if "skipped" in line)
    infer = [line for line in out.splitlines() if re.match(r"\| (fp32|bf16|fp16) \| \d+ \| (yes|no) \|", line)]
    assert any(" no |" in line and "skipped" not in line for line in infer)
    assert all("CUDA graphs need a CUDA device" in line for line in infer if "| yes |" in line)
    assert "gpu_check: done" in out


def test_gpu_check_without_cuda_refuses_the_gpu_run_in_one_line():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the full check would run")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--skip-train", "--skip-infer"],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=subprocess_env(OMP_NUM_THREADS="1"))
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr
    assert "Traceback" not in proc.stderr
