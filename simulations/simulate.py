"""``fedinterest simulate``: one federated run -> RUN_DIR/{config.json, history.csv, metrics.json, devices/,
tensorboard/ (unless tracking is off), popularity.json (the report's baseline)}."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from server.checkpoint import same_config
from server.job import RunFailed, prepare_keys, run_job
from server.loop import write_json
from shared_models.config import Config
from shared_models.datasets.population import population
from shared_models.paths import KEYS_MARKER, run_keys_dir
from simulations.backends.inline import InlineTransport
from simulations.report.baselines import cached_popularity

log = logging.getLogger(__name__)


def simulate(cfg: Config, run_dir: Path | str, *, progress: bool = True, resume: bool = True) -> dict[str, Any]:
    """Run a federated simulation (Flower simulation engine, or inline); returns the metrics.json dict.

    ``resume``: a finished run (metrics.json of the same config) is returned as is; a killed one continues
    after its last completed round. ``resume=False`` wipes the previous run's artefacts first.
    RunFailed (after metrics.json is written, with its ``failure``) when no round released an aggregate or
    no device was evaluated."""
    result = _simulate(cfg, Path(run_dir), progress=progress, resume=resume)
    if result.get("failure"):  # every back-end: a run nobody could use is an error, not a 0.0 metrics.json
        raise RunFailed(f"{result['failure']}; see {Path(run_dir) / 'metrics.json'}", result)
    return result


def _simulate(cfg: Config, run_dir: Path, *, progress: bool, resume: bool) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        fresh_start(run_dir, cfg)
    elif (finished := _finished(run_dir, cfg)) is not None:
        log.info("%s already holds a finished run of this config: nothing to do", run_dir)
        return finished
    mark_run_dir(run_dir)
    if cfg.federated.backend in ("inline", "cohort"):
        keys_dir = prepare_keys(cfg, population(cfg), run_dir)
        transport_cls = InlineTransport
        if cfg.federated.backend == "cohort":
            from simulations.backends.cohort import CohortTransport as transport_cls  # torch.func path
        with transport_cls(cfg, population(cfg), run_dir, keys_dir) as transport:
            result = run_job(cfg, transport, run_dir, keys_dir=keys_dir, progress=progress)
    else:
        from simulations.backends.flower import run_flower_simulation  # imports flwr + ray lazily

        result = run_flower_simulation(cfg, run_dir, progress=progress)
    popularity, _ = cached_popularity(run_dir, json.loads(json.dumps(cfg.to_dict())))  # also for the report
    result["baselines"] = {"popularity": popularity}  # the same devices and test items, history masked
    write_json(run_dir / "metrics.json", result)
    return result


def _finished(run_dir: Path, cfg: Config) -> dict[str, Any] | None:
    """The finished run of this config in ``run_dir``; an error if it holds anything else that a resume
    could silently mix into a new run (another config, or device states without a server checkpoint)."""
    config = json.loads(json.dumps(cfg.to_dict()))
    path = run_dir / "metrics.json"
    if path.is_file():
        result = json.loads(path.read_text())
        if same_config(result.get("config", {}), config):
            return result
        raise ValueError(f"{run_dir} holds a finished run of a different config: use another --out, or --fresh")
    if not (run_dir / "checkpoint").is_dir() and ((run_dir / "devices").is_dir() or (run_dir / "history.csv").exists()):
        raise ValueError(f"{run_dir} holds device states of an unfinished run without a server checkpoint: "
                         "resuming would mix them into a new run; use another --out, or --fresh")
    return None


RUN_ARTEFACTS = ("devices", "checkpoint", "history.csv", "metrics.json", "global_shared.npz", "global_sum.ckks",
                 "server", "round_log.jsonl", "broadcast", "tensorboard", "report.html",
                 "popularity.json")


RUN_MARKER = ".fedinterest-run"  # written when a run starts: --fresh deletes only in a folder that carries it


def mark_run_dir(run_dir: Path) -> None:
    """Mark ``run_dir`` as a fedinterest run directory (what ``fresh_start`` requires before deleting)."""
    marker = run_dir / RUN_MARKER
    if not marker.is_file():
        marker.write_text(json.dumps({"fedinterest": "run directory"}) + "\n")


def fresh_start(run_dir: Path, cfg: Config) -> None:
    """Remove a previous run's artefacts (only the known names) so stale ledgers never leak into a new run,
    and the keys the harness made for it beside the run directory (``RUN_DIR.keys``) unless ``he.keys_dir``
    names keys made beforehand.

    Only in a folder a run marked (``RUN_MARKER``), and a keys folder only when the harness marked it
    (``KEYS_MARKER``): otherwise ValueError and nothing is deleted."""
    names = RUN_ARTEFACTS + (() if cfg.he.keys_dir else ("keys",))  # keys/: where runs kept them before
    present = [n for n in names if (run_dir / n).exists() or (run_dir / n).is_symlink()]
    if present and not (run_dir / RUN_MARKER).is_file():
        raise ValueError(f"--fresh: {run_dir} holds {', '.join(present)} but no {RUN_MARKER} marker, so it is "
                         "not a fedinterest run directory: nothing deleted; use another --out")
    keys = None if cfg.he.keys_dir else run_keys_dir(run_dir)
    if keys is not None and (keys.exists() or keys.is_symlink()):
        if keys.is_symlink() or not (keys / KEYS_MARKER).is_file():
            raise ValueError(f"--fresh: {keys} (where this run's keys go) exists but has no {KEYS_MARKER} marker, "
                             "so the harness did not make it: nothing deleted; move it or use another --out")
        shutil.rmtree(keys)
    for name in present:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:  # a file, or a link (removed, never followed)
            path.unlink()
