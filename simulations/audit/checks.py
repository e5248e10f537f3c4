"""The audit's individual checks, each returning its audit.json block plus the reasons it fails.

* :func:`check_ledgers`: per-device ε, budget violations, the claim against the ledgers, and the
  ``dp_accounting`` cross-check of every device (see :mod:`simulations.audit.crosscheck`);
* :func:`check_log`: the signed round log (see :mod:`server.round_log`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from server.round_log import key_fingerprint, verify_log
from shared_models.crypto import load_public_key
from shared_models.paths import run_keys_dir
from simulations.audit.crosscheck import REL_TOLERANCE, CrossCheck, cross_check, library_name, relative_difference
from simulations.audit.ledgers import EPS_MATCH_REL, Claim, DeviceLedger, LedgerScan

ROUND_LOG_NAME = "round_log.jsonl"
SERVER_VERIFY_KEY = Path("server") / "signing_ed25519.pub.pem"
MAX_LISTED = 5
"""At most this many devices are named per kind of failure (the count is always given)."""


@dataclass
class CheckResult:
    block: dict[str, Any]
    reasons: list[str] = field(default_factory=list)


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def epsilon_stats(values: list[float]) -> dict[str, float | None]:
    """min / median / p90 / max of the per-device ε (None when there are no devices)."""
    if not values:
        return {"min": None, "median": None, "p90": None, "max": None}
    arr = np.asarray(values, dtype=float)
    return {k: _finite(float(v)) for k, v in (("min", arr.min()), ("median", np.median(arr)),
                                              ("p90", np.percentile(arr, 90)), ("max", arr.max()))}


def _listed(items: list[str]) -> list[str]:
    if len(items) <= MAX_LISTED:
        return items
    return [*items[:MAX_LISTED], f"... and {len(items) - MAX_LISTED} more"]


def budget_violations(devices: list[DeviceLedger], target: float | None) -> list[str]:
    """One message per device whose ε exceeds its target (the run's target, else the ledger's own)."""
    out = []
    for dev in devices:
        limit = target if target is not None else dev.target_epsilon
        if limit is not None and dev.epsilon > limit * (1.0 + EPS_MATCH_REL):
            out.append(f"device {dev.device_id}: epsilon {dev.epsilon:.4g} exceeds the target {limit:g} ({dev.path})")
    return out


def _claim_reasons(claim: Claim, devices: list[DeviceLedger]) -> list[str]:
    out = []
    worst = max(devices, key=lambda d: d.epsilon, default=None)
    claimed = claim.epsilon if claim.epsilon is not None else 0.0
    if worst is not None and worst.epsilon > claimed * (1.0 + EPS_MATCH_REL):
        out.append(f"metrics.json claims epsilon {claimed:.4g} but device {worst.device_id}'s ledger "
                   f"spends {worst.epsilon:.4g}")
    trained = sum(1 for d in devices if d.rounds > 0)
    if trained != claim.devices_trained:
        out.append(f"metrics.json counts {claim.devices_trained} devices trained but devices/ holds "
                   f"{trained} ledgers with recorded rounds")
    return out


def _cross_check_reasons(claim: Claim, checks: dict[str, CrossCheck], library_eps: float) -> list[str]:
    tol = f"{REL_TOLERANCE:.0%}"
    bad = [f"device {d}: our epsilon {c.ours:.4g} vs {library_name()} RDP {c.rdp_same_orders:.4g} "
           f"(differ by {c.relative_difference:.1%} > {tol})" for d, c in checks.items() if not c.agrees]
    low = [f"device {d}: our epsilon {c.ours:.4g} is below the {library_name()} PLD upper bound {c.pld:.4g} "
           f"(understated)" for d, c in checks.items() if c.understated]
    out = _listed(bad) + _listed(low)
    if claim.epsilon is not None and relative_difference(claim.epsilon, library_eps) > REL_TOLERANCE:
        out.append(f"claimed epsilon {claim.epsilon:.4g} differs from the {library_name()} RDP epsilon "
                   f"{library_eps:.4g} by more than {tol}")
    return out


def check_ledgers(claim: Claim, scan: LedgerScan) -> tuple[CheckResult, CheckResult, int]:
    """(devices block, cross_check block, number of budget violations), each with its failure reasons."""
    devices = scan.devices
    violations = budget_violations(devices, claim.target_epsilon)
    checks = {d.device_id: cross_check(d.history, ours=d.epsilon, delta=d.delta, orders=d.orders) for d in devices}
    eps = [d.epsilon for d in devices]
    devices_block = {"count": len(devices), "trained": sum(1 for d in devices if d.rounds > 0),
                     "epsilon": epsilon_stats(eps), "values": [_finite(e) for e in eps]}
    lib = {k: max((getattr(c, k) for c in checks.values()), default=0.0)
           for k in ("rdp_same_orders", "rdp_library_orders", "pld", "pld_replace_one")}
    max_diff = max((c.relative_difference for c in checks.values()), default=0.0)
    xc_block = {"library": f"{library_name()} (RdpAccountant, same Renyi orders as the ledger)",
                "epsilon": _finite(lib["rdp_same_orders"]),
                "rdp_library_orders_epsilon": _finite(lib["rdp_library_orders"]),
                "pld_epsilon": _finite(lib["pld"]), "pld_replace_one_epsilon": _finite(lib["pld_replace_one"]),
                "max_relative_difference": _finite(max_diff), "tolerance": REL_TOLERANCE,
                "devices": {d: c.to_json() for d, c in checks.items()}}
    ledger_reasons = scan.problems + _listed(violations) + _claim_reasons(claim, devices)
    return (CheckResult(devices_block, ledger_reasons),
            CheckResult(xc_block, _cross_check_reasons(claim, checks, lib["rdp_same_orders"])), len(violations))


def default_verify_key_path(run_dir: Path, keys_dir: str | Path | None = None) -> Path:
    """The server's Ed25519 public key in ``keys_dir`` (the auditor's), else in ``RUN_DIR.keys`` beside the run.

    Never taken from the run's own config.json: whoever can edit the run could point it at a key of theirs
    (the edited config would then hash to a log re-signed with that key)."""
    return run_keys_dir(run_dir, str(keys_dir or "")) / SERVER_VERIFY_KEY


def check_log(run_dir: Path, *, required: bool, key_path: Path, expected_rounds: int | None,
              pinned_fingerprint: str | None = None) -> CheckResult:
    """Verify ``RUN_DIR/round_log.jsonl`` when it exists or is ``required``; a missing required log fails.

    ``pinned_fingerprint``: the SHA-256 of the server's raw public key as the auditor knows it from outside
    the run directory; a key with another fingerprint fails (a log re-signed with a swapped key). Without it,
    a verify key inside the run directory fails (``key_inside_run_dir``): whoever can edit the run could have
    re-signed the log with a key of theirs and put its public half there."""
    path = run_dir / ROUND_LOG_NAME
    inside = key_path.resolve().is_relative_to(run_dir.resolve())
    block: dict[str, Any] = {"verified": None, "rounds": 0, "path": str(path), "key": str(key_path), "reason": "",
                             "key_fingerprint": None, "key_pinned": bool(pinned_fingerprint),
                             "key_inside_run_dir": inside}
    if not path.exists():
        block["reason"] = "no round log"
        if not required:
            return CheckResult(block)
        block["verified"] = False
        return CheckResult(block, [f"--verify-log: {path} does not exist"])
    try:
        key = load_public_key(key_path, Ed25519PublicKey)
    except (OSError, ValueError, TypeError) as exc:
        block.update(verified=False, reason=f"cannot load the server verify key {key_path}: {exc} (a run whose "
                                            "keys live elsewhere, he.keys_dir: pass --keys-dir or --verify-key)")
        return CheckResult(block, [block["reason"]])
    block["key_fingerprint"] = fingerprint = key_fingerprint(key)
    if inside and not pinned_fingerprint:
        block.update(verified=False, reason=f"the verify key {key_path} lies inside the run directory it is to "
                                            "verify and no --key-fingerprint pins it: whoever edited the run could "
                                            "have re-signed the log; use the key kept outside (RUN_DIR.keys or "
                                            "--keys-dir) or pin its fingerprint")
        return CheckResult(block, [block["reason"]])
    if pinned_fingerprint and fingerprint != pinned_fingerprint.strip().lower():
        block.update(verified=False, reason=f"the verify key {key_path} has fingerprint {fingerprint}, not the "
                                            f"pinned {pinned_fingerprint} (the log was signed by another key)")
        return CheckResult(block, [block["reason"]])
    result = verify_log(path, key, expected_rounds=expected_rounds)
    block.update(verified=result.ok, rounds=result.rounds, reason=result.reason)
    return CheckResult(block, [] if result.ok else [f"round log does not verify: {result.reason}"])
