"""Device commands: ``fedinterest device init|add|import``, ``fedinterest recommend``, ``fedinterest export``.

``device_app`` is a Typer group the main CLI mounts as ``device``; ``recommend_cmd`` and ``export_cmd`` are
plain command functions it registers at the top level. Every failure prints ``error: <message naming the
file/field>`` on stderr and exits with code 2.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

device_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         help="A device's own state: catalogue, interaction store, personal model.")
out_console = Console()
err_console = Console(stderr=True)


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Turn expected failures into one ``error:`` line and exit code 2 (no traceback)."""
    from client.interactions import InteractionError
    from client.runtime import DeviceStateError
    from shared_models.config import ConfigError
    from shared_models.datasets import DatasetError

    try:
        yield
    except (DeviceStateError, InteractionError, ConfigError, DatasetError, FileNotFoundError, KeyError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None


@device_app.command("init")
def init_cmd(
    state: Path = typer.Option(..., help="state directory to create"),
    user_id: str = typer.Option(..., help="this device's user id (its key id in a deployment)"),
    dataset: Optional[str] = typer.Option(None, help="catalogue (and this user's history) from a dataset: "
                                          "ml-100k, a .inter or a user,item,timestamp .csv"),
    catalogue: Optional[Path] = typer.Option(None, help="catalogue CSV with header item[,title] (no dataset)"),
    config: Optional[Path] = typer.Option(None, help="TOML config (model section must match the federation)"),
    import_history: bool = typer.Option(True, help="import this user's interactions from --dataset"),
    keys: Optional[Path] = typer.Option(None, help="a `keys init` directory: copy this device's keys in"),
) -> None:
    """Create a device state directory (catalogue, config, interaction store, empty personal state)."""
    from client.runtime import init_device

    with _clear_errors():
        n = init_device(state, user_id=user_id, dataset=dataset, catalogue_csv=catalogue, config=config,
                        import_history=import_history, keys=keys)
    err_console.print(f"device {user_id!r} initialised in {state} ({n} interactions imported)")


@device_app.command("add")
def add_cmd(
    item: str = typer.Argument(..., help="item token, as in the catalogue (e.g. an ML-100K movie id)"),
    state: Path = typer.Option(..., help="device state directory"),
    timestamp: Optional[float] = typer.Option(None, help="Unix seconds (default: now)"),
) -> None:
    """Record one interaction (durable once this command returns)."""
    from client.runtime import add_interaction

    with _clear_errors():
        n = add_interaction(state, item, timestamp)
    err_console.print(f"added {item!r}; {n} interactions stored")


@device_app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., help="CSV with header item,timestamp or user,item,timestamp"),
    state: Path = typer.Option(..., help="device state directory"),
) -> None:
    """Import a CSV in one transaction: every row or none (a bad row names file and line)."""
    from client.runtime import import_interactions

    with _clear_errors():
        n = import_interactions(state, file)
    err_console.print(f"imported {n} interactions from {file}")


def recommend_cmd(
    state: Path = typer.Option(..., help="device state directory"),
    k: int = typer.Option(10, "--k", "-k", min=1, help="number of recommendations"),
    explain: bool = typer.Option(False, help="show the long/short-term share and the items that drove it"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Top-K unseen items for this device (global shared + personal model, current history)."""
    from client.recommend import Recommender

    with _clear_errors(), Recommender(state) as rec:
        result = rec.recommend(k, explain=explain)
    if as_json:
        out_console.print_json(json.dumps(asdict(result)))
        return
    table = Table(title=f"top-{k} for {state} (global weights: {result.source})")
    for col in ("#", "item", "title", "score"):
        table.add_column(col, justify="right" if col in ("#", "score") else "left")
    for i, r in enumerate(result.items, 1):
        table.add_row(str(i), r.item, r.title, f"{r.score:.4f}")
    out_console.print(table)
    if result.explanation is not None:
        _print_explanation(result.explanation)


def _print_explanation(expl) -> None:
    if expl.note:
        out_console.print(expl.note)
        return
    out_console.print(f"interest mix at the last position: long-term {expl.long_share:.0%}, "
                      f"short-term {expl.short_share:.0%}")
    for label, items in (("long-term attention", expl.long_items), ("short-term pooling", expl.short_items)):
        if items:
            out_console.print(f"{label}: " + "; ".join(f"{t} ({w:.2f})" for _, t, w in items))


def export_cmd(
    state: Path = typer.Option(..., help="device state directory"),
    out: Path = typer.Option(..., help="TorchScript file to write"),
    int8: bool = typer.Option(False, help="dynamic int8 quantization of the Linear layers"),
) -> None:
    """Export the device's model as a self-contained TorchScript file (input (1, T) history, output scores)."""
    from client.export import export_model

    with _clear_errors():
        path = export_model(state, out, int8=int8)
    err_console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB{', int8' if int8 else ''})")
