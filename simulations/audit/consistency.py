"""Cross-checks of a run directory against its verified, signed round log (``server/round_log.py``).

Run only once the log verified (its lines are then the server's own record):

* the config: every line's ``config_hash`` must be the SHA-256 of ``config.json``'s canonical JSON, so an
  edited config (e.g. a lowered noise multiplier) fails;
* the device ledgers (window-level DP): every valid update of round r came from a device that charged its
  ledger for r, and only sampled devices train, so ``valid_r <= ledgers charging r <= sampled_r``; where the
  line names its ``contributors`` (the devices whose updates the released aggregate holds), each of them
  must have a ledger charging r (the counts alone leave slack when updates were rejected); a ledger that
  charges a round the log does not have means the log lost its tail. A deleted ledger, a ledger rebuilt
  without its last round, or a dropped last log line each break one of these.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from server.round_log import config_hash
from shared_models.paths import device_dir_name
from simulations.audit.checks import CheckResult
from simulations.audit.ledgers import LedgerScan

MAX_ROUNDS_NAMED = 5


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in path.read_bytes().split(b"\n") if raw.strip()]


def check_consistency(log_path: Path, config: dict[str, Any], scan: LedgerScan | None, *,
                      log_verified: bool) -> CheckResult:
    """The config digest and the per-round ledger counts against the verified log."""
    block: dict[str, Any] = {"checked": bool(log_verified), "config_hash_matches": None, "ledger_rounds": None}
    if not log_verified:
        return CheckResult(block)
    lines = _lines(log_path)
    reasons = []
    want = config_hash(config)
    edited = [line["round"] for line in lines if line.get("config_hash") != want]
    block["config_hash_matches"] = not edited
    if edited:
        reasons.append(f"config.json does not hash to the config_hash the signed round log records (rounds "
                       f"{edited[:MAX_ROUNDS_NAMED]}): the config was changed after the run")
    if scan is not None and scan.devices:
        reasons += _ledger_reasons(lines, scan, block)
    return CheckResult(block, reasons)


def _ledger_reasons(lines: list[dict[str, Any]], scan: LedgerScan, block: dict[str, Any]) -> list[str]:
    charged = Counter(r for dev in scan.devices for r in dev.round_ids)
    logged = {int(line["round"]): line for line in lines}
    block["ledger_rounds"] = {str(r): charged.get(r, 0) for r in sorted(logged)}
    out = []
    few = [f"round {r}: {int(line['valid'])} valid updates but {charged.get(r, 0)} ledgers charge it"
           for r, line in sorted(logged.items()) if charged.get(r, 0) < int(line["valid"])]
    many = [f"round {r}: {charged[r]} ledgers charge it but only {int(line['sampled'])} devices were sampled"
            for r, line in sorted(logged.items()) if charged.get(r, 0) > int(line["sampled"])]
    if few:
        out.append("device ledgers are missing rounds the signed round log counts (a ledger deleted or rebuilt): "
                   + "; ".join(few[:MAX_ROUNDS_NAMED]))
    if many:
        out.append("more device ledgers charge a round than the signed round log sampled: "
                   + "; ".join(many[:MAX_ROUNDS_NAMED]))
    by_device: dict[str, set[int]] = {}
    for dev in scan.devices:
        by_device.setdefault(dev.device_id, set()).update(dev.round_ids)
    uncharged = [f"round {r}: device {d}" for r, line in sorted(logged.items())
                 for d in line.get("contributors") or () if r not in by_device.get(device_dir_name(str(d)), set())]
    block["uncharged_contributors"] = len(uncharged)
    if uncharged:
        out.append(f"{len(uncharged)} contributors the signed round log names have no ledger charging that round "
                   "(a ledger deleted or rebuilt): " + "; ".join(uncharged[:MAX_ROUNDS_NAMED]))
    unlogged = sorted(set(charged) - set(logged))
    if unlogged:
        out.append(f"device ledgers charge rounds {unlogged[:MAX_ROUNDS_NAMED]} that the signed round log does "
                   "not hold (its tail was cut)")
    return out
