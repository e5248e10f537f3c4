"""The report's figures: matplotlib (Agg, no pyplot state) rendered to PNG bytes, one function per figure.

Every function returns PNG bytes, or None when the run has nothing to draw (the page then says why).
"""

from __future__ import annotations

import io
import math

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

FIG_SIZE, DPI = (7.2, 3.4), 100
HIST_BINS = 30
PARTICIPATION = (("valid", "participants", "tab:green"), ("refused", "refused (budget)", "tab:orange"),
                 ("failed", "failed", "tab:grey"), ("rejected", "rejected by the server", "tab:red"))
CURVE_METRICS = ("recall@10", "ndcg@10")
MB = 1e6
MARGINS = {"left": 0.09, "right": 0.98, "bottom": 0.14, "top": 0.91, "wspace": 0.3}
TARGET_SHOWN_UP_TO = 1.5  # the epsilon target is drawn when it is at most this multiple of the largest value


def _target(ax, target: float | None, largest: float, *, vertical: bool = False) -> None:
    """The budget as a dashed line when it is near the data, else named in the title (it would flatten it)."""
    if not target:
        return
    if target <= TARGET_SHOWN_UP_TO * largest:
        line = ax.axvline if vertical else ax.axhline
        line(target, color="black", linestyle="--", linewidth=1, label=f"target {target:g}")
    else:
        ax.set_title(f"target epsilon {target:g} (off the axis)", fontsize=9)


def _figure() -> Figure:
    """Fixed margins (a layout engine would cost more than drawing a 100-round figure)."""
    fig = Figure(figsize=FIG_SIZE)
    fig.subplots_adjust(**MARGINS)
    return fig


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _rounds_axes(fig: Figure, n: int):
    axes = fig.subplots(1, n) if n > 1 else [fig.subplots()]
    for ax in axes:
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    return axes


def learning_curves(history: dict[str, list[float]]) -> bytes | None:
    """Training loss per round and validation metrics of the evaluated rounds."""
    rounds = history.get("round", [])
    loss = history.get("loss", [])
    has_loss = any(not math.isnan(v) for v in loss)
    evaluated = {m: [(r, v) for r, v in zip(rounds, history.get(m, [])) if not math.isnan(v)] for m in CURVE_METRICS}
    if not rounds or not (has_loss or any(evaluated.values())):
        return None
    fig = _figure()
    ax_loss, ax_valid = _rounds_axes(fig, 2)
    if has_loss:
        ax_loss.plot(rounds, loss, color="tab:blue")
    else:
        ax_loss.text(0.5, 0.5, "devices report no loss\n(secure aggregation)", ha="center", va="center",
                     transform=ax_loss.transAxes)
    ax_loss.set_ylabel("mean device training loss")
    for metric, points in evaluated.items():
        if points:
            ax_valid.plot(*zip(*points), marker="o", markersize=3, label=metric)
    if any(evaluated.values()):
        ax_valid.legend(fontsize=8)
    else:
        ax_valid.text(0.5, 0.5, "no validation rounds\n(federated.eval-every = 0)", ha="center", va="center",
                      transform=ax_valid.transAxes)
    ax_valid.set_ylabel("validation metric")
    return png(fig)


def epsilon_rounds(history: dict[str, list[float]], target: float | None) -> bytes | None:
    """Largest and mean epsilon spent after each round, with the budget."""
    rounds, eps_max = history.get("round", []), history.get("epsilon_max", [])
    if not rounds or not any(v > 0 for v in eps_max):
        return None
    fig = _figure()
    (ax,) = _rounds_axes(fig, 1)
    ax.plot(rounds, eps_max, label="largest over devices", color="tab:red")
    ax.plot(rounds, history.get("epsilon_mean", []), label="mean over devices", color="tab:blue")
    _target(ax, target, max(eps_max))
    ax.set_ylabel("epsilon spent")
    ax.legend(fontsize=8)
    return png(fig)


def epsilon_histogram(device_eps: list[float], target: float | None) -> bytes | None:
    """How many devices spent how much (one value per device ledger)."""
    finite = [e for e in device_eps if math.isfinite(e)]
    if not finite:
        return None
    fig = _figure()
    ax = fig.subplots()
    ax.hist(finite, bins=HIST_BINS, color="tab:purple", edgecolor="white", label=f"{len(device_eps)} device ledgers")
    _target(ax, target, max(finite), vertical=True)
    ax.legend(fontsize=8)
    ax.set_xlabel("epsilon spent (device ledger)")
    ax.set_ylabel("devices")
    return png(fig)


def participation(history: dict[str, list[float]]) -> bytes | None:
    """Per round, the sampled devices split into participants, refusals, failures and rejections (stacked)."""
    rounds = history.get("round", [])
    if not rounds:
        return None
    fig = _figure()
    (ax,) = _rounds_axes(fig, 1)
    edges = [x for r in rounds for x in (r - 0.45, r + 0.45)]  # each round a bar 0.9 wide
    bottom = [0.0] * len(edges)
    for column, label, color in PARTICIPATION:  # one polygon per outcome (bars would be one patch per round)
        values = [0.0 if math.isnan(v) else v for v in history.get(column, [0.0] * len(rounds))]
        top = [b + v for b, v in zip(bottom, (v for v in values for _ in range(2)))]
        ax.fill_between(edges, bottom, top, label=label, color=color, linewidth=0)
        bottom = top
    ax.set_ylabel("sampled devices")
    ax.legend(fontsize=8, loc="lower right")
    return png(fig)


def cost(history: dict[str, list[float]], update_bytes: float) -> bytes | None:
    """Wall time per round and, when an update's size is known, the bytes moved per round."""
    rounds = history.get("round", [])
    if not rounds:
        return None
    fig = _figure()
    axes = _rounds_axes(fig, 2 if update_bytes else 1)
    axes[0].plot(rounds, history.get("wall_s", []), color="tab:brown")
    axes[0].set_ylabel("wall time per round (s)")
    axes[0].set_ylim(bottom=0)
    if update_bytes:
        axes[1].plot(rounds, [v * update_bytes / MB for v in history.get("sampled", [])], label="down (broadcast)")
        axes[1].plot(rounds, [v * update_bytes / MB for v in history.get("valid", [])], label="up (updates)",
                     linestyle="--")
        axes[1].set_ylabel("MB per round")
        axes[1].set_ylim(bottom=0)
        axes[1].legend(fontsize=8)
    return png(fig)
