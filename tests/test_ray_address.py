"""``federated.ray-address``: a simulation runs on an existing Ray cluster (here a local head we start)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulations.simulate import simulate
from tests.fed_helpers import synthetic_csv, tiny_config

HEAD_START_TIMEOUT_S = 120
RAY_TMP = "/tmp/ray"  # Ray's default temp dir


def test_local_backend_never_joins_another_cluster():
    from simulations.backends.flower import backend_config

    init = backend_config(tiny_config(Path("unused.csv"))).get("init_args", {})
    assert init["address"] == "local" and init["num_cpus"] >= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray head exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1.0)
    raise TimeoutError(f"ray head did not listen on {port} within {timeout_s} s")


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head in its own process group (``--block``), torn down by killing that group only: no global
    ``ray stop``, which would also kill unrelated Ray sessions on the machine."""
    ray = Path(sys.executable).with_name("ray")
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_port(port, proc, HEAD_START_TIMEOUT_S)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        _forget_cluster(port)


def _forget_cluster(port: int) -> None:
    """``ray start`` records its address in RAY_TMP/ray_current_cluster; a stale record would make a later
    plain ``ray.init()`` try to join the dead head."""
    record = Path(RAY_TMP) / "ray_current_cluster"
    if record.is_file() and record.read_text().strip().endswith(f":{port}"):
        record.unlink()


@pytest.mark.slow
def test_simulation_runs_on_an_existing_ray_cluster(tmp_path, ray_head):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=8, items=30),
                      federated={"backend": "ray", "num-server-rounds": 2, "clients-per-round": 4,
                                 "ray-address": ray_head})
    result = simulate(cfg, tmp_path / "run", progress=False)
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["config"]["federated"]["ray_address"] == ray_head
    assert (result["rounds"], result["num_clients"], result["evaluated_devices"]) == (2, 8, 8)
    assert result["timing"]["client_updates"] == 8  # 2 rounds x 4 devices trained on the cluster's workers
    assert len(list((tmp_path / "run" / "devices").glob("*/ledger.json"))) >= 4
