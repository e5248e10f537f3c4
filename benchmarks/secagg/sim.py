"""One Flower simulation of bench_secagg.py (plain, secagg+ or ckks-sim), run inside a child process.

Ray backend, --cpus CPUs, 1 per simulated device; the ClientApp comes from secagg.apps, the ServerApp from
secagg.server, the timings from secagg.measure.  Flower is imported only once its environment is set.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any, Iterable

import numpy as np

from secagg.devices import Workload, plain_average, rel_err

ROUND_KEYS = ("round_s", "proj_s", "server_s", "wait_s", "up_bytes", "down_bytes", "errors")
CKKS_SIM_KEYS = ("encrypt_mean_s", "encrypt_max_s", "decrypt_mean_s", "decrypt_max_s")


def round_means(measured: list[dict[str, Any]], keys: Iterable[str]) -> dict[str, float]:
    """Mean over the measured rounds of each of ``keys``."""
    return {k: float(np.mean([r[k] for r in measured])) for k in keys}


def collect_results(method: str, args: argparse.Namespace, sink: dict[str, Any], total: float) -> dict[str, Any]:
    """The child's JSON result: means over the timed rounds, warm-up data, all rounds, error, settings."""
    rounds = sink["rounds"]
    measured = rounds[args.warmup_rounds:]
    out: dict[str, Any] = round_means(measured, ROUND_KEYS)
    # Devices ignore the global model, so every round aggregates the same vectors: the final model is the
    # weighted average of round 1 as well.
    out.update(method=method, simulation_total_s=total, warmup_s=sink["warmup_s"], node_wait_s=sink["node_wait_s"],
               warmup_errors=sink["warmup_errors"], warmup_rounds=rounds[:args.warmup_rounds], rounds=measured,
               rel_err=rel_err(sink["result"], plain_average(args)))
    if method == "secagg+":
        out.update(num_shares=args.num_shares, threshold=args.threshold, clipping_range=args.clipping_range,
                   quantization_range=args.quantization_range, modulus_range=args.modulus_range,
                   max_weight=args.secagg_max_weight)
    if method == "ckks-sim":
        m = round_means(measured, CKKS_SIM_KEYS)
        out.update(encrypt_mean_s=m["encrypt_mean_s"], encrypt_max_s=m["encrypt_max_s"],
                   decrypt_s=m["decrypt_mean_s"], decrypt_max_s=m["decrypt_max_s"])
    return out


def run_flower(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one Flower simulation (plain, secagg+ or ckks-sim) in this process and return the measurements."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    import logging

    from flwr.simulation import run_simulation

    from secagg.apps import make_ckks_keys, make_client_app
    from secagg.server import make_server_app

    logging.getLogger("flwr").setLevel(logging.ERROR)
    work = Workload.from_args(args)
    tmp = tempfile.TemporaryDirectory()
    keys = make_ckks_keys(tmp.name) if method == "ckks-sim" else None
    client_app = make_client_app(method, work, keys)
    sink: dict[str, Any] = {}
    server_app = make_server_app(method, args, keys, sink)
    backend_config = {"client_resources": {"num_cpus": 1},
                      "init_args": {"num_cpus": args.cpus, "logging_level": "ERROR", "log_to_driver": False}}
    t0 = time.perf_counter()
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=args.devices,
                       backend_name="ray", backend_config=backend_config, verbose_logging=False)
    finally:
        tmp.cleanup()
    total = time.perf_counter() - t0
    if "rounds" not in sink or "result" not in sink:
        raise RuntimeError(f"{method}: the ServerApp did not finish (see the log above)")
    return collect_results(method, args, sink, total)
