"""Which torch device a run uses: one rule for training, evaluation and segmentation, and a one-line error for a
device this machine does not have (torch raises a bare RuntimeError: unknown type, no driver, no such index)."""
from __future__ import annotations

import torch

from runtime.errors import MgcaError

SUPPORTED = ("cpu", "cuda", "mps")


class DeviceError(MgcaError, ValueError):
    """The requested device does not exist or is not available on this machine."""


def _available(device: torch.device) -> str | None:
    """None when `device` can be used here, else why not."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible here (no driver, no GPU, or a CPU-only torch build)"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
    elif device.type == "mps" and not torch.backends.mps.is_available():
        return "Apple's MPS is not available here"
    elif device.type not in SUPPORTED:
        return f"mgca runs on {', '.join(SUPPORTED)}"
    return None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" picks CUDA when present, else the CPU; anything else must name a device this machine has."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).split(":")[0] in ("tpu", "xla"):
        raise DeviceError(f"device {str(device)!r}: TPUs (torch_xla) are not supported; use auto, cpu or cuda")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"device {str(device)!r} is not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    why = _available(resolved)
    if why:
        raise DeviceError(f"device {str(device)!r} cannot be used: {why}; use auto (CUDA when present, else the CPU) "
                          "or cpu")
    return resolved


def cpu_computes_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (avx512_bf16 or AMX), as OpenVINO reports it (the runtime's
    `auto` engine rule asks the same). Without it torch's bf16 matmuls fall back to a reference kernel: measured
    ~10x slower than fp32 on an AMD EPYC whose hypervisor exposes AVX2 only, so `auto` must not pick bf16 there."""
    from runtime.openvino_engine import cpu_capabilities

    return "BF16" in cpu_capabilities()


def resolve_precision_name(precision: str, device: torch.device) -> str:
    """"auto" -> "bf16" where the device computes bf16 natively (a CUDA GPU that supports it, a CPU with
    avx512_bf16 or AMX), else "fp32"; any other name is returned as it is."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_computes_bf16() else "fp32"
