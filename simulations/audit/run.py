"""``fedinterest audit RUN_DIR``: check a simulation run's privacy claim; write audit.json and audit.md.

The verdict is FAIL when any of these holds (each adds a reason):

* the run has no DP (``privacy.mode = none``);
* a device ledger is unreadable, inconsistent with itself or with the claim, or exceeds ``target_epsilon``;
* ``metrics.json`` claims less than a ledger spends, or miscounts the trained devices;
* ``dp_accounting`` (RDP, same orders) differs from our accountant by more than 5% on any device, or its
  PLD upper bound is more than 5% above our ε (our claim understated);
* the round log (when ``RUN_DIR/round_log.jsonl`` exists, or ``verify_log`` is asked) does not verify, its
  verify key is not the one pinned by ``key_fingerprint``, or that key lies inside the run directory unpinned;
* the verified log disagrees with the run (:mod:`simulations.audit.consistency`): config.json does not hash to
  the logged ``config_hash``, or the device ledgers do not charge the rounds the log counts (a ledger deleted
  or rebuilt, the log's tail cut);
* the empirical lower bound (``empirical=True``) exceeds the accountant's ε of the audited mechanism.

User-level runs (``privacy.mode = user | example+user``, claim unit ``user``; :mod:`simulations.audit.user`)
and window-level distributed DP-SGD runs (``privacy.mode = window``, claim unit ``window``, same server ledger)
replace the device-ledger checks by the server's ledger ``RUN_DIR/server/user_ledger.json`` (consistent with
itself and the claim's z, q, steps and ε; within ``user_target_epsilon``), cross-check the claim with
``dp_accounting`` on ``SelfComposed(PoissonSampled(q, Gaussian(z)), steps)``, and check every verified
round-log line's noise record and that no round with fewer than ``min_train_nodes`` valid updates released a
new aggregate; ``example+user`` also runs every window-level device check against ``privacy.example``. The
empirical audit is then the canary-client audit of one round (:mod:`simulations.audit.empirical_user`).

audit.json::

    {"verdict": "PASS"|"FAIL", "reasons": [...],
     "claimed": {"epsilon", "delta", "unit", "mechanism", "accountant", "target_epsilon"},
     "cross_check": {"library", "epsilon", "pld_epsilon", ...}, "empirical": {...} | null,
     "log": {"verified", "rounds", ...}, "consistency": {...}, "budget_violations": int, "devices": {...},
     user modes also: "user_ledger": {...}, "user_log": {...}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from simulations.audit.checks import ROUND_LOG_NAME, CheckResult, check_ledgers, check_log, default_verify_key_path
from simulations.audit.consistency import check_consistency
from simulations.audit.ledgers import Claim, LedgerScan, read_claim, read_json, scan_ledgers
from simulations.audit.report import render
from simulations.audit.user import (check_user_crosscheck, check_user_ledger, check_user_log,
                                     initial_aggregate_sha, user_guarantee_ok)

AUDIT_JSON = "audit.json"
AUDIT_MD = "audit.md"
DEFAULT_CONFIDENCE = 0.95


def _claimed(claim: Claim) -> dict[str, Any]:
    finite = claim.epsilon is not None and math.isfinite(claim.epsilon)
    private = claim.private
    out = {"epsilon": claim.epsilon if private and finite else None, "delta": claim.delta if private else None,
           "unit": claim.unit, "mechanism": claim.mechanism, "accountant": claim.accountant if private else None,
           "target_epsilon": claim.target_epsilon, "mode": claim.mode}
    if claim.server_accounted:
        out.update(noise_multiplier=claim.noise_multiplier, clip=claim.max_grad_norm, sample_rate=claim.sample_rate,
                   steps=claim.steps, min_train_nodes=claim.min_train_nodes,
                   example=_claimed(claim.example) if claim.example is not None else None)
    return out


def _empirical_block(run_dir: Path, config: dict[str, Any], claim: Claim, confidence: float,
                     ) -> tuple[dict[str, Any] | None, list[str]]:
    if claim.server_accounted:
        from simulations.audit.empirical_user import empirical_user_from_config

        result = empirical_user_from_config(config, delta=claim.delta or 1e-5, confidence=confidence)
        what = f"one {claim.unit}-level round (devices' clipping and noise are not doing what is claimed)"
    else:
        from simulations.audit.empirical import empirical_audit  # torch + model imports only when asked

        result = empirical_audit(config, delta=claim.delta, private=claim.private, confidence=confidence)
        what = "training (DP-SGD is not doing what is claimed)"
    block = result.to_json()
    if claim.private and result.epsilon_lower > result.mechanism_epsilon:
        return block, [f"empirical lower bound {result.epsilon_lower:.4g} exceeds the accountant's epsilon "
                       f"{result.mechanism_epsilon:.4g} for the audited {what}"]
    return block, []


def _preliminary(claim: Claim, config: dict[str, Any]) -> list[str]:
    reasons = []
    if not claim.private:
        reasons.append("privacy.mode is 'none': the run makes no differential-privacy claim")
    elif claim.epsilon is None or not math.isfinite(claim.epsilon):
        reasons.append(f"metrics.json claims no finite epsilon ({claim.epsilon!r})")
    elif claim.server_accounted and not user_guarantee_ok(claim):
        reasons.append(f"metrics.json's {claim.unit}-level claim lacks a valid sample rate or min_train_nodes "
                       f"(q={claim.sample_rate!r}, min_train_nodes={claim.min_train_nodes!r})")
    if claim.private and config.get("privacy", {}).get("reproducible_noise"):
        reasons.append("privacy.reproducible_noise is on: the DP noise was seeded from public values, so anyone "
                       "who knows the seed can subtract it (testing setting, not private)")
    return reasons


def _example_checks(run: Path, claim: Claim | None) -> tuple[CheckResult, CheckResult, int]:
    """The per-device window-level checks (example mode, or the example part of example+user)."""
    scan = scan_ledgers(run, claim) if claim is not None and claim.private else LedgerScan()
    return check_ledgers(claim or Claim("none", None, None, None, None, 0.0, None, "rdp", 0), scan)


def _user_checks(run: Path, config: dict[str, Any], claim: Claim, log_ok: bool
                 ) -> tuple[dict[str, Any], list[str], int]:
    """(audit.json additions, reasons, budget violations) of the user-level claim."""
    led_check, led, violations = check_user_ledger(run, claim)
    xc = check_user_crosscheck(claim, led)
    log = check_user_log(run, claim, log_ok=log_ok, ledger_rounds=led_check.block["round_ids"],
                         initial_sha=lambda: initial_aggregate_sha(config))
    devices, ex_xc, ex_violations = _example_checks(run, claim.example)
    xc.block["example"] = ex_xc.block if claim.example is not None else None
    blocks = {"cross_check": xc.block, "user_ledger": led_check.block, "user_log": log.block,
              "devices": devices.block}
    reasons = led_check.reasons + xc.reasons + log.reasons
    if claim.example is not None:
        reasons += [f"window-level (device ledgers): {r}" for r in devices.reasons + ex_xc.reasons]
    return blocks, reasons, violations + ex_violations


def audit_run(run_dir: str | Path, *, verify_log: bool = False, empirical: bool = False,
              verify_key: str | Path | None = None, confidence: float = DEFAULT_CONFIDENCE,
              key_fingerprint: str | None = None, keys_dir: str | Path | None = None) -> dict[str, Any]:
    """Audit ``run_dir``; write ``audit.json`` and ``audit.md`` there; return the audit.json dict.

    The round log's verify key: ``verify_key``, else ``server/signing_ed25519.pub.pem`` of ``keys_dir``, else of
    ``RUN_DIR.keys`` beside the run (never a location the run itself names).
    Raises :class:`simulations.audit.ledgers.RunDirError` (naming the file) when config.json or
    metrics.json is missing or unreadable.
    """
    run = Path(run_dir)
    config = read_json(run / "config.json")
    metrics = read_json(run / "metrics.json")
    claim = read_claim(metrics, run / "metrics.json")
    reasons = _preliminary(claim, config)
    key_path = Path(verify_key) if verify_key else default_verify_key_path(run, keys_dir)
    rounds = metrics.get("rounds")
    log = check_log(run, required=verify_log, key_path=key_path,
                    expected_rounds=rounds if isinstance(rounds, int) else None, pinned_fingerprint=key_fingerprint)
    if claim.server_accounted:
        blocks, check_reasons, violations = _user_checks(run, config, claim, bool(log.block["verified"]))
    else:
        devices, xc, violations = _example_checks(run, claim)
        if not claim.private:
            xc.block.update({k: None for k in xc.block if k.endswith("epsilon") or k == "max_relative_difference"})
        blocks, check_reasons = {"cross_check": xc.block, "devices": devices.block}, devices.reasons + xc.reasons
    window_claim = claim.example if claim.server_accounted else claim
    scan = scan_ledgers(run, window_claim) if window_claim is not None and window_claim.private else None
    consistency = check_consistency(run / ROUND_LOG_NAME, config, scan, log_verified=bool(log.block["verified"]))
    emp_block, emp_reasons = _empirical_block(run, config, claim, confidence) if empirical else (None, [])
    reasons += check_reasons + log.reasons + consistency.reasons + emp_reasons
    audit = {"verdict": "FAIL" if reasons else "PASS", "reasons": reasons, "claimed": _claimed(claim),
             "cross_check": blocks.pop("cross_check"), "empirical": emp_block, "log": log.block,
             "consistency": consistency.block,
             "budget_violations": violations, **blocks}
    (run / AUDIT_JSON).write_text(json.dumps(audit, indent=2, allow_nan=False))
    (run / AUDIT_MD).write_text(render(audit, run))
    return audit
