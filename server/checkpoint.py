"""Server-side checkpoint after every completed round, so a killed run resumes where it stopped.

``RUN_DIR/checkpoint/`` holds ``state.json`` (last completed round, per-round stats, server bookkeeping; the
commit point, written last) and, in ``round-<NNNNNN>/`` named by it, that round's global state:
``global.npz``, ``server_optimizer.npz``, ``ema.npz`` and ``recent.npz`` (plaintext) or ``global.ckks`` (the
encrypted sum; the server never has the model). A crash while a round's files are being written leaves the
committed round's folder whole, so a resume never mixes two rounds. Beside them: ``best-<round>.npz`` /
``.ckks`` when ``federated.keep_best`` keeps the best one and ``recent-<sha>.ckks`` (``server_average`` under
CKKS), both named in ``state.json``.
Device states (personal weights, ledgers) are already persisted by the devices.
A device asked to retrain a round its ledger already holds declines (``client.device``), so a resumed
round never spends privacy twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from server.loop import PlainFedAvg, RoundStats
from server.selection import ModelSelection
from shared_models.atomic_io import atomic_write_bytes

STATE = "state.json"
EMA = "ema.npz"  # the plaintext server's moving average of the global model (federated.server_ema)
RECENT = "recent.npz"  # the plaintext server's last released models (federated.server_average), "<i>/<param>"
GENERATION = "round-"  # the folder of one committed round's global state
FLAT = ("global.npz", "server_optimizer.npz", EMA, RECENT, "global.ckks")  # its files (flat in older checkpoints)


UNCOMPARED_SECTIONS = ("tracking",)


def same_config(recorded: dict[str, Any], current: dict[str, Any]) -> bool:
    """Equal on every key both configs have (a field added to Config later, at its default, is no change);
    ``tracking`` (where the run is watched, not what it computes) is not compared."""
    for section, values in current.items():
        if section in UNCOMPARED_SECTIONS:
            continue
        old = recorded.get(section)
        if isinstance(values, dict) and isinstance(old, dict):
            if any(k in old and old[k] != v for k, v in values.items()):
                return False
        elif old is not None and old != values:
            return False
    return True


def _dir(run_dir: Path) -> Path:
    return run_dir / "checkpoint"


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_checkpoint(run_dir: Path, strategy, stats: list[RoundStats], config: dict[str, Any],
                    selection: ModelSelection | None = None) -> None:
    """Write the round's global state into its own folder (and the best one kept so far) first, then
    ``state.json`` (the commit point), then remove what no committed state names."""
    d = _dir(run_dir)
    round_id = stats[-1].round if stats else 0
    gen = d / f"{GENERATION}{round_id:06d}"  # a replayed round rewrites its own folder, never the committed one
    gen.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {}
    if isinstance(strategy, PlainFedAvg):
        atomic_write_bytes(gen / "global.npz", _npz(strategy.shared))
        # server optimizer moments (empty for plain FedAvg) and the model EMA (federated.server_ema)
        atomic_write_bytes(gen / "server_optimizer.npz", _npz(strategy.optimizer.state()))
        if strategy.ema is not None:
            atomic_write_bytes(gen / EMA, _npz(strategy.ema))
        if strategy.recent:  # federated.server_average: the window of released models
            atomic_write_bytes(gen / RECENT, _npz({f"{i}/{k}": v for i, m in enumerate(strategy.recent)
                                                   for k, v in m.items()}))
    else:
        if strategy.latest is not None:
            atomic_write_bytes(gen / "global.ckks", strategy.latest)
        recent = [f"recent-{hashlib.sha256(blob).hexdigest()[:24]}.ckks" for blob in strategy.recent]
        for name, blob in zip(recent, strategy.recent):  # federated.server_average: named by content, listed
            if not (d / name).is_file():  # in state.json, so a crash before the commit leaves the old list whole
                atomic_write_bytes(d / name, blob)
        extra = {"node_of": strategy.node_of, "rejected": strategy.rejected, "has_sum": strategy.latest is not None,
                 "sum_checks": strategy.sum_checks, "recent": recent}
    state = {"round": round_id, "stats": [dataclasses.asdict(s) for s in stats], "config": config,
             "server": extra, "files": gen.name}
    best = None
    if selection is not None:
        state["selection"] = selection.to_json()
        if selection.state is not None:
            # named by its round and recorded in state.json: a best written by an attempt that crashed before
            # its state.json is never taken for the committed one
            plain = isinstance(selection.state, dict)
            best = d / f"best-{selection.best_round:06d}{'.npz' if plain else '.ckks'}"
            if selection.best_round == state["round"] or not best.is_file():  # new this round (or a replay)
                atomic_write_bytes(best, _npz(selection.state) if plain else selection.state)
            state["selection"]["file"] = best.name
    atomic_write_bytes(d / STATE, json.dumps(state, default=float).encode())
    for old in d.glob("best-*"):  # after the commit point: earlier bests and crashed attempts' leftovers
        if old != best:
            old.unlink(missing_ok=True)
    for old in d.glob("recent-*.ckks"):
        if old.name not in extra.get("recent", ()):
            old.unlink(missing_ok=True)
    for old in d.glob(f"{GENERATION}*"):  # earlier rounds' folders and a crashed attempt's
        if old != gen:
            shutil.rmtree(old, ignore_errors=True)
    for name in FLAT:  # a checkpoint written before round folders, now superseded
        (d / name).unlink(missing_ok=True)


def load_checkpoint(run_dir: Path, strategy, config: dict[str, Any],
                    selection: ModelSelection | None = None) -> tuple[int, list[RoundStats]]:
    """Restore ``strategy`` (and ``selection``) from the checkpoint; return (last completed round, stats).
    (0, []) if none."""
    path = _dir(run_dir) / STATE
    if not path.is_file():
        return 0, []
    state = json.loads(path.read_text())
    if not same_config(state["config"], config):
        raise ValueError(f"{path}: the run directory holds a run with a different config; use a new --out "
                         "or --fresh to start over")
    files = _dir(run_dir) / state.get("files", "")  # checkpoints before round folders: flat in checkpoint/
    if isinstance(strategy, PlainFedAvg):
        saved = _load_npz(files / "global.npz")
        strategy.shared = {k: saved[k] for k in strategy.shared}
        opt_path = files / "server_optimizer.npz"
        if opt_path.is_file():
            strategy.optimizer.load(_load_npz(opt_path))
        if (files / EMA).is_file():
            strategy.ema = _load_npz(files / EMA)
        if (files / RECENT).is_file():
            flat = _load_npz(files / RECENT)
            count = 1 + max(int(name.split("/", 1)[0]) for name in flat)
            strategy.recent = [{k: flat[f"{i}/{k}"] for k in strategy.shared} for i in range(count)]
    else:
        server = state["server"]
        strategy.latest = (files / "global.ckks").read_bytes() if server["has_sum"] else None
        strategy.node_of = {k: int(v) for k, v in server["node_of"].items()}
        strategy.rejected = [tuple(r) for r in server["rejected"]]
        strategy.sum_checks = int(server.get("sum_checks", 0))
        strategy.recent = [(_dir(run_dir) / name).read_bytes() for name in server.get("recent", [])]
    if selection is not None and "selection" in state:
        selection.load_json(state["selection"], _load_best(_dir(run_dir), state["selection"]))
    return int(state["round"]), [RoundStats(**s) for s in state["stats"]]


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _load_best(d: Path, saved: dict[str, Any]):
    if saved["best_value"] is None:
        return None
    path = d / saved["file"]
    return _load_npz(path) if path.suffix == ".npz" else path.read_bytes()


def trim_history(history: Path, last_round: int) -> None:
    """Drop history rows after ``last_round`` (written by a round that did not complete)."""
    if not history.exists():
        return
    lines = history.read_text().splitlines(keepends=True)
    kept = lines[:1] + [ln for ln in lines[1:] if int(ln.split(",", 1)[0]) <= last_round]
    atomic_write_bytes(history, "".join(kept).encode())
