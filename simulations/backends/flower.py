"""Run a job on Flower's simulation engine (Ray backend): one SuperNode per device.

``run_simulation`` runs the ServerApp in a thread of this process: the harness builds that app around its
job (``server.app.make_app``) and reads the result back from the job. Clients get the config inside each
message. The simulated device's data is chosen by its ``partition-id`` and loaded once per Ray actor.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from shared_models.config import Config
from shared_models.datasets.population import population
from simulations.backends.dispatch import faster_dispatch

log = logging.getLogger(__name__)


def backend_config(cfg: Config) -> dict[str, Any]:
    f = cfg.federated
    init_args: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
    if f.ray_address:
        init_args["address"] = f.ray_address
    else:  # "local": a fresh instance even when another Ray cluster runs here (ray.init would join it)
        init_args.update(address="local", num_cpus=os.cpu_count() or 1)
    return {"client_resources": {"num_cpus": f.num_cpus, "num_gpus": f.num_gpus}, "init_args": init_args}


IN_FLIGHT_PER_DEVICE = 4  # messages queued per concurrently running simulated device (federated.max-in-flight = 0)
REMOTE_IN_FLIGHT = 256  # on an existing Ray cluster (federated.ray-address) whose size this process does not know


def max_in_flight(cfg: Config) -> int:
    """Messages the ServerApp keeps outstanding: the config's value, else a few per concurrent device."""
    f = cfg.federated
    if f.max_in_flight:
        return f.max_in_flight
    if f.ray_address:
        return REMOTE_IN_FLIGHT
    concurrent = max(1, int((os.cpu_count() or 1) // max(f.num_cpus, 1e-9)))
    return IN_FLIGHT_PER_DEVICE * concurrent


def run_flower_simulation(cfg: Config, run_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ray starts its workers at niceness 15: any other busy process on the machine would starve the simulated
    # devices (a 35 s demo took 518 s beside one training job). Devices are this process's own work: normal priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    logging.getLogger("flwr").setLevel(logging.ERROR)
    from flwr.simulation import run_simulation

    from client.app import app as client_app
    from server.app import SimulationJob, make_app

    # run_simulation is deprecated in favour of `flwr run` (which works too: see pyproject.toml); we keep the
    # programmatic path for `fedinterest simulate` and silence Flower's INFO/WARNING banners, errors still show
    logging.getLogger("flwr").setLevel(logging.ERROR)
    num_devices = len(population(cfg).devices)
    job = SimulationJob(cfg=cfg, run_dir=run_dir, expected_nodes=num_devices, max_in_flight=max_in_flight(cfg),
                        progress=progress)
    try:
        with faster_dispatch():  # one scan per dispatch cycle instead of one per node (simulations/backends/dispatch.py)
            run_simulation(server_app=make_app(job), client_app=client_app, num_supernodes=num_devices,
                           backend_name="ray", backend_config=backend_config(cfg), verbose_logging=False)
        if job.result is None:
            raise RuntimeError(f"the ServerApp did not finish: see the log above (run dir {run_dir})")
        return job.result
    finally:
        job.active = False  # a ServerApp thread the engine left behind stops at its next round
