"""What every ``fedinterest`` command shares: the console, logging set-up, errors, result tables."""

from __future__ import annotations

import json
import logging

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

console = Console(stderr=True)


QUIET_LOGGERS = ("flwr", "ray", "urllib3", "sentence_transformers", "filelock", "httpx", "alembic", "mlflow")


def _quiet_third_party(record: logging.LogRecord) -> bool:
    """Drop INFO/DEBUG chatter of frameworks (Flower resets its own logger level at run time)."""
    return record.levelno >= logging.WARNING or not record.name.startswith(QUIET_LOGGERS)


def setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=console, show_path=False)
    if not verbose:
        handler.addFilter(_quiet_third_party)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[handler], force=True)


def fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(code=2)


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    """A rich table: one row per named result, one column per metric."""
    table = Table(title=title)
    names = list(next(iter(rows.values())).keys()) if rows else []
    table.add_column("")
    for n in names:
        table.add_column(n, justify="right")
    for label, metrics in rows.items():
        table.add_row(label, *(f"{metrics[n]:.4f}" for n in names))
    return table


def protocol_rows(result: dict, label: str, key: str) -> dict[str, dict[str, float]]:
    """Table rows "<label> (masked)" and "<label> (unmasked)" from a result's ``key`` (the protocol it names
    in ``protocol``) and ``<key>_<other protocol>``."""
    chosen = result.get("protocol", "masked")
    other = "unmasked" if chosen == "masked" else "masked"
    rows = {f"{label} ({chosen})": result[key]}
    if f"{key}_{other}" in result:
        rows[f"{label} ({other})"] = result[f"{key}_{other}"]
    return dict(sorted(rows.items()))


NO_TRACKING_HELP = "no TensorBoard event files (sets tracking.tensorboard = false)"
MLFLOW_HELP = "also log to MLflow at this tracking URI, e.g. file:///abs/mlruns (needs fedinterest[mlflow])"


def tracking_overrides(no_tracking: bool, mlflow: str | None) -> list[str]:
    """The --set items of ``--no-tracking`` and ``--mlflow URI`` (so the choice is recorded in the config)."""
    out = ["tracking.tensorboard=false"] if no_tracking else []
    return out + ([f"tracking.mlflow-uri={json.dumps(mlflow)}"] if mlflow else [])


def quote_overrides(overrides: list[str]) -> list[str]:
    """Quote string values so the TOML scalar parser keeps them as strings."""
    out = []
    for item in overrides:
        key, value = item.split("=", 1)
        out.append(f"{key}={json.dumps(value)}" if key in ("data.dataset", "model.kind", "train.device") else item)
    return out
