"""The audit's checks of a server-accounted claim (``privacy.mode = user | example+user``, unit user, and
``privacy.mode = window``, unit window: the same server ledger), each with its failure reasons.

* :func:`check_user_ledger`: the server's ledger ``RUN_DIR/server/user_ledger.json`` against itself (rows vs.
  the stored ε, delta, unit, target) and against the claim in ``metrics.json`` (same z and q on every row,
  one step per round, as many rounds as ``steps``, the same ε), and the budget ``user_target_epsilon``;
* :func:`check_user_crosscheck`: the claim's ε recomputed by ``dp_accounting`` from the claim's own
  (q, z, steps): ``SelfComposed(PoissonSampled(q, Gaussian(z)), steps)``;
* :func:`check_user_log`: every signed round-log line's noise record against the claim, every logged round
  accounted in the ledger, and no new aggregate released by a round with fewer than ``min_train_nodes``
  valid updates (the distributed noise needs that many contributors).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from shared_models.privacy import LedgerError
from shared_models.privacy.rdp import DEFAULT_ORDERS
from simulations.audit.checks import CheckResult, _finite
from simulations.audit.crosscheck import REL_TOLERANCE, cross_check, library_name
from simulations.audit.ledgers import (EPS_MATCH_REL, Claim, DeviceLedger, RunDirError, _close, _consistency,
                                       _open_ledger)

USER_LEDGER = Path("server") / "user_ledger.json"


def _open(run_dir: Path) -> tuple[DeviceLedger | None, str]:
    path = run_dir / USER_LEDGER
    if not path.exists():
        return None, f"{path}: the server's user-level ledger is missing"
    try:
        return _open_ledger(path), ""
    except (LedgerError, RunDirError) as exc:
        return None, f"unreadable user-level ledger: {exc}"


def _rows_vs_claim(led: DeviceLedger, claim: Claim) -> list[str]:
    """Each row against the claim: the popularity prior's release first when the claim has one (z_prior, q=1,
    one step), then one (z, q, one step) row per round."""
    out = []
    z, q = claim.noise_multiplier, claim.sample_rate
    history = list(led.history)
    if claim.prior_noise_multiplier is not None:
        first = history.pop(0) if history else None
        if first is None or not _close(first[0], claim.prior_noise_multiplier) or first[1] != 1.0 or first[2] != 1:
            out.append(f"{led.path}: row 1 records {first} but the claim's popularity prior is "
                       f"(z={claim.prior_noise_multiplier:g}, q=1, one step)")
    offset = len(led.history) - len(history)
    for i, (sigma, rate, steps) in enumerate(history, start=1 + offset):
        if not _close(sigma, z) or q is None or not _close(rate, float(q)) or steps != 1:
            out.append(f"{led.path}: row {i} records (z={sigma:g}, q={rate:g}, steps={steps}) but the claim is "
                       f"(z={z:g}, q={q}, one step per round)")
            break
    if led.rounds - offset != claim.steps:
        out.append(f"{led.path}: {led.rounds - offset} rounds recorded but metrics.json claims {claim.steps} steps")
    claimed = claim.epsilon if claim.epsilon is not None else 0.0
    if led.epsilon > claimed * (1.0 + EPS_MATCH_REL):
        out.append(f"metrics.json claims {claim.unit}-level epsilon {claimed:.4g} but the server's ledger spends "
                   f"{led.epsilon:.4g}")
    elif not _close(claimed, led.epsilon):
        out.append(f"metrics.json claims {claim.unit}-level epsilon {claimed:.4g} but the server's ledger gives "
                   f"{led.epsilon:.4g}")
    return out


def check_user_ledger(run_dir: Path, claim: Claim) -> tuple[CheckResult, DeviceLedger | None, int]:
    """(user_ledger block, the ledger or None, budget violations 0/1)."""
    led, problem = _open(run_dir)
    block: dict[str, Any] = {"path": str(run_dir / USER_LEDGER), "readable": led is not None, "epsilon": None,
                             "recorded_epsilon": None, "rounds": 0, "round_ids": [], "target_epsilon": None}
    if led is None:
        return CheckResult(block, [problem]), None, 0
    rows = json.loads(led.path.read_text())["rounds"]
    block.update(epsilon=_finite(led.epsilon), recorded_epsilon=led.recorded_epsilon, rounds=led.rounds,
                 round_ids=[int(r["round"]) for r in rows], target_epsilon=led.target_epsilon,
                 history=[list(h) for h in led.history])
    reasons = _consistency(led, claim) + _rows_vs_claim(led, claim)
    limit = claim.target_epsilon if claim.target_epsilon is not None else led.target_epsilon
    violations = 0
    if limit is not None and led.epsilon > limit * (1.0 + EPS_MATCH_REL):
        violations = 1
        reasons.append(f"{claim.unit}-level epsilon {led.epsilon:.4g} exceeds the target {limit:g} ({led.path})")
    return CheckResult(block, reasons), led, violations


def check_user_crosscheck(claim: Claim, led: DeviceLedger | None) -> CheckResult:
    """dp_accounting on the claim's (q, z, steps): RDP (same orders) within 5%, PLD not > 5% above the claim."""
    steps, q = claim.steps or 0, float(claim.sample_rate or 0.0)
    ours = claim.epsilon if claim.epsilon is not None else 0.0
    orders = led.orders if led is not None and led.orders else list(DEFAULT_ORDERS)
    events = [(claim.prior_noise_multiplier, 1.0, 1)] if claim.prior_noise_multiplier is not None else []
    events += [(claim.noise_multiplier, q, steps)] if steps else []
    xc = cross_check(events, ours=ours, delta=claim.delta or 1e-5, orders=orders)
    block = {"library": f"{library_name()} (RdpAccountant, same Renyi orders as the ledger)",
             "event": _event_words(claim, q=q, steps=steps),
             "epsilon": _finite(xc.rdp_same_orders), "rdp_library_orders_epsilon": _finite(xc.rdp_library_orders),
             "pld_epsilon": _finite(xc.pld), "pld_replace_one_epsilon": None,
             "max_relative_difference": _finite(xc.relative_difference), "tolerance": REL_TOLERANCE,
             "user": xc.to_json()}
    lib, reasons = library_name(), []
    if not xc.agrees:
        reasons.append(f"claimed {claim.unit}-level epsilon {ours:.4g} differs from the {lib} RDP epsilon "
                       f"{xc.rdp_same_orders:.4g} by {xc.relative_difference:.1%} (> {REL_TOLERANCE:.0%})")
    if xc.understated:
        reasons.append(f"claimed {claim.unit}-level epsilon {ours:.4g} is below the {lib} PLD upper bound {xc.pld:.4g} "
                       f"(understated)")
    return CheckResult(block, reasons)


def _event_words(claim: Claim, *, q: float, steps: int) -> str:
    """The dp_accounting event the cross-check composed, in its own notation (the prior's release first)."""
    rounds = f"SelfComposed(PoissonSampled({q:.6g}, Gaussian({claim.noise_multiplier:g})), {steps})"
    if claim.prior_noise_multiplier is None:
        return rounds
    return f"Composed([Gaussian({claim.prior_noise_multiplier:g}), {rounds}])"


def _log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in path.read_bytes().split(b"\n") if raw.strip()]


def _noise_mismatch(noise: dict[str, Any], claim: Claim) -> str:
    if claim.window_level:  # the devices' per-window clip and noise multiplier (server/run_log.noise_record)
        want = {"noise_multiplier": claim.noise_multiplier, "max_grad_norm": claim.max_grad_norm,
                "min_train_nodes": claim.min_train_nodes, "mode": claim.mode}
    else:
        want = {"user_noise_multiplier": claim.noise_multiplier, "user_clip": claim.max_grad_norm,
                "min_train_nodes": claim.min_train_nodes, "mode": claim.mode}
    bad = [f"{k}={noise.get(k)!r} (claim {v!r})" for k, v in want.items()
           if not (noise.get(k) == v or (isinstance(v, float) and isinstance(noise.get(k), (int, float))
                                         and _close(float(noise[k]), v)))]
    return ", ".join(bad)


def initial_aggregate_sha(config: dict[str, Any]) -> str | None:
    """The aggregate hash before round 1: None under HE (no sum yet), else the initial plaintext model's
    (rebuilt from the run's config and data); :data:`UNKNOWN` when the data cannot be loaded."""
    if config.get("he", {}).get("enabled"):
        return None
    try:
        from server.round_log import aggregate_sha256
        from shared_models.config import build_config
        from shared_models.datasets.population import population
        from shared_models.model.state import initial_shared

        cfg = build_config(config)
        pop = population(cfg)
        return aggregate_sha256(initial_shared(cfg, pop.num_items, pop.text))
    except Exception:  # noqa: BLE001 - data moved or unreadable: the first round's gating stays unchecked
        return UNKNOWN


UNKNOWN = "unknown"


def _before_first(lines: list[dict[str, Any]], mtn: int, initial_sha: Callable[[], str | None]) -> str | None:
    """The aggregate hash before round 1, looked up only when round 1 itself is below ``mtn``."""
    if not lines or int(lines[0].get("valid", 0)) >= mtn:
        return lines[0].get("aggregate_sha256") if lines else None
    return initial_sha()


def check_user_log(run_dir: Path, claim: Claim, *, log_ok: bool, ledger_rounds: list[int],
                   initial_sha: Callable[[], str | None] = lambda: None) -> CheckResult:
    """Noise records, accounting and min_train_nodes gating of a round log that verified (``log_ok``).

    ``initial_sha()``: the aggregate hash before round 1, asked only when round 1 had fewer than
    ``min_train_nodes`` valid updates (see :func:`initial_aggregate_sha`)."""
    path = run_dir / "round_log.jsonl"
    block: dict[str, Any] = {"checked": False, "noise_mismatches": 0, "released_below_min": [],
                             "unaccounted_rounds": []}
    if not log_ok or not path.exists():
        return CheckResult(block)
    lines, reasons = _log_lines(path), []
    mtn = claim.min_train_nodes or 1
    prev = _before_first(lines, mtn, initial_sha)
    block["first_round_checked"] = prev != UNKNOWN
    for line in lines:
        rnd, why = line["round"], _noise_mismatch(line.get("noise") or {}, claim)
        if why:
            block["noise_mismatches"] += 1
            reasons.append(f"round log round {rnd}: noise record differs from the claim: {why}")
        sha = line.get("aggregate_sha256")
        if sha != prev and prev != UNKNOWN and int(line.get("valid", 0)) < mtn:
            block["released_below_min"].append(rnd)
            reasons.append(f"round log round {rnd}: a new aggregate was released from {line.get('valid')} valid "
                           f"updates, fewer than min_train_nodes={mtn} (its noise is below the claim)")
        prev = sha
    block["unaccounted_rounds"] = sorted({ln["round"] for ln in lines} - set(ledger_rounds))
    if block["unaccounted_rounds"]:
        reasons.append(f"round log rounds {block['unaccounted_rounds']} are not in the server's user-level ledger")
    block["checked"] = True
    return CheckResult(block, reasons[:8] + ([f"... and {len(reasons) - 8} more"] if len(reasons) > 8 else []))


def user_guarantee_ok(claim: Claim) -> bool:
    """Whether the claim names a usable user-level mechanism (finite ε, q in (0, 1], a contributor floor)."""
    q = claim.sample_rate
    return (claim.epsilon is not None and math.isfinite(claim.epsilon) and q is not None and 0 < q <= 1
            and (claim.min_train_nodes or 0) >= 1)
