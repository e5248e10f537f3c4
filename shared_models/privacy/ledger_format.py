"""On-disk format of the privacy ledger: reading, validating and cross-checking a file.

A ledger file is strict JSON::

    {"format": "fedinterest-privacy-ledger", "version": 1,
     "accountant": "rdp", "delta": 1e-05, "unit": "example", "target_epsilon": 8.0,
     "accountant_state": {"mechanism": "rdp", "history": [[σ, q, steps], ...], "orders": [...]},
     "rounds": [{"round": 0, "num_steps": 40, "noise_multiplier": 1.1, "sample_rate": 0.01,
                 "epsilon": 0.61, "recorded_at": "2025-01-01T00:00:00+00:00"}, ...]}

``rounds`` and ``accountant_state`` are redundant on purpose: a file whose rows
do not replay to its accountant history is rejected as corrupt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .base import Accountant
from .ledger_entry import LedgerCorruptError, LedgerEntry, LedgerMismatchError
from .registry import accountant_from_dict

LEDGER_FORMAT = "fedinterest-privacy-ledger"
LEDGER_VERSION = 1
CONFIG_FIELDS = ("accountant", "delta", "unit")


def read_document(path: Path) -> dict[str, Any]:
    """Parse ``path`` as a ledger document; :class:`LedgerCorruptError` names the file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LedgerCorruptError(f"privacy ledger {path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != LEDGER_FORMAT:
        raise LedgerCorruptError(f"privacy ledger {path} is not a {LEDGER_FORMAT} file")
    if document.get("version") != LEDGER_VERSION:
        raise LedgerCorruptError(
            f"privacy ledger {path} has version {document.get('version')!r}; expected {LEDGER_VERSION}"
        )
    return document


def parse_state(path: Path, document: Mapping[str, Any]) -> tuple[Accountant, list[LedgerEntry]]:
    """Accountant and rows of a loaded document, cross-checked against each other."""
    field = "accountant_state"
    try:
        accountant = accountant_from_dict(document[field])
        field = "rounds"
        entries = [LedgerEntry.from_json(row) for row in document[field]]
    except (KeyError, TypeError, ValueError) as exc:
        raise LedgerCorruptError(f"privacy ledger {path}: invalid field {field!r}: {exc}") from exc
    replay = accountant_from_dict({**accountant.to_dict(), "history": []})
    for entry in entries:
        replay.step(noise_multiplier=entry.noise_multiplier, sample_rate=entry.sample_rate, num_steps=entry.num_steps)
    if replay.history != accountant.history:
        raise LedgerCorruptError(f"privacy ledger {path}: 'rounds' and 'accountant_state' disagree")
    if len({entry.round_id for entry in entries}) != len(entries):
        raise LedgerCorruptError(f"privacy ledger {path}: field 'rounds' repeats a round id")
    return accountant, entries


def load_checked(
    path: Path, requested: Mapping[str, Any]
) -> tuple[Accountant, list[LedgerEntry], Any]:
    """Load ``path``; check accountant/delta/unit against ``requested``; return state and stored target."""
    document = read_document(path)
    for field in CONFIG_FIELDS:
        if document.get(field) != requested[field]:
            raise LedgerMismatchError(
                f"privacy ledger {path}: field {field!r} is {document.get(field)!r}"
                f" in the file but {requested[field]!r} was requested"
            )
    accountant, entries = parse_state(path, document)
    if accountant.mechanism != requested["accountant"]:
        raise LedgerMismatchError(
            f"privacy ledger {path}: field 'accountant_state' is for {accountant.mechanism!r},"
            f" not {requested['accountant']!r}"
        )
    return accountant, entries, document.get("target_epsilon")


def build_document(
    *,
    accountant: Accountant,
    delta: float,
    unit: str,
    target_epsilon: float | None,
    entries: list[LedgerEntry],
) -> dict[str, Any]:
    """The JSON document for a ledger state."""
    return {
        "format": LEDGER_FORMAT,
        "version": LEDGER_VERSION,
        "accountant": accountant.mechanism,
        "delta": delta,
        "unit": unit,
        "target_epsilon": target_epsilon,
        "accountant_state": accountant.to_dict(),
        "rounds": [entry.to_json() for entry in entries],
    }
