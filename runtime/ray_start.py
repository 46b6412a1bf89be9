"""Starting (or joining) Ray for `mgca-segment --ray`: its options checked before any work, and what Ray raises while
it starts (no cluster at `auto`, no client package for `ray://`, an unwritable session folder, more GPUs per actor
than the cluster has, which would wait forever) turned into one line that says what to do."""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

from .errors import MgcaError, one_line


class RayStartError(MgcaError, RuntimeError):
    """Ray cannot start or join a cluster as asked, or the actors cannot fit in it."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: `address` None/"local" starts Ray here, "auto" joins the running cluster, "ray://..."
    connects a client; `actors` Segmenters (default: one per CPU Ray has, over `num_cpus`), each with `num_cpus`
    cores (its thread cap) and `num_gpus` GPUs. Checked when made."""

    address: str | None = None
    actors: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 4

    def __post_init__(self):
        if not (isinstance(self.num_cpus, (int, float)) and math.isfinite(self.num_cpus) and self.num_cpus > 0):
            raise RayStartError(f"--actor-cpus must be a positive number of CPUs, got {self.num_cpus}")
        if not (isinstance(self.num_gpus, (int, float)) and math.isfinite(self.num_gpus) and self.num_gpus >= 0):
            raise RayStartError(f"--actor-gpus must be 0 or a positive number of GPUs, got {self.num_gpus}")


def start_ray(ray, options: RayOptions) -> None:
    """`ray.init` as `options` ask (unless Ray already runs in this process), then the GPU check."""
    address = None if options.address in (None, "local") else options.address
    if not ray.is_initialized():
        if address and address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
            raise RayStartError(f"--ray {address} connects as a Ray client, which needs pip install 'ray[client]'")
        try:
            ray.init(address=address, log_to_driver=False, include_dashboard=False)
        except ConnectionError as err:
            hint = ("start one with `ray start --head`, or pass --ray alone to start Ray for this run"
                    if address == "auto" else "check the address and that the cluster is up")
            raise RayStartError(f"--ray {address}: no Ray cluster answered ({one_line(err)[:160]}); {hint}") from None
        except OSError as err:
            raise RayStartError(f"Ray cannot write its session files ({err.strerror or err}: {err.filename}); make "
                                "that folder writable, or point RAY_TMPDIR and HOME at writable folders") from None
    if options.num_gpus > 0:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        if gpus < options.num_gpus:
            raise RayStartError(f"--actor-gpus {options.num_gpus:g}: the Ray cluster has {gpus:g} GPUs, so no actor "
                                "could ever start; use --actor-gpus 0 for CPU bundles, or join a cluster with GPUs")


__all__ = ["RayOptions", "RayStartError", "start_ray"]
