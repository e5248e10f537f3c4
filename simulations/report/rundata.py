"""What a report shows of one RUN_DIR, read from its files (nothing is recomputed but the popularity baseline).

config.json, metrics.json, history.csv (per round), devices/*/ledger.json (the epsilon after each device's
last recorded round), audit.json (``fedinterest audit``), server/user_ledger.json (user-level runs).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulations.sweep.plots import read_history


class ReportError(ValueError):
    """The directory is not a run (nor a sweep) directory, or one of its files is unreadable; names the file."""


@dataclass
class RunData:
    run_dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any] | None  # metrics.json (None: the run has not finished)
    history: dict[str, list[float]]  # history.csv as columns (NaN where blank)
    device_epsilons: list[float] = field(default_factory=list)  # one per device ledger
    audit: dict[str, Any] | None = None

    @property
    def rounds(self) -> list[float]:
        return self.history.get("round", [])


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot be read as JSON ({exc})") from None


def is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "metrics.json").is_file()


def load_run(run_dir: Path) -> RunData:
    """Every file the report uses; a run that is still going (no metrics.json) is reported as far as it got."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such directory")
    if not is_run_dir(run_dir):
        raise ReportError(f"{run_dir}: neither config.json nor metrics.json there (not a run directory); "
                          "a sweep directory holds points/ and summary.csv")
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else None
    config = (metrics or {}).get("config") or read_json(run_dir / "config.json")
    history_path = run_dir / "history.csv"
    history = read_history(history_path) if history_path.is_file() else {}
    audit = read_json(run_dir / "audit.json") if (run_dir / "audit.json").is_file() else None
    return RunData(run_dir, config, metrics, history, device_epsilons(run_dir), audit)


def device_epsilons(run_dir: Path) -> list[float]:
    """The epsilon each device ledger recorded after its last round (devices that never trained: none)."""
    out = []
    for path in sorted((run_dir / "devices").glob("*/ledger.json")):
        rounds = read_json(path).get("rounds") or []
        if rounds:
            eps = float(rounds[-1]["epsilon"])
            out.append(eps if math.isfinite(eps) else math.inf)
    return out


def config_brief(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The settings a reader needs first, as (label, value) rows."""
    d, m, f = config.get("data", {}), config.get("model", {}), config.get("federated", {})
    p, he = config.get("privacy", {}), config.get("he", {})
    rows = [("dataset", f"{d.get('dataset')}" + (f" (first {d['max_users']} users)" if d.get("max_users") else "")),
            ("model", f"{m.get('kind')}, hidden {m.get('hidden')}, max-len {m.get('max_len')}, "
                      f"{m.get('num_layers')} layers"),
            ("rounds x devices", f"{f.get('num_server_rounds')} x {f.get('clients_per_round')} "
                                 f"(local epochs {f.get('local_epochs')}, lr {f.get('lr')}, {f.get('optimizer')})"),
            ("back-end", f"{f.get('backend')}, server optimizer {f.get('server_optimizer')}")]
    mode = p.get("mode")
    if mode == "none":
        rows.append(("privacy", "none (no DP)"))
    else:
        rows.append(("privacy", f"{mode}: sigma {p.get('noise_multiplier')}, clip {p.get('max_grad_norm')}, "
                                f"target eps {p.get('target_epsilon')}, delta {p.get('delta')}, "
                                f"accountant {p.get('accountant')}"))
        if mode in ("user", "example+user"):
            rows.append(("user-level DP", f"clip {p.get('user_clip')}, sigma {p.get('user_noise_multiplier')}, "
                                          f"target eps {p.get('user_target_epsilon')}"))
        if mode == "window":
            rows.append(("window-level DP", f"distributed DP-SGD, window sample rate {p.get('window_sample_rate')}, "
                                            f"expected batch {p.get('expected_batch')}"))
    rows.append(("secure aggregation", f"CKKS, N = {he.get('poly_modulus_degree')}" if he.get("enabled") else "off"))
    return rows
