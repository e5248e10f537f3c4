"""``fedinterest simulate``: one federated run -> RUN_DIR/{config.json, history.csv, metrics.json, devices/}."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from client.device import privacy_unit, resolve_delta
from server.loop import RoundStats, append_history, evaluate_nodes, run_rounds, write_json
from shared_models.config import Config
from shared_models.metrics import METRIC_NAMES
from shared_models.privacy import PrivacyLedger
from simulations.devices import initial_shared, population
from simulations.inline import InlineTransport

log = logging.getLogger(__name__)
DEVICE_THREADS = 1  # a simulated device is one CPU's worth of work (Ray gives each actor num_cpus)


def simulate(cfg: Config, run_dir: Path | str, *, progress: bool = True) -> dict[str, Any]:
    """Run a federated simulation (Flower simulation engine, or inline); returns the metrics.json dict."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.federated.backend == "inline":
        with InlineTransport(cfg, population(cfg), run_dir) as transport:
            return run_job(cfg, transport, run_dir, progress=progress)
    from simulations.flower_backend import run_flower_simulation  # imports flwr + ray lazily

    return run_flower_simulation(cfg, run_dir, progress=progress)


def run_job(cfg: Config, transport, run_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """The whole server side of a run over any transport: rounds, final test, outputs in ``run_dir``."""
    t0 = time.perf_counter()
    torch.set_num_threads(DEVICE_THREADS)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    history = run_dir / "history.csv"
    if history.exists():
        history.unlink()
    pop = population(cfg)
    shared = initial_shared(cfg, pop.num_items, pop.text)
    with _progress(progress) as bar:
        task = bar.add_task("rounds", total=cfg.federated.num_server_rounds)
        shared, stats = run_rounds(cfg, transport, shared, on_round=lambda st, _s: append_history(history, st),
                                   progress=lambda r: bar.update(task, completed=r))
        bar.update(task, description="final test")
        test = evaluate_nodes(cfg, transport, cfg.federated.num_server_rounds + 1, shared, "test")
    np.savez(run_dir / "global_shared.npz", **shared)
    result = _result(cfg, run_dir, pop, stats, test, time.perf_counter() - t0)
    write_json(run_dir / "metrics.json", result)
    return result


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)


def privacy_summary(cfg: Config, run_dir: Path, pop, stats: list[RoundStats]) -> dict[str, Any]:
    """Largest and mean epsilon over all device ledgers (the harness plays every device and may read them)."""
    p = cfg.privacy
    out: dict[str, Any] = {"mode": p.mode, "unit": privacy_unit(cfg), "epsilon": None, "delta": None,
                           "target_epsilon": p.target_epsilon if p.mode != "none" else None,
                           "noise_multiplier": p.noise_multiplier if p.mode != "none" else 0.0,
                           "max_grad_norm": p.max_grad_norm if p.mode != "none" else None,
                           "sample_rate": None, "steps": None, "epsilon_mean": None, "accountant": p.accountant,
                           "refusals": int(sum(s.refused for s in stats)), "devices_trained": 0}
    if p.mode == "none":
        return out
    delta = resolve_delta(cfg, pop.max_interactions)
    summaries = [PrivacyLedger.open(f, accountant=p.accountant, delta=delta, unit=privacy_unit(cfg),
                                    target_epsilon=p.target_epsilon).to_summary()
                 for f in sorted((run_dir / "devices").glob("*/ledger.json"))]
    out["delta"] = delta
    if summaries:
        worst = max(summaries, key=lambda s: s["epsilon"])
        out.update(epsilon=worst["epsilon"], sample_rate=worst["sample_rate"], steps=worst["steps"],
                   epsilon_mean=float(np.mean([s["epsilon"] for s in summaries])), devices_trained=len(summaries))
    else:
        out["epsilon"] = 0.0
    return out


def _result(cfg: Config, run_dir: Path, pop, stats: list[RoundStats], test: dict[str, float], wall: float):
    updates = int(sum(s.valid + s.refused for s in stats))
    return {
        "metrics": {k: test.get(k, 0.0) for k in METRIC_NAMES},
        "evaluated_devices": int(test.get("evaluated", 0)),
        "privacy": privacy_summary(cfg, run_dir, pop, stats),
        "he": {"enabled": False},
        "rounds": cfg.federated.num_server_rounds,
        "clients_per_round": stats[0].sampled if stats else 0,
        "num_clients": len(pop.devices),
        "timing": {"wall_s": round(wall, 2), "client_updates": updates,
                   "client_updates_per_s": round(updates / wall, 3) if wall > 0 else 0.0,
                   "round_s_mean": float(np.mean([s.wall_s for s in stats])) if stats else 0.0},
        "config": cfg.to_dict(),
    }
