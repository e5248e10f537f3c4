"""``RUN_DIR/audit.md``: the audit of one run, for a human, rendered from the audit.json dict."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

THREAT_MODEL = Path(__file__).resolve().parents[1] / "docs" / "threat-model.md"
HIST_BINS = 8
HIST_WIDTH = 40


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "n/a" if x is None else format(x, fmt)


def guarantee_sentence(audit: dict[str, Any]) -> str:
    """The run's guarantee in one sentence (or the absence of one)."""
    c = audit["claimed"]
    if c["epsilon"] is None:
        return "No differential-privacy guarantee: the run trained without DP (privacy.mode = none)."
    return (f"Each device's training data is protected by ({_num(c['epsilon'])}, {_num(c['delta'], 'g')})-DP "
            f"at the unit of one training {c['unit']} (added or removed), via {c['mechanism']}, composed over "
            f"every round the device trained with the {c['accountant'].upper()} accountant; the epsilon is the "
            f"largest over devices.")


def _replace_one(audit: dict[str, Any]) -> list[str]:
    eps = audit["cross_check"].get("pld_replace_one_epsilon")
    if audit["claimed"]["epsilon"] is None or eps is None:
        return []
    return ["", f"Changing (rather than adding or removing) one window, e.g. the item of one interaction, is "
                f"covered at epsilon {_num(eps)} (dp_accounting PLD, replace-one); deleting an interaction shifts "
                f"earlier windows and is not a one-window change (see the threat model)."]


def histogram(values: list[float | None]) -> str:
    """A small text histogram of the per-device ε (infinite values counted apart)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    lines = []
    if finite and min(finite) == max(finite):
        lines.append(f"all = {finite[0]:.4g} {'#' * HIST_WIDTH} {len(finite)}")
    elif finite:
        lo, hi = min(finite), max(finite)
        width = (hi - lo) / HIST_BINS
        counts = [0] * HIST_BINS
        for v in finite:
            counts[min(HIST_BINS - 1, int((v - lo) / width))] += 1
        top = max(counts)
        for i, n in enumerate(counts):
            left = lo + i * width
            bar = "#" * max(1 if n else 0, round(HIST_WIDTH * n / top))
            lines.append(f"[{left:8.3f}, {left + width:8.3f}) {bar:<{HIST_WIDTH}} {n}")
    infinite = len(values) - len(finite)
    if infinite:
        lines.append(f"infinite (no noise): {infinite}")
    return "\n".join(lines) if lines else "(no device ledgers)"


def _cross_table(audit: dict[str, Any]) -> list[str]:
    xc, c = audit["cross_check"], audit["claimed"]
    rows = [("ours: fedinterest RDP (the claim)", c["epsilon"]),
            (f"{xc['library']}", xc["epsilon"]),
            ("dp_accounting RDP, library's own order grid", xc.get("rdp_library_orders_epsilon")),
            ("dp_accounting PLD, add/remove (tightest upper bound)", xc.get("pld_epsilon")),
            ("dp_accounting PLD, replace-one window (stronger notion; information)", xc.get("pld_replace_one_epsilon"))]
    out = ["| accountant | epsilon (max over devices) |", "|---|---:|"]
    out += [f"| {name} | {_num(v)} |" for name, v in rows]
    diff = xc.get("max_relative_difference")
    out.append("")
    out.append(f"Largest per-device difference ours vs. dp_accounting RDP (same orders): {_num(diff, '.2%')} "
               f"(tolerance {xc.get('tolerance', 0.05):.0%}).")
    return out


def _empirical(audit: dict[str, Any]) -> list[str]:
    emp = audit.get("empirical")
    if emp is None:
        return ["Not run (pass `--empirical`)."]
    mech = "infinite (no noise)" if emp.get("mechanism_epsilon") is None else _num(emp["mechanism_epsilon"])
    return [f"One-run canary audit (Steinke, Nasr & Jagielski 2023) of the local training mechanism of device "
            f"{emp.get('device')}: {emp.get('canaries')} canary windows, {emp.get('guesses')} guesses, "
            f"{emp.get('correct')} correct.",
            f"Empirical lower bound: epsilon >= {_num(emp['epsilon_lower'])} at {emp['confidence']:.0%} confidence; "
            f"the accountant's epsilon for the audited training is {mech}."]


def render(audit: dict[str, Any], run_dir: Path) -> str:
    """The whole audit.md text."""
    d, log = audit["devices"], audit["log"]
    stats = d["epsilon"]
    log_line = ("not present, not checked" if log["verified"] is None else
                f"{'verified' if log['verified'] else 'FAILED'}: {log['rounds']} rounds"
                + (f" ({log['reason']})" if log["reason"] else ""))
    target = audit["claimed"].get("target_epsilon")
    lines = [f"# Privacy audit of `{run_dir}`", "", f"**Verdict: {audit['verdict']}**", "",
             "## Guarantee", "", guarantee_sentence(audit), *_replace_one(audit), "",
             "## Per-device epsilon", "",
             f"{d['count']} device ledgers ({d['trained']} trained).", "",
             "| min | median | p90 | max |", "|---:|---:|---:|---:|",
             "| " + " | ".join(_num(stats[k]) for k in ("min", "median", "p90", "max")) + " |", "",
             "```", histogram(d["values"]), "```", "",
             "## Budget", "", f"Target epsilon {_num(target, 'g')}; budget violations: {audit['budget_violations']}.",
             "", "## Accountant cross-check", "", *_cross_table(audit), "",
             "## Round log", "", f"Signed round log: {log_line}.", "",
             "## Empirical audit", "", *_empirical(audit), "",
             "## Verdict", "", f"**{audit['verdict']}**", ""]
    lines += [f"- {r}" for r in audit["reasons"]] or ["- every check passed"]
    repo = THREAT_MODEL.parents[1]
    inside = run_dir.resolve().is_relative_to(repo)
    rel = os.path.relpath(THREAT_MODEL, run_dir.resolve()) if inside else THREAT_MODEL.as_uri()
    lines += ["", f"What this guarantee does and does not cover: [threat model]({rel}) (`docs/threat-model.md`).", ""]
    return "\n".join(lines)
