"""``fedinterest report RUN_DIR|SWEEP_DIR``: the command-line front of :mod:`simulations.report`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from simulations.cli.common import console, fail, setup_logging


def report_cmd(
    run_dir: Path = typer.Argument(..., help="a run directory (simulate --out) or a sweep directory"),
    out: Optional[Path] = typer.Option(None, help="HTML file to write (default RUN_DIR/report.html)"),
    reference: Optional[Path] = typer.Option(None, help="non-private reference: a train-central result JSON or a "
                                             "metrics.json whose 'metrics' are shown beside the run's"),
    popularity: bool = typer.Option(True, help="compute the popularity baseline on the run's dataset split"),
) -> None:
    """Write one self-contained report.html (config, headline metrics, curves, privacy, participation, cost,
    audit; for a sweep: its summary and frontier plots) and print its path."""
    setup_logging(False)
    from simulations.report.rundata import ReportError
    from simulations.report.write import write_report

    try:
        path = write_report(run_dir, out=out, reference=reference, popularity=popularity)
    except (ReportError, FileNotFoundError) as exc:
        fail(str(exc))
    print(path)
