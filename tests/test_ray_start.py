"""runtime/ray_start.py and `mgca-segment --ray`: Ray's setup errors are one line, before the model loads."""
from __future__ import annotations

import importlib.util

import pytest

from .support import one_line_error, photo_folder


@pytest.mark.parametrize("flags, needle", [
    (["--actor-cpus", "-1"], "--actor-cpus must be a positive number of CPUs, got -1.0"),
    (["--actor-cpus", "nan"], "--actor-cpus must be a positive number of CPUs, got nan"),
    (["--actor-gpus", "-1"], "--actor-gpus must be 0 or a positive number of GPUs, got -1.0"),
])
def test_bad_ray_actor_sizes_are_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch, flags, needle):
    from mgca.cli import segment as segment_cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model loaded before the Ray options were checked")

    monkeypatch.setattr(segment_cli, "_predict", must_not_run)
    code = segment_cli.main([str(photo_folder(tmp_path / "photos")), "--classes", "cat,dog", "--engine", str(tmp_path),
                             "--out", str(tmp_path / "out"), "--ray", *flags])
    assert needle in one_line_error(code, capsys.readouterr().err)


def test_ray_auto_without_a_cluster_is_one_line(tmp_path):
    """A real `ray.init(address="auto")` in a fresh process (this one may run Ray already), no cluster running."""
    import os
    import subprocess
    import sys

    pytest.importorskip("ray", reason="Ray is an optional extra (mgca[ray])")
    from .support import REPO

    code = ("import ray; from runtime.ray_start import RayOptions, start_ray\n"
            "try:\n    start_ray(ray, RayOptions('auto'))\nexcept Exception as err:\n"
            "    print(type(err).__name__, err)\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert "RayStartError --ray auto: no Ray cluster answered" in result.stdout, result.stdout + result.stderr
    assert "ray start --head" in result.stdout


class _FakeRay:
    """What start_ray asks of Ray: here a cluster without GPUs, or an init that fails as Ray's does."""

    def __init__(self, init_error: Exception | None = None, initialized: bool = False):
        self.init_error, self.initialized = init_error, initialized

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs):
        raise self.init_error

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0}


def test_ray_start_failures_are_one_line():
    """Without these checks: a raw PermissionError on ~/.ray (read-only HOME), and --actor-gpus 1 on a cluster
    without GPUs waited forever for an actor that could never start."""
    from runtime.ray_start import RayOptions, RayStartError, start_ray

    with pytest.raises(RayStartError, match=r"Ray cannot write its session files \(Permission denied: /h/.ray\)"):
        start_ray(_FakeRay(PermissionError(13, "Permission denied", "/h/.ray")), RayOptions())
    with pytest.raises(RayStartError, match="--actor-gpus 1: the Ray cluster has 0 GPUs, so no actor could ever"):
        start_ray(_FakeRay(initialized=True), RayOptions(num_gpus=1))
    start_ray(_FakeRay(initialized=True), RayOptions(num_gpus=0))  # CPU actors fit


@pytest.mark.skipif(importlib.util.find_spec("grpc") is not None, reason="ray[client] (grpc) is installed here")
def test_ray_client_address_without_the_client_package_is_one_line():
    from runtime.ray_start import RayOptions, RayStartError, start_ray

    with pytest.raises(RayStartError, match=r"--ray ray://head:10001 connects as a Ray client, which needs pip"):
        start_ray(_FakeRay(RuntimeError("ray.init must not be reached")), RayOptions("ray://head:10001"))
