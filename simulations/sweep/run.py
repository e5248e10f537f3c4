"""``fedinterest sweep``: a grid of real federated runs plus reference points -> summary table and plots.

Layout of the output directory ``DIR``::

    DIR/points/<slug>/          one simulate() RUN_DIR per grid point (metrics.json, history.csv, ...)
    DIR/keys/<slug>/            that point's keys, outside its RUN_DIR (``fedinterest audit ... --keys-dir``)
    DIR/references/<name>.json  train_central() results: "central" (base model) and "pop" (popularity)
    DIR/summary.csv, summary.md one row per point and reference
    DIR/frontier_recall.png, frontier_ndcg.png, learning_curves.png

Resumable: a point whose RUN_DIR holds metrics.json, or a reference whose JSON exists, is not run again
(if it was made with the same config, except where it ran: else SweepError before anything runs).
A point that fails is logged and left out; the others still run, and the sweep then raises SweepError.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from shared_models.config import Config
from shared_models.tracking import TRACKING_DIR
from simulations.sweep import plots, summary as sweep_summary
from simulations.sweep.plots import PlotInfo
from simulations.central import train_central
from simulations.simulate import simulate
from simulations.sweep.grid import SweepPoint, expand_grid, point_overrides
from simulations.sweep.spec import SweepSpec

log = logging.getLogger(__name__)

POINTS_DIR, REFERENCES_DIR, KEYS_DIR = "points", "references", "keys"  # keys: one folder per point (audit --keys-dir)
METRICS_FILE, HISTORY_FILE = "metrics.json", "history.csv"
FRONTIER_FILES = {"recall@10": "frontier_recall.png", "ndcg@10": "frontier_ndcg.png"}
CURVES_FILE = "learning_curves.png"
CLI_NAME = "fedinterest sweep"
RUN_LOCAL_KEYS = frozenset({"federated.ray_address", "federated.num_cpus", "federated.num_gpus",
                            "federated.device", "train.device", "train.threads", "he.keys_dir",
                            "tracking.tensorboard", "tracking.mlflow_uri", "tracking.mlflow_experiment"})  # not results
MAX_DIFF_SHOWN = 5
REFERENCE_SECTIONS = {"central": ("data", "model", "train"), "pop": ("data",)}  # what each result depends on


class SweepError(RuntimeError):
    """Some runs failed (the others are summarized), or a finished run was made with another config."""


@dataclass
class SweepResult:
    """What a sweep did: summary rows, how many runs it made or skipped, failures and the plots."""

    rows: list[dict[str, Any]]
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    plots: dict[str, PlotInfo] = field(default_factory=dict)


@dataclass(frozen=True)
class _Job:
    """One unit of work: a grid point (simulate) or a reference (train_central)."""

    name: str
    output: Path  # metrics.json of the point, or the reference's JSON
    config: Config
    run: Callable[[], dict[str, Any]]
    to_row: Callable[[dict[str, Any]], dict[str, Any]]
    sections: tuple[str, ...] = ()  # config sections its result depends on (empty: all)


def regenerate_command(spec: SweepSpec, out: Path) -> str:
    """The shell command that reruns (resumes, or just redraws) this sweep."""
    args = [*CLI_NAME.split(), "--config", spec.source or "CONFIG.toml", "--out", str(out)]
    for item in spec.overrides:
        args += ["--set", item]
    return shlex.join(args)


def reference_config(spec: SweepSpec, name: str) -> Config:
    """Centralized reference: the base data/model (pop: model.kind = pop) with [sweep.central] train keys."""
    extra = [f"train.{item}" for item in point_overrides(spec.central)]
    if name == "pop":
        extra.append('model.kind="pop"')
    return spec.base_config(extra)


def plan(spec: SweepSpec, out: Path) -> tuple[list[SweepPoint], list[_Job]]:
    """The grid points and every job (references first, then points in grid order)."""
    points = expand_grid(spec)
    jobs = [_reference_job(spec, name, out) for name in spec.references]
    jobs += [_point_job(p, out) for p in points]
    return points, jobs


def _point_job(point: SweepPoint, out: Path) -> _Job:
    run_dir = out / POINTS_DIR / point.slug
    cfg = point.config
    if not cfg.he.keys_dir:  # keys beside the run would put a KEYS_SUFFIX folder among the points
        cfg = dataclasses.replace(cfg, he=dataclasses.replace(cfg.he, keys_dir=str((out / KEYS_DIR / point.slug).resolve())))
    return _Job(point.slug, run_dir / METRICS_FILE, cfg,
                run=lambda: simulate(cfg, run_dir, progress=False),
                to_row=lambda res: sweep_summary.point_row(point.slug, point.settings, res))


def _reference_job(spec: SweepSpec, name: str, out: Path) -> _Job:
    path = out / REFERENCES_DIR / f"{name}.json"
    cfg = reference_config(spec, name)

    def run() -> dict[str, Any]:
        result = train_central(cfg, progress=False, track_dir=path.parent / TRACKING_DIR / name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(path)  # atomic: a half-written JSON never counts as done
        return result

    return _Job(name, path, cfg, run=run, to_row=lambda res: sweep_summary.reference_row(name, res),
                sections=REFERENCE_SECTIONS[name])


def run_sweep(spec: SweepSpec, out: Path | str, *, progress: bool = True,
              console: Console | None = None) -> SweepResult:
    """Run every unfinished point and reference, then write summary.csv/.md and the plots in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points, jobs = plan(spec, out)
    grid_keys = list(spec.grid)
    rows: dict[str, dict[str, Any]] = {}
    result = SweepResult(rows=[])
    todo = []
    for job in jobs:
        if job.output.exists():
            done = json.loads(job.output.read_text())
            _check_same_config(job, done.get("config", {}))
            rows[job.name] = job.to_row(done)
            result.skipped += 1
            log.info("%s: skipped (done)  %s", job.name, _result_line(rows[job.name]))
        else:
            todo.append(job)
    log.info("sweep: %d points + %d references; %d to run, %d done", len(points), len(spec.references),
             len(todo), result.skipped)
    with _progress_bar(progress and bool(todo), console) as bar:
        task = bar.add_task("", total=len(todo))
        for i, job in enumerate(todo, 1):
            bar.update(task, description=f"{job.name}")
            row = _run_job(job, f"{i}/{len(todo)}")
            if row is None:
                result.failed.append(job.name)
            else:
                rows[job.name] = row
                result.ran += 1
                _write_tables(spec, out, _ordered(rows, jobs), grid_keys, result.failed)
            bar.update(task, advance=1)
    result.rows = _ordered(rows, jobs)
    _write_tables(spec, out, result.rows, grid_keys, result.failed)
    result.plots = write_plots(out, result.rows, grid_keys, points)
    if result.failed:
        raise SweepError(f"{len(result.failed)} of {len(jobs)} sweep runs failed: {', '.join(result.failed)} "
                         f"(see the log; rerun the same command to retry only those)")
    return result


def _check_same_config(job: _Job, saved: dict[str, Any]) -> None:
    """A finished run is reused only if it was made with this config (else results would be mixed).

    Only keys in both configs are compared: a key added to Config since (or removed) is not a change.
    """
    now, before = _flatten(json.loads(json.dumps(job.config.to_dict()))), _flatten(saved)
    keys = [k for k in sorted(now.keys() & before.keys())
            if k not in RUN_LOCAL_KEYS and (not job.sections or k.split(".", 1)[0] in job.sections)]
    diff = [f"{k}: {before[k]!r} -> {now[k]!r}" for k in keys if now[k] != before[k]]
    if diff:
        raise SweepError(f"{job.output} was made with another config ({'; '.join(diff[:MAX_DIFF_SHOWN])}); "
                         f"use another --out, or delete that run to redo it")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _run_job(job: _Job, position: str) -> dict[str, Any] | None:
    """Run one job; log its result line. A failure is logged (with traceback) and returns None."""
    try:
        row = job.to_row(job.run())
    except Exception:  # noqa: BLE001 - one bad point must not lose an hours-long sweep
        log.exception("%s [%s]: FAILED", job.name, position)
        return None
    log.info("%s [%s]: %s", job.name, position, _result_line(row))
    return row


def _result_line(row: dict[str, Any]) -> str:
    eps = row["epsilon"]
    eps_text = "inf (no DP)" if eps == float("inf") else f"{eps:.3f}"
    return (f"recall@10 {row['recall@10']:.4f}  ndcg@10 {row['ndcg@10']:.4f}  epsilon {eps_text}  "
            f"wall {row['wall_s']:.1f} s")


def _ordered(rows: dict[str, dict[str, Any]], jobs: list[_Job]) -> list[dict[str, Any]]:
    """Rows in a stable order: points in grid order, then references."""
    order = [j.name for j in jobs if j.name in rows]
    points = [rows[n] for n in order if rows[n][sweep_summary.KIND_COLUMN] == sweep_summary.POINT_KIND]
    return points + [rows[n] for n in order if rows[n][sweep_summary.KIND_COLUMN] != sweep_summary.POINT_KIND]


def _write_tables(spec: SweepSpec, out: Path, rows: list[dict[str, Any]], grid_keys: list[str],
                  failed: list[str]) -> None:
    sweep_summary.write_csv(out / sweep_summary.CSV_NAME, rows, grid_keys)
    notes = [f"failed (not in the table): {', '.join(failed)}"] if failed else []
    sweep_summary.write_markdown(out / sweep_summary.MD_NAME, rows, grid_keys,
                                 title=f"Sweep {Path(spec.source).stem or ''}".strip(),
                                 command=regenerate_command(spec, out), notes=notes)


def write_plots(out: Path, rows: list[dict[str, Any]], grid_keys: list[str],
                points: list[SweepPoint]) -> dict[str, PlotInfo]:
    """The frontier plots (one per metric in FRONTIER_FILES) and the learning curves of finished points."""
    drawn = {name: plots.plot_frontier(rows, grid_keys, out / name, metric=metric)
             for metric, name in FRONTIER_FILES.items()}
    curves = [(plots.settings_label(p.settings, grid_keys) or p.slug, out / POINTS_DIR / p.slug / HISTORY_FILE)
              for p in points if (out / POINTS_DIR / p.slug / METRICS_FILE).exists()]
    drawn[CURVES_FILE] = plots.plot_learning_curves(curves, out / CURVES_FILE)
    return drawn


def _progress_bar(enabled: bool, console: Console | None) -> Progress:
    columns = (TextColumn("[bold]sweep[/bold] {task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} runs"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    return Progress(*columns, console=console, disable=not enabled)
