"""``fedinterest sweep``: the command-line front of :mod:`simulations.sweep.run`.

Mount with ``app.add_typer(sweep_app, name="sweep")`` (the callback is the command, so the usage is
``fedinterest sweep --config ... --out ...``), or register the function alone with
``app.command("sweep")(sweep_cmd)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from simulations.cli.common import MLFLOW_HELP, NO_TRACKING_HELP, console, fail, setup_logging, tracking_overrides

sweep_app = typer.Typer(add_completion=False, help="Grid of federated runs: privacy/utility/cost frontier.")


def sweep_cmd(
    config: Path = typer.Option(..., help="sweep TOML (run sections plus a sweep table), e.g. "
                                "simulations/configs/sweep-smoke.toml"),
    out: Path = typer.Option(..., help="sweep directory (points/, references/, summary.csv, *.png)"),
    set_: list[str] = typer.Option([], "--set", help="dotted override of the base (privacy.delta=1e-6) or the "
                                   "sweep (sweep.grid.privacy.noise-multiplier=[1,2], sweep.references=[])"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the points (done or to run) and exit"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    no_tracking: bool = typer.Option(False, "--no-tracking", help=NO_TRACKING_HELP),
    mlflow: Optional[str] = typer.Option(None, "--mlflow", help=MLFLOW_HELP),
) -> None:
    """Run every unfinished grid point and reference (finished ones are skipped), then summarize and plot."""
    from shared_models.config import ConfigError
    from shared_models.datasets import DatasetError
    from simulations.sweep.run import SweepError, plan, run_sweep
    from simulations.sweep.spec import load_sweep

    setup_logging(False)
    try:
        spec = load_sweep(config, [*set_, *tracking_overrides(no_tracking, mlflow)])
        if dry_run:
            console.print(_plan_table(plan(spec, out)[1]))
            return
        result = run_sweep(spec, out, progress=not quiet, console=console)
    except (ConfigError, DatasetError, FileNotFoundError, SweepError) as exc:
        fail(str(exc))
    console.print(f"sweep: {result.ran} run, {result.skipped} skipped (done) -> {out}/summary.md, "
                  f"{', '.join(str(p.path.name) for p in result.plots.values())}")


def _plan_table(jobs) -> Table:
    table = Table(title="sweep plan")
    table.add_column("run")
    table.add_column("status")
    for job in jobs:
        table.add_row(job.name, "done" if job.output.exists() else "to run")
    return table


sweep_app.callback(invoke_without_command=True)(sweep_cmd)
