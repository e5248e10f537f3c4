"""``fedinterest audit RUN_DIR``: check a simulation run's privacy claim; write audit.json and audit.md.

The verdict is FAIL when any of these holds (each adds a reason):

* the run has no DP (``privacy.mode = none``);
* a device ledger is unreadable, inconsistent with itself or with the claim, or exceeds ``target_epsilon``;
* ``metrics.json`` claims less than a ledger spends, or miscounts the trained devices;
* ``dp_accounting`` (RDP, same orders) differs from our accountant by more than 5% on any device, or its
  PLD upper bound is more than 5% above our ε (our claim understated);
* the round log (when ``RUN_DIR/round_log.jsonl`` exists, or ``verify_log`` is asked) does not verify;
* the empirical lower bound (``empirical=True``) exceeds the accountant's ε of the audited mechanism.

audit.json::

    {"verdict": "PASS"|"FAIL", "reasons": [...],
     "claimed": {"epsilon", "delta", "unit", "mechanism", "accountant", "target_epsilon"},
     "cross_check": {"library", "epsilon", "pld_epsilon", ...}, "empirical": {...} | null,
     "log": {"verified", "rounds", ...}, "budget_violations": int, "devices": {...}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from simulations.audit_checks import check_ledgers, check_log, default_verify_key_path
from simulations.audit_ledgers import Claim, LedgerScan, read_claim, read_json, scan_ledgers
from simulations.audit_report import render

AUDIT_JSON = "audit.json"
AUDIT_MD = "audit.md"
DEFAULT_CONFIDENCE = 0.95


def _claimed(claim: Claim) -> dict[str, Any]:
    finite = claim.epsilon is not None and math.isfinite(claim.epsilon)
    private = claim.private
    return {"epsilon": claim.epsilon if private and finite else None, "delta": claim.delta if private else None,
            "unit": claim.unit, "mechanism": claim.mechanism, "accountant": claim.accountant if private else None,
            "target_epsilon": claim.target_epsilon, "mode": claim.mode}


def _empirical_block(run_dir: Path, config: dict[str, Any], claim: Claim, confidence: float,
                     ) -> tuple[dict[str, Any] | None, list[str]]:
    from simulations.audit_empirical import empirical_audit  # torch + model imports only when asked

    result = empirical_audit(config, delta=claim.delta, private=claim.private, confidence=confidence)
    block = result.to_json()
    if claim.private and result.epsilon_lower > result.mechanism_epsilon:
        return block, [f"empirical lower bound {result.epsilon_lower:.4g} exceeds the accountant's epsilon "
                       f"{result.mechanism_epsilon:.4g} for the audited training (DP-SGD is not doing what is claimed)"]
    return block, []


def audit_run(run_dir: str | Path, *, verify_log: bool = False, empirical: bool = False,
              verify_key: str | Path | None = None, confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
    """Audit ``run_dir``; write ``audit.json`` and ``audit.md`` there; return the audit.json dict.

    Raises :class:`simulations.audit_ledgers.RunDirError` (naming the file) when config.json or
    metrics.json is missing or unreadable.
    """
    run = Path(run_dir)
    config = read_json(run / "config.json")
    metrics = read_json(run / "metrics.json")
    claim = read_claim(metrics, run / "metrics.json")
    reasons: list[str] = []
    if not claim.private:
        reasons.append("privacy.mode is 'none': the run makes no differential-privacy claim")
    elif claim.epsilon is None or not math.isfinite(claim.epsilon):
        reasons.append(f"metrics.json claims no finite epsilon ({claim.epsilon!r})")
    if claim.private and config.get("privacy", {}).get("reproducible_noise"):
        reasons.append("privacy.reproducible_noise is on: the DP noise was seeded from public values, so anyone "
                       "who knows the seed can subtract it (testing setting, not private)")
    scan = scan_ledgers(run, claim) if claim.private else LedgerScan()
    devices, xc, violations = check_ledgers(claim, scan)
    key_path = Path(verify_key) if verify_key else default_verify_key_path(run, config)
    rounds = metrics.get("rounds")
    log = check_log(run, required=verify_log, key_path=key_path,
                    expected_rounds=rounds if isinstance(rounds, int) else None)
    emp_block, emp_reasons = _empirical_block(run, config, claim, confidence) if empirical else (None, [])
    if not claim.private:
        xc.block.update({k: None for k in xc.block if k.endswith("epsilon") or k == "max_relative_difference"})
    reasons += devices.reasons + xc.reasons + log.reasons + emp_reasons
    audit = {"verdict": "FAIL" if reasons else "PASS", "reasons": reasons, "claimed": _claimed(claim),
             "cross_check": xc.block, "empirical": emp_block, "log": log.block,
             "budget_violations": violations, "devices": devices.block}
    (run / AUDIT_JSON).write_text(json.dumps(audit, indent=2, allow_nan=False))
    (run / AUDIT_MD).write_text(render(audit, run))
    return audit
