"""Sweep summary rows (one per point and reference) and their files: summary.csv and summary.md.

A row holds the point's varying keys (one column per grid key, blank where a point does not set it,
e.g. the noise of a non-private point), then :data:`RESULT_COLUMNS`. Non-private points and references
have ``epsilon = inf`` (no guarantee); ``bytes_per_param`` is the upload cost of one shared parameter
(CKKS ciphertext bytes under HE, 4 for plaintext float32). The metric columns use the ranking protocol in
``protocol`` (``eval.mask-history``: "masked" removes the user's history from the ranking); ``other_recall@10``
and ``other_ndcg@10`` are the same test ranks under the other protocol.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

NAME_COLUMN, KIND_COLUMN = "name", "kind"
POINT_KIND, REFERENCE_KIND = "point", "reference"
REPORTED_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10")
OTHER_PROTOCOL_METRICS = ("recall@10", "ndcg@10")  # also reported under the other protocol, as other_<metric>
OTHER_COLUMNS = tuple(f"other_{m}" for m in OTHER_PROTOCOL_METRICS)
RESULT_COLUMNS = ("noise_multiplier", "epsilon", "delta", "unit", "protocol", *REPORTED_METRICS, *OTHER_COLUMNS,
                  "wall_s", "bytes_per_param")
PLAINTEXT_BYTES_PER_PARAM = 4.0  # float32 shared weights in the plaintext transport
MD_DIGITS = 4
CSV_NAME, MD_NAME = "summary.csv", "summary.md"
FIXED_COLUMNS = frozenset({"epsilon", *REPORTED_METRICS, *OTHER_COLUMNS})  # 4 decimals in summary.md
FLOAT_COLUMNS = frozenset({"noise_multiplier", "epsilon", "delta", *REPORTED_METRICS, *OTHER_COLUMNS, "wall_s",
                           "bytes_per_param"})


def columns(grid_keys: list[str]) -> list[str]:
    """CSV/markdown header: name, kind, the grid keys, then the result columns."""
    return [NAME_COLUMN, KIND_COLUMN, *grid_keys, *RESULT_COLUMNS]


def protocol_cells(result: dict[str, Any]) -> dict[str, Any]:
    """``protocol`` and the ``other_<metric>`` cells of a result (blank where it predates both protocols)."""
    chosen = result.get("protocol")
    other = {"masked": "unmasked", "unmasked": "masked"}.get(chosen)
    alt = result.get(f"metrics_{other}", {}) if other else {}
    return {"protocol": chosen, **{f"other_{m}": alt.get(m) for m in OTHER_PROTOCOL_METRICS}}


def point_row(slug: str, settings: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A summary row from a point's metrics.json dict."""
    privacy, he = result["privacy"], result.get("he", {})
    eps = privacy.get("epsilon")
    return {NAME_COLUMN: slug, KIND_COLUMN: POINT_KIND, **settings,
            "noise_multiplier": privacy.get("noise_multiplier"),
            "epsilon": math.inf if eps is None else float(eps), "delta": privacy.get("delta"),
            "unit": privacy.get("unit"), **protocol_cells(result),
            **{m: result["metrics"][m] for m in REPORTED_METRICS},
            "wall_s": result["timing"]["wall_s"],
            "bytes_per_param": he["bytes_per_param"] if he.get("enabled") else PLAINTEXT_BYTES_PER_PARAM}


def reference_row(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """A summary row from a train_central result dict (non-private: epsilon = inf)."""
    return {NAME_COLUMN: name, KIND_COLUMN: REFERENCE_KIND, "noise_multiplier": None, "epsilon": math.inf,
            "delta": None, "unit": None, **protocol_cells(result),
            **{m: result["metrics"][m] for m in REPORTED_METRICS},
            "wall_s": result["wall_s"], "bytes_per_param": None}


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(_csv_cell(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def write_csv(path: Path, rows: list[dict[str, Any]], grid_keys: list[str]) -> None:
    """summary.csv: exact values (floats in repr form, ``inf`` for no guarantee, blank for not applicable)."""
    header = columns(grid_keys)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in header])


def read_csv(path: Path) -> list[dict[str, Any]]:
    """summary.csv back to rows: result columns as floats (None where blank), grid keys as text."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for col in FLOAT_COLUMNS & row.keys():
            row[col] = float(row[col]) if row[col] != "" else None
    return rows


def _md_cell(value: Any, column: str) -> str:
    """Metrics and epsilon with 4 decimals (∞ for no guarantee); other numbers in their shortest form."""
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        return f"{value:.{MD_DIGITS}f}" if column in FIXED_COLUMNS else f"{value:g}"
    return _csv_cell(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], grid_keys: list[str]) -> str:
    """The rows as a GitHub markdown table (4 decimals, ∞ for no privacy guarantee)."""
    header = columns(grid_keys)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(row.get(c), c) for c in header) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(path: Path, rows: list[dict[str, Any]], grid_keys: list[str], *, title: str, command: str,
                   notes: list[str] | None = None) -> None:
    """summary.md: a title, the table, notes (e.g. failed points) and the command that regenerates it."""
    parts = [f"# {title}", "", markdown_table(rows, grid_keys), ""]
    parts += [f"- {n}" for n in notes or []]
    parts += ["", "Regenerate (finished points are skipped, so this only redraws unless points are missing):", "",
              "```sh", command, "```", ""]
    path.write_text("\n".join(parts))
