"""The Flower ServerApp: thin glue around ``simulations.simulate.run_job`` over a Grid transport.

Two ways in: ``fedinterest simulate`` fills ``JOB`` in-process (run_simulation runs this app in a thread);
``flwr run .`` gives the config in ``context.run_config`` (flattened ``[tool.flwr.app.config]``), with
``run-dir`` naming where outputs go.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.grid_transport import GridTransport
from simulations.devices import config_from_run_config, population

log = logging.getLogger(__name__)
JOB: dict[str, Any] = {}  # filled by simulations.flower_backend for in-process simulations
DEFAULT_RUN_DIR = "runs/flwr-run"
REPLY_TIMEOUT_S = 3600.0

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    from simulations.simulate import prepare_keys, run_job  # late import: keeps the ServerApp module light

    if JOB.get("cfg") is not None:
        cfg, run_dir, progress = JOB["cfg"], Path(JOB["run_dir"]), JOB.get("progress", True)
        expected = JOB["expected_nodes"]
        token = JOB.get("token")
        in_flight = int(JOB.get("max_in_flight", 0))
        broadcast = str(run_dir / "broadcast")  # devices share this disk: publish the state once a round
        alive = lambda: JOB.get("token") is token  # noqa: E731 -- False once that simulation has ended
    else:
        alive = None
        cfg = config_from_run_config(dict(context.run_config))
        run_dir = Path(str(context.run_config.get("run-dir", DEFAULT_RUN_DIR))).resolve()
        progress = False
        expected = cfg.federated.expected_nodes or len(population(cfg).devices)
        in_flight = cfg.federated.max_in_flight
        broadcast = ""  # `flwr run`: devices may be anywhere, the state travels in the messages
    run_dir.mkdir(parents=True, exist_ok=True)
    keys_dir = prepare_keys(cfg, population(cfg), run_dir)
    transport = GridTransport(grid, cfg, str(run_dir), expected_nodes=expected, timeout_s=REPLY_TIMEOUT_S,
                              keys_dir=keys_dir, node_wait_s=cfg.federated.node_wait_s, alive=alive,
                              max_in_flight=in_flight, broadcast_dir=broadcast)
    result = run_job(cfg, transport, run_dir, keys_dir=keys_dir, progress=progress)
    JOB["result"] = result
    log.info("metrics written to %s", run_dir / "metrics.json")
