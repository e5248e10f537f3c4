"""``RUN_DIR/audit.md``: the audit of one run, for a human, rendered from the audit.json dict."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

THREAT_MODEL = Path(__file__).resolve().parents[2] / "docs" / "threat-model.md"
HIST_BINS = 8
HIST_WIDTH = 40
_WORST = (": the canaries add no noise share and exactly min_train_nodes honest devices add theirs, the least "
          "noise the guarantee allows")


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


def user_guarantee_sentence(audit: dict[str, Any]) -> str:
    """The user-level (or window-level distributed DP-SGD) guarantee in one sentence."""
    c = audit["claimed"]
    if c.get("mode") == "window":
        return (f"Every training window is protected by ({_num(c['epsilon'])}, {_num(c['delta'], 'g')})-DP at the "
                f"unit of one training window anywhere in the population (added or removed), over all "
                f"{c.get('steps')} rounds, via {c['mechanism']}, composed over rounds with the "
                f"{(c['accountant'] or 'rdp').upper()} accountant; a device's whole history is not one unit.")
    return (f"Each device (user) is protected by ({_num(c['epsilon'])}, {_num(c['delta'], 'g')})-DP at the unit of "
            f"one whole device: everything it contributes to the shared model over all {c.get('steps')} rounds "
            f"(added or removed), via {c['mechanism']}, composed over rounds with the "
            f"{(c['accountant'] or 'rdp').upper()} accountant; personal parameters never leave the device and are "
            f"not covered.")


def _dropouts(audit: dict[str, Any]) -> list[str]:
    c, ul = audit["claimed"], audit.get("user_log") or {}
    below = ul.get("released_below_min") or []
    checked = ("the signed round log shows no such release" if ul.get("checked") and not below else
               f"the round log shows releases below it in rounds {below}" if below else
               "not checked (no verified round log)")
    return ["", f"Devices that drop after being sampled simply do not contribute: one device still changes the "
                f"sum by at most the clip, and while at least min_train_nodes = {c.get('min_train_nodes')} honest "
                f"devices contribute, the sum carries noise of std >= noise multiplier x clip. A round with fewer "
                f"valid updates keeps the previous model and releases nothing (it is still accounted); {checked}."]


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


def _server_accounted(claimed: dict[str, Any]) -> bool:
    """A claim from the server's ledger: user modes (unit user) and window mode (distributed DP-SGD)."""
    return claimed.get("unit") == "user" or claimed.get("mode") == "window"


def _cross_table(audit: dict[str, Any]) -> list[str]:
    xc, c = audit["cross_check"], audit["claimed"]
    rows = [("ours: fedinterest RDP (the claim)", c["epsilon"]),
            (f"{xc['library']}", xc["epsilon"]),
            ("dp_accounting RDP, library's own order grid", xc.get("rdp_library_orders_epsilon")),
            ("dp_accounting PLD, add/remove (tightest upper bound)", xc.get("pld_epsilon")),
            ("dp_accounting PLD, replace-one window (stronger notion; information)", xc.get("pld_replace_one_epsilon"))]
    if _server_accounted(c):
        rows = rows[:4]
        rows[1] = (f"{xc['library']}: {xc.get('event')}", xc["epsilon"])
    out = ["| accountant | epsilon" + ("" if _server_accounted(c) else " (max over devices)") + " |", "|---|---:|"]
    out += [f"| {name} | {_num(v)} |" for name, v in rows]
    diff = xc.get("max_relative_difference")
    out.append("")
    which = "Difference" if _server_accounted(c) else "Largest per-device difference"
    out.append(f"{which} ours vs. dp_accounting RDP (same orders): {_num(diff, '.2%')} "
               f"(tolerance {xc.get('tolerance', 0.05):.0%}).")
    return out


def _empirical(audit: dict[str, Any]) -> list[str]:
    emp = audit.get("empirical")
    if emp is None:
        return ["Not run (pass `--empirical`)."]
    lines = _empirical_lines(emp)
    if emp.get("epsilon_estimate") is not None:
        lines.append(f"Gaussian-fit estimate of the same canary scores (Andrew et al. 2024; an estimate, not a "
                     f"bound, and not capped by the number of canaries): epsilon ~ {_num(emp['epsilon_estimate'])}.")
    return lines


def _empirical_lines(emp: dict[str, Any]) -> list[str]:
    mech = "infinite (no noise)" if emp.get("mechanism_epsilon") is None else _num(emp["mechanism_epsilon"])
    if emp.get("min_train_nodes") is not None:  # the distributed-noise audit (user or window unit)
        what, kind = ("devices", "canary-client") if emp.get("unit") == "user" else ("windows", "canary-window")
        return [f"One-run {kind} audit (Steinke, Nasr & Jagielski 2023) of one {emp.get('unit')}-level round at "
                f"sample rate 1 ({emp.get('design')} design{_WORST if emp.get('design') == 'worst-case' else ''}): "
                f"{emp.get('canaries')} canary {what} in dimension "
                f"{emp.get('dimension')}, each clipped to {emp.get('clip')}, {emp.get('guesses')} guesses, "
                f"{emp.get('correct')} correct.",
                f"Empirical lower bound: epsilon >= {_num(emp['epsilon_lower'])} at {emp['confidence']:.0%} "
                f"confidence; the accountant's epsilon of that round (one Gaussian step, noise multiplier "
                f"{emp.get('noise_multiplier')}) is {mech}."]
    return [f"One-run canary audit (Steinke, Nasr & Jagielski 2023) of the local training mechanism of device "
            f"{emp.get('device')}: {emp.get('canaries')} canary windows, {emp.get('guesses')} guesses, "
            f"{emp.get('correct')} correct.",
            f"Empirical lower bound: epsilon >= {_num(emp['epsilon_lower'])} at {emp['confidence']:.0%} confidence; "
            f"the accountant's epsilon for the audited training is {mech}."]


def _devices(d: dict[str, Any], title: str = "## Per-device epsilon") -> list[str]:
    stats = d["epsilon"]
    return [title, "", f"{d['count']} device ledgers ({d['trained']} trained).", "",
            "| min | median | p90 | max |", "|---:|---:|---:|---:|",
            "| " + " | ".join(_num(stats[k]) for k in ("min", "median", "p90", "max")) + " |", "",
            "```", histogram(d["values"]), "```", ""]


def _user_sections(audit: dict[str, Any]) -> list[str]:
    led, c = audit.get("user_ledger") or {}, audit["claimed"]
    level = "window" if c.get("mode") == "window" else "user"
    out = ["## Guarantee", "", user_guarantee_sentence(audit), *_dropouts(audit), "",
           f"## Server's {level}-level ledger", "",
           f"`{led.get('path')}`: {led.get('rounds')} rounds, epsilon {_num(led.get('epsilon'))} "
           f"(readable: {led.get('readable')}).", ""]
    ex = c.get("example")
    if ex is not None:
        out += ["Window-level claim of the device ledgers (example+user): "
                f"({_num(ex['epsilon'])}, {_num(ex['delta'], 'g')})-DP per training window, via {ex['mechanism']}; "
                f"dp_accounting RDP max over devices "
                f"{_num((audit['cross_check'].get('example') or {}).get('epsilon'))}.", ""]
        out += _devices(audit["devices"], "## Per-device window-level epsilon")
    return out


def render(audit: dict[str, Any], run_dir: Path) -> str:
    """The whole audit.md text."""
    log = audit["log"]
    log_line = ("not present, not checked" if log["verified"] is None else
                f"{'verified' if log['verified'] else 'FAILED'}: {log['rounds']} rounds"
                + (f" ({log['reason']})" if log["reason"] else ""))
    target = audit["claimed"].get("target_epsilon")
    head = (_user_sections(audit) if _server_accounted(audit["claimed"]) else
            ["## Guarantee", "", guarantee_sentence(audit), *_replace_one(audit), "", *_devices(audit["devices"])])
    lines = [f"# Privacy audit of `{run_dir}`", "", f"**Verdict: {audit['verdict']}**", "", *head,
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
