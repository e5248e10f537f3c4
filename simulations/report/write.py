"""Write the report of a run directory or of a sweep directory (told apart by their files)."""

from __future__ import annotations

from pathlib import Path

from simulations.report.rundata import ReportError, is_run_dir
from simulations.report.run_page import write_run_report


def write_report(path: Path, *, out: Path | None = None, reference: Path | None = None,
                 popularity: bool = True) -> Path:
    """``path/report.html`` (or ``out``) for a run directory or a sweep directory; returns its path."""
    path = Path(path)
    if is_run_dir(path):
        return write_run_report(path, out=out, reference=reference, popularity=popularity)
    from simulations.report.sweep_page import is_sweep_dir, write_sweep_report  # imports the sweep runner

    if is_sweep_dir(path):
        if reference is not None:
            raise ReportError(f"{path} is a sweep directory: its references are references/*.json, "
                              "--reference applies to a run directory")
        return write_sweep_report(path, out=out)
    raise ReportError(f"{path}: not a run directory (config.json, metrics.json) nor a sweep directory "
                      "(summary.csv, points/)")
