#!/usr/bin/env bash
# The first thing a session with an NVIDIA GPU runs: training throughput (bf16 autocast and torch.compile on/off,
# micro-batch 256 and global batch 1024 through the gradient cache), the share of a step outside the frozen CLIP,
# and PyTorch fp16/bf16 inference per 448 window with and without CUDA graphs. ViT-B/16, random init. Fits in
# 8 minutes on an H200 (rows past a 390 s budget are skipped and say so).
#
#   benchmarks/gpu_check.sh --fetch-wheels   # here, with a package registry: the wheels the GPU image lacks -> .whl/
#   benchmarks/gpu_check.sh                  # there: installs .whl/*.whl into /tmp/mgca-site if needed, runs
#   benchmarks/gpu_check.sh --dry-run        # CPU, tiny model and sizes, same code paths (tests/test_gpu_check.py)
#
# The GPU image has torch (CUDA), torchvision, timm, huggingface_hub, safetensors, regex, opencv, pyyaml, tqdm,
# onnx and onnxruntime; of the project's training dependencies it lacks open_clip and ftfy (+ wcwidth). With the
# device tool: carry [".whl"] and run `bash benchmarks/gpu_check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.2.13)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    grep -qxF '/.whl/' .gitignore 2>/dev/null || echo "note: add /.whl/ to .gitignore or .git/info/exclude" >&2
    exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "${WHEELS[@]}"
fi

missing=$("$PY" -c 'import importlib.util as u; print(" ".join(m for m in ("open_clip", "ftfy") if u.find_spec(m) is None))')
if [[ -n "$missing" ]]; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        echo "gpu_check: installing carried wheels for: $missing" >&2
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mgca-site \
            .whl/*.whl
        export PYTHONPATH="/tmp/mgca-site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check: missing python packages ($missing) and no .whl/ folder; run $0 --fetch-wheels first" >&2
        exit 2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
