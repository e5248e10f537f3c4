"""``SWEEP_DIR/report.html``: a sweep's summary table and its frontier and learning-curve plots on one page.

The plots are the PNGs ``fedinterest sweep`` drew (simulations/sweep/plots.py), embedded as they are.
"""

from __future__ import annotations

from pathlib import Path

from simulations.report.html import image, note, page, section, table
from simulations.report.rundata import ReportError
from simulations.sweep.run import CURVES_FILE, FRONTIER_FILES, POINTS_DIR
from simulations.sweep.summary import CSV_NAME, read_csv

SWEEP_SECTIONS = ("summary", "frontier", "learning-curves")


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / CSV_NAME).is_file() or (Path(path) / POINTS_DIR).is_dir()


def sweep_report(sweep_dir: Path) -> str:
    sweep_dir = Path(sweep_dir)
    summary = sweep_dir / CSV_NAME
    if not summary.is_file():
        raise ReportError(f"{summary}: missing (the sweep has not summarized yet: rerun `fedinterest sweep`)")
    rows = read_csv(summary)
    header = list(rows[0].keys()) if rows else []
    frontier = [image(_read(sweep_dir / name), f"frontier: {metric} against epsilon",
                      f"{name} missing (no plottable point)") for metric, name in FRONTIER_FILES.items()]
    points = sorted(p.name for p in (sweep_dir / POINTS_DIR).glob("*/report.html"))
    return page(f"fedinterest sweep {sweep_dir.resolve().name}", [
        section("summary", "Summary (one row per point and reference)",
                table(header, [[r.get(c) for c in header] for r in rows]),
                note(f"{len(rows)} rows from {CSV_NAME}; epsilon ∞: no privacy guarantee"),
                note("point reports: " + ", ".join(points)) if points else ""),
        section("frontier", "Privacy/utility frontier", *frontier),
        section("learning-curves", "Learning curves per point",
                image(_read(sweep_dir / CURVES_FILE), "learning curves per sweep point", f"{CURVES_FILE} missing")),
    ])


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def write_sweep_report(sweep_dir: Path, *, out: Path | None = None) -> Path:
    path = Path(out) if out else Path(sweep_dir) / "report.html"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(sweep_report(sweep_dir), encoding="utf-8")
    tmp.replace(path)
    return path
