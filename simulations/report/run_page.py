"""``RUN_DIR/report.html``: one federated run on one self-contained page.

Sections (their ids): config, headline (test metrics beside popularity and a non-private reference),
learning-curves, privacy (epsilon over rounds, per-device histogram), participation, cost, audit.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from simulations.report import figures
from simulations.report.baselines import cached_popularity, reference_metrics
from simulations.report.html import details, image, note, page, preformatted, section, table
from simulations.report.rundata import RunData, config_brief, load_run
from simulations.sweep.summary import REPORTED_METRICS

REPORT_FILE = "report.html"
RUN_SECTIONS = ("config", "headline", "learning-curves", "privacy", "participation", "cost", "audit")


def run_report(run_dir: Path, *, reference: Path | None = None, popularity: bool = True) -> str:
    """The page's HTML for ``run_dir``."""
    run = load_run(run_dir)
    title = f"fedinterest run {Path(run_dir).resolve().name}"
    target = (run.metrics or {}).get("privacy", {}).get("target_epsilon") or run.config.get("privacy", {}).get(
        "target_epsilon")
    if run.config.get("privacy", {}).get("mode") == "none":
        target = None
    return page(title, [
        section("config", "Configuration", table(["setting", "value"], [list(r) for r in config_brief(run.config)]),
                details("full config.json", preformatted(json.dumps(run.config, indent=1)))),
        _headline(run, reference, popularity),
        section("learning-curves", "Learning curves",
                image(figures.learning_curves(run.history), "training loss and validation metrics per round",
                      "no history.csv rows yet" if not run.rounds else "nothing to draw: devices report no loss "
                      "under secure aggregation and no round was validated (federated.eval-every = 0)")),
        section("privacy", "Privacy spent",
                image(figures.epsilon_rounds(run.history, target), "epsilon over rounds",
                      "no epsilon spent (privacy.mode = none, or no round recorded)"),
                image(figures.epsilon_histogram(run.device_epsilons, target), "per-device epsilon histogram",
                      "no device ledgers under devices/*/ledger.json (user-level runs keep one server ledger)")),
        section("participation", "Participation and rejections",
                image(figures.participation(run.history), "devices per round by outcome", "no rounds recorded"),
                _rejections(run)),
        section("cost", "Cost per round",
                image(figures.cost(run.history, update_bytes(run)), "wall time and bytes per round",
                      "no rounds recorded"), _masking(run)),
        _audit(run),
    ])


def write_run_report(run_dir: Path, *, out: Path | None = None, reference: Path | None = None,
                     popularity: bool = True) -> Path:
    path = Path(out) if out else Path(run_dir) / REPORT_FILE
    text = run_report(run_dir, reference=reference, popularity=popularity)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _headline(run: RunData, reference: Path | None, popularity: bool) -> str:
    rows: list[list[Any]] = []
    notes = []
    if run.metrics is not None:
        p = run.metrics.get("privacy", {})
        rows.append(["this run (federated)", *(run.metrics["metrics"].get(m) for m in REPORTED_METRICS),
                     p.get("epsilon") if p.get("epsilon") is not None else float("inf")])
        notes.append(f"{run.metrics.get('rounds')} rounds, {run.metrics.get('evaluated_devices')} devices tested, "
                     f"wall time {run.metrics.get('timing', {}).get('wall_s')} s")
    else:
        notes.append("no metrics.json: the run has not finished")
    if popularity:
        pop, why = cached_popularity(run.run_dir, run.config)
        if pop is not None:
            rows.append(["popularity", *(pop.get(m) for m in REPORTED_METRICS), float("inf")])
        notes.append(why)
    if reference is not None:
        ref, what = reference_metrics(reference)
        rows.append([f"reference: {what}", *(ref.get(m) for m in REPORTED_METRICS), float("inf")])
    else:
        notes.append("no non-private reference given (--reference METRICS_JSON, e.g. a train-central result)")
    return section("headline", "Headline metrics (test, full ranking)",
                   table(["", *REPORTED_METRICS, "epsilon"], rows), *(note(n) for n in notes))


def _rejections(run: RunData) -> str:
    listed = ((run.metrics or {}).get("he") or {}).get("rejections") or []
    if not listed:
        total = int(np.nansum(run.history.get("rejected", []))) if run.history else 0
        return note(f"{total} updates rejected by the server")
    return table(["round", "node", "reason"], [[r["round"], r["node"], r["reason"]] for r in listed])


def _masking(run: RunData) -> str:
    """Pairwise masks (he.masking): their settings and what they cost over the run."""
    he = (run.metrics or {}).get("he") or {}
    m = he.get("masking") or {}
    if not he.get("enabled"):
        return ""
    if not m.get("enabled"):
        return note("no pairwise masks (he.masking = false): a device holding the CKKS key could read single updates")
    rows = [["neighbours / threshold", f"{m.get('neighbours')} / {m.get('threshold')}"],
            ["rounds unmasked / set up", f"{m.get('unmasked')} / {m.get('rounds')}"],
            ["sampled devices left out by the key exchange", m.get("not_ready")],
            ["masking bytes per device and round", round(float(m.get("mask_bytes_per_device_round") or 0.0))],
            ["server seconds: key exchange / unmasking", f"{m.get('prepare_s', 0.0):.1f} / {m.get('unmask_s', 0.0):.1f}"]]
    return table(["pairwise masks", "value"], rows)


def update_bytes(run: RunData) -> float:
    """Bytes of one update: the CKKS payload (metrics.json he) or the plaintext shared model's arrays."""
    he = (run.metrics or {}).get("he") or {}
    if he.get("enabled"):
        return float(he.get("bytes_per_update") or 0.0)
    npz = run.run_dir / "global_shared.npz"
    if npz.is_file():
        with np.load(npz) as arrays:
            return float(sum(arrays[k].nbytes for k in arrays.files))
    return 0.0


def _audit(run: RunData) -> str:
    a = run.audit
    if a is None:
        return section("audit", "Audit", note(f"no audit.json: run `fedinterest audit {run.run_dir}`"))
    verdict = str(a.get("verdict"))
    css = "pass" if verdict == "PASS" else "fail"
    claimed = a.get("claimed") or {}
    cross = a.get("cross_check") or {}
    rows = [["claimed epsilon", claimed.get("epsilon")], ["delta", claimed.get("delta")],
            ["unit", claimed.get("unit")], ["cross-check epsilon", cross.get("epsilon")],
            ["budget violations", a.get("budget_violations")]]
    emp = a.get("empirical") or {}
    if emp:
        rows.append(["empirical lower bound", emp.get("epsilon_lower")])
    reasons = "".join(f"<li>{escape(str(r))}</li>" for r in (a.get("reasons") or []))
    return section("audit", "Audit", f'<p>verdict: <span class="{css}">{escape(verdict)}</span></p>',
                   table(["", "value"], rows), f"<ul>{reasons}</ul>" if reasons else "")
