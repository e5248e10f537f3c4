"""Sweep plots (matplotlib, Agg, no pyplot state): the privacy frontier and per-point learning curves.

``frontier_*.png``: a utility metric against epsilon on a log axis. Non-private points have no finite
epsilon and sit at the right edge, past a dotted divider, at a tick labelled "∞". One series per
combination of the grid keys other than the privacy level (noise multiplier and privacy mode); the
centralized and popularity references are horizontal lines. ``learning_curves.png``: training loss,
validation Recall@10 (evaluated rounds only) and the largest device epsilon against the round.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from simulations.sweep.summary import KIND_COLUMN, NAME_COLUMN, POINT_KIND, REFERENCE_KIND

log = logging.getLogger(__name__)

PRIVACY_AXIS_KEYS = frozenset({"privacy.noise-multiplier", "privacy.user-noise-multiplier", "privacy.mode"})  # they set the x position
AMBIGUOUS_LEAVES = frozenset({"enabled", "kind", "mode", "lr", "seed", "device", "batch-size", "dataset"})
METRIC_LABELS = {"recall@10": "Recall@10", "ndcg@10": "NDCG@10", "recall@20": "Recall@20",
                 "ndcg@20": "NDCG@20", "mrr@10": "MRR@10"}
REFERENCE_STYLES = {"central": ("black", "--", "centralized (non-private)"), "pop": ("grey", ":", "popularity")}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
INF_GAP = 4.0  # the "∞" column sits this factor right of the largest finite epsilon (log axis)
X_MARGIN = 1.6
NICE_MANTISSAS = (1, 2, 5)
ANNOTATE_MAX_SERIES = 3  # label each point with its noise multiplier when there are this few series
FRONTIER_SIZE, CURVES_SIZE, DPI = (7.5, 4.8), (15.0, 4.6), 130
SMALL_FONT = 7
LEGEND_COLUMNS = 3
NO_EVAL_TEXT = "no validation rounds\n(federated.eval-every = 0)"


@dataclass(frozen=True)
class PlotInfo:
    """What a plotting function drew: the PNG path, its data series and its reference lines."""

    path: Path
    series: tuple[str, ...]
    references: tuple[str, ...] = ()


def key_label(key: str, keys: list[str]) -> str:
    """Short name of a grid key: its leaf, unless that is ambiguous (``he.enabled``, two ``lr`` keys)."""
    leaf = key.rsplit(".", 1)[-1]
    clash = sum(k.rsplit(".", 1)[-1] == leaf for k in keys) > 1
    return key if clash or leaf in AMBIGUOUS_LEAVES else leaf


def settings_label(settings: dict[str, Any], keys: list[str]) -> str:
    """``noise-multiplier=0.5, he.enabled=true``: the set grid values of a point, in grid order."""
    parts = []
    for k in keys:
        v = settings.get(k)
        if v is not None and v != "":
            text = ("true" if v else "false") if isinstance(v, bool) else str(v)
            parts.append(f"{key_label(k, keys)}={text}")
    return ", ".join(parts)


def plot_frontier(rows: list[dict[str, Any]], grid_keys: list[str], path: Path, *,
                  metric: str = "recall@10") -> PlotInfo:
    """``metric`` against epsilon, one series per combination of the non-privacy grid keys; save PNG."""
    points = [r for r in rows if r[KIND_COLUMN] == POINT_KIND and _plottable(r)]
    finite = [float(r["epsilon"]) for r in points if math.isfinite(r["epsilon"])]
    inf_x = max(finite) * INF_GAP if finite else 1.0
    series_keys = [k for k in grid_keys if k not in PRIVACY_AXIS_KEYS]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in points:
        groups.setdefault(settings_label(r, series_keys) or "federated", []).append(r)
    fig = Figure(figsize=FRONTIER_SIZE)
    ax = fig.subplots()
    for i, (label, members) in enumerate(groups.items()):
        members = sorted(members, key=lambda r: r["epsilon"])
        xs = [r["epsilon"] if math.isfinite(r["epsilon"]) else inf_x for r in members]
        ys = [r[metric] for r in members]
        ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], label=label)
        if len(groups) <= ANNOTATE_MAX_SERIES:
            _annotate_noise(ax, members, xs, ys)
    refs = _reference_lines(ax, rows, metric)
    _epsilon_axis(ax, finite, inf_x)
    if any(r.get("unit") == "user" for r in points):  # one server-side epsilon that every device shares
        ax.set_xlabel("ε (user level: the same for every device; ∞ = no DP)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(f"{METRIC_LABELS.get(metric, metric)} vs privacy ({_privacy_caption(points)})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=SMALL_FONT, loc="best")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return PlotInfo(Path(path), tuple(groups), refs)


def _plottable(row: dict[str, Any]) -> bool:
    eps = row.get("epsilon")
    if eps is None or (math.isfinite(eps) and eps <= 0):
        log.warning("frontier: point %s has epsilon %r (no device trained?); not plotted", row[NAME_COLUMN], eps)
        return False
    return True


def _annotate_noise(ax, members: list[dict[str, Any]], xs: list[float], ys: list[float]) -> None:
    for r, x, y in zip(members, xs, ys):
        nm = r.get("noise_multiplier")
        text = "no DP" if not math.isfinite(r["epsilon"]) else f"σ={nm:g}" if nm else ""
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 5), fontsize=SMALL_FONT)


def _reference_lines(ax, rows: list[dict[str, Any]], metric: str) -> tuple[str, ...]:
    names = []
    for r in rows:
        if r[KIND_COLUMN] != REFERENCE_KIND:
            continue
        color, style, label = REFERENCE_STYLES.get(r[NAME_COLUMN], ("tab:brown", "-.", r[NAME_COLUMN]))
        ax.axhline(r[metric], color=color, linestyle=style, linewidth=1.2, label=f"{label}: {r[metric]:.3f}")
        names.append(r[NAME_COLUMN])
    return tuple(names)


def _epsilon_axis(ax, finite: list[float], inf_x: float) -> None:
    """Log x axis with 1-2-5 ticks over the finite epsilons and an "∞" tick at ``inf_x``."""
    ax.set_xscale("log")
    lo = min(finite) if finite else inf_x
    hi = max(finite) if finite else inf_x
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
             for m in NICE_MANTISSAS if lo / X_MARGIN <= m * 10.0 ** e <= hi * X_MARGIN] if finite else []
    ax.set_xticks([*ticks, inf_x], [*(f"{t:g}" for t in ticks), "∞"])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(lo / X_MARGIN, inf_x * X_MARGIN)
    if finite:
        ax.axvline(math.sqrt(hi * inf_x), color="lightgrey", linestyle=":", linewidth=1)
    ax.set_xlabel("ε (largest over devices; ∞ = no DP)")


def _privacy_caption(points: list[dict[str, Any]]) -> str:
    private = [r for r in points if math.isfinite(r["epsilon"])]
    if not private:
        return "no private points"
    r = private[0]
    return f"δ={float(r['delta']):.0e} per {r.get('unit') or 'record'}"


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv as columns of floats (NaN where a cell is blank, e.g. a round without evaluation)."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = rows[0].keys() if rows else []
    return {n: [float(r[n]) if r[n] != "" else math.nan for r in rows] for n in names}


def plot_learning_curves(curves: list[tuple[str, Path]], path: Path) -> PlotInfo:
    """Loss, validation Recall@10 and largest epsilon per round, one line per point; save PNG."""
    fig = Figure(figsize=CURVES_SIZE, layout="constrained")
    axes = fig.subplots(1, 3)
    cmap = matplotlib.colormaps["tab10" if len(curves) <= 10 else "tab20"]
    any_eval = False
    for i, (label, history_path) in enumerate(curves):
        h = read_history(history_path)
        if not h:
            continue
        color = cmap(i % cmap.N)
        axes[0].plot(h["round"], h["loss"], color=color, label=label)
        evaluated = [(r, v) for r, v in zip(h["round"], h["recall@10"]) if not math.isnan(v)]
        if evaluated:
            any_eval = True
            axes[1].plot(*zip(*evaluated), color=color, marker="o", markersize=3)
        if any(e > 0 for e in h["epsilon_max"]):  # non-private points spend nothing: no line
            axes[2].plot(h["round"], h["epsilon_max"], color=color)
    if not any_eval:
        axes[1].text(0.5, 0.5, NO_EVAL_TEXT, ha="center", va="center", transform=axes[1].transAxes)
    for ax, ylabel in zip(axes, ("training loss", "validation Recall@10", "ε (largest over devices)")):
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", fontsize=SMALL_FONT,
               ncol=min(LEGEND_COLUMNS, max(1, len(curves))))
    fig.suptitle("learning curves per sweep point")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return PlotInfo(Path(path), tuple(label for label, _ in curves))
