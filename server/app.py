"""The Flower ServerApp: thin glue around ``server.job.run_job`` over a Grid transport.

Two ways in. ``flwr run .`` uses the module-level ``app``: the config comes from ``context.run_config``
(flattened ``[tool.flwr.app.config]``) and ``run-dir`` names where outputs go. ``fedinterest simulate``
builds its own app with ``make_app(SimulationJob(...))``: the job travels in that app (no module state), and
the result comes back in the job object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.grid_transport import GridTransport
from server.job import RunFailed, prepare_keys, run_job
from server.run_id import run_identity
from shared_models.config import Config, config_from_run_config
from shared_models.datasets.population import population

log = logging.getLogger(__name__)
DEFAULT_RUN_DIR = "runs/flwr-run"
REPLY_TIMEOUT_S = 3600.0


@dataclass
class SimulationJob:
    """A run handed to an in-process ServerApp by the simulation harness."""

    cfg: Config
    run_dir: Path
    expected_nodes: int
    max_in_flight: int = 0
    progress: bool = True
    active: bool = True  # False once the harness has ended the simulation: the round loop then stops
    result: dict[str, Any] | None = None


def make_app(job: SimulationJob | None = None) -> ServerApp:
    """A ServerApp that runs ``job`` (in-process simulation), or reads its run from the run config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if job is not None:
            cfg, run_dir, progress, expected = job.cfg, Path(job.run_dir), job.progress, job.expected_nodes
            in_flight = job.max_in_flight
            broadcast = str(run_dir / "broadcast")  # devices share this disk: publish the state once a round
            alive = lambda: job.active  # noqa: E731
        else:
            cfg = config_from_run_config(dict(context.run_config))
            run_dir = Path(str(context.run_config.get("run-dir", DEFAULT_RUN_DIR))).resolve()
            progress, alive = False, None
            expected = cfg.federated.expected_nodes or len(population(cfg).devices)
            in_flight = cfg.federated.max_in_flight
            broadcast = ""  # `flwr run`: devices may be anywhere, the state travels in the messages
        run_dir.mkdir(parents=True, exist_ok=True)
        keys_dir = prepare_keys(cfg, population(cfg), run_dir)
        transport = GridTransport(grid, cfg, str(run_dir), expected_nodes=expected, timeout_s=REPLY_TIMEOUT_S,
                                  keys_dir=keys_dir, node_wait_s=cfg.federated.node_wait_s, alive=alive,
                                  max_in_flight=in_flight, broadcast_dir=broadcast, run_id=run_identity(run_dir),
                                  device_order=[d.device_id for d in population(cfg).devices])
        try:
            result = run_job(cfg, transport, run_dir, keys_dir=keys_dir, progress=progress)
        except RunFailed as exc:
            if job is None:
                raise
            result = exc.result  # the harness reports the failure (simulations/simulate.py)
        if job is not None:
            job.result = result
        log.info("metrics written to %s", run_dir / "metrics.json")

    return app


app = make_app()
