"""``PrivacyLedger``: the persistent, crash-safe, on-device privacy ledger.

Every federated round a device trains with DP-SGD is appended as a
:class:`LedgerEntry` and composed into an accountant from the registry; the
whole ledger is then rewritten atomically (:mod:`shared_models.atomic_io`), so the budget
spent survives restarts and crashes.  Reopening validates the file against
the requested configuration and checks that the per-round rows and the
stored accountant state agree.

Accounting math: see :mod:`.rdp` (Mironov, Talwar & Zhang 2019; Balle et al. 2020).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shared_models.atomic_io import atomic_write_json
from .base import Accountant
from .ledger_entry import DuplicateRoundError, LedgerEntry
from .ledger_format import build_document, load_checked
from .params import check_count, check_delta, check_entry, check_target_epsilon
from .registry import accountant_from_dict, make_accountant


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class PrivacyLedger:
    """Per-device record of the privacy spent, one row per federated round.

    Build it with :meth:`open`.  ``target_epsilon`` is the budget checked by
    :meth:`would_exceed` (``None``: no budget); :meth:`record` always records,
    because it documents privacy already spent.
    """

    def __init__(
        self,
        *,
        path: Path,
        accountant: Accountant,
        delta: float,
        unit: str,
        target_epsilon: float | None,
        entries: list[LedgerEntry],
    ) -> None:
        self._path = path
        self._accountant = accountant
        self._delta = delta
        self._unit = unit
        self._target_epsilon = target_epsilon
        self._entries = entries

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        accountant: str = "rdp",
        delta: float,
        unit: str,
        target_epsilon: float | None,
    ) -> "PrivacyLedger":
        """Load the ledger at ``path`` (validated against the arguments) or create it.

        Raises :class:`LedgerMismatchError` when the file's accountant, delta or
        unit differ from the arguments, :class:`LedgerCorruptError` when it is
        not a valid ledger.  ``target_epsilon`` is policy, not history: the
        value given here replaces the stored one.
        """
        ledger_path = Path(path)
        fresh = make_accountant(accountant)  # rejects unknown names, listing the valid ones
        if not isinstance(unit, str) or not unit:
            raise ValueError("unit must be a non-empty string, e.g. 'example' or 'user'")
        requested = {"accountant": accountant, "delta": check_delta(delta), "unit": unit}
        target = None if target_epsilon is None else check_target_epsilon(target_epsilon)
        if not ledger_path.exists():
            ledger = cls(
                path=ledger_path, accountant=fresh, delta=requested["delta"],
                unit=unit, target_epsilon=target, entries=[],
            )
            ledger_path.parent.mkdir(parents=True, exist_ok=True)
            ledger._save(ledger._accountant, ledger._entries)
            return ledger
        stored, entries, stored_target = load_checked(ledger_path, requested)
        ledger = cls(
            path=ledger_path, accountant=stored, delta=requested["delta"], unit=unit,
            target_epsilon=target, entries=entries,
        )
        if stored_target != target:
            ledger._save(stored, entries)
        return ledger

    @property
    def path(self) -> Path:
        return self._path

    @property
    def delta(self) -> float:
        return self._delta

    @property
    def unit(self) -> str:
        return self._unit

    @property
    def accountant_name(self) -> str:
        return self._accountant.mechanism

    @property
    def target_epsilon(self) -> float | None:
        return self._target_epsilon

    @property
    def rounds(self) -> tuple[LedgerEntry, ...]:
        """Recorded rounds, in recording order."""
        return tuple(self._entries)

    @property
    def total_steps(self) -> int:
        """DP-SGD steps recorded over all rounds."""
        return sum(entry.num_steps for entry in self._entries)

    def epsilon(self) -> float:
        """ε spent so far at the ledger's δ."""
        return self._accountant.get_epsilon(delta=self._delta)

    def would_exceed(self, *, noise_multiplier: float, sample_rate: float, num_steps: int) -> bool:
        """True iff recording these steps would push ε above ``target_epsilon`` (never if None)."""
        if self._target_epsilon is None:
            return False
        eps = self._accountant.epsilon_if(
            noise_multiplier=noise_multiplier, sample_rate=sample_rate, num_steps=num_steps, delta=self._delta
        )
        return eps > self._target_epsilon

    def record(self, *, round_id: int, noise_multiplier: float, sample_rate: float, num_steps: int) -> bool:
        """Append round ``round_id`` and persist atomically; True if it was recorded.

        Replaying a round already present with identical parameters is a no-op
        returning False (a resumed run); different parameters raise
        :class:`DuplicateRoundError`.  If saving fails, nothing changes in memory.
        """
        round_id = check_count("round_id", round_id)
        sigma, q, steps = check_entry(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=num_steps)
        for entry in self._entries:
            if entry.round_id == round_id:
                if entry.same_params(noise_multiplier=sigma, sample_rate=q, num_steps=steps):
                    return False
                raise DuplicateRoundError(
                    f"privacy ledger {self._path}: round {round_id} is already recorded as {entry.to_json()},"
                    f" refusing noise_multiplier={sigma}, sample_rate={q}, num_steps={steps}"
                )
        accountant = accountant_from_dict(self._accountant.to_dict())
        accountant.step(noise_multiplier=sigma, sample_rate=q, num_steps=steps)
        entry = LedgerEntry(
            round_id=round_id, num_steps=steps, noise_multiplier=sigma, sample_rate=q,
            epsilon=accountant.get_epsilon(delta=self._delta), recorded_at=_utc_now(),
        )
        entries = [*self._entries, entry]
        self._save(accountant, entries)
        self._accountant, self._entries = accountant, entries
        return True

    def to_summary(self) -> dict[str, Any]:
        """Headline numbers: ε, δ, unit, accountant, steps, rounds, last σ and q, target."""
        last = self._entries[-1] if self._entries else None
        return {
            "epsilon": self.epsilon(),
            "delta": self._delta,
            "unit": self._unit,
            "accountant": self.accountant_name,
            "steps": self.total_steps,
            "rounds": len(self._entries),
            "noise_multiplier": last.noise_multiplier if last else None,
            "sample_rate": last.sample_rate if last else None,
            "target_epsilon": self._target_epsilon,
        }

    def _save(self, accountant: Accountant, entries: list[LedgerEntry]) -> None:
        document = build_document(
            accountant=accountant, delta=self._delta, unit=self._unit,
            target_epsilon=self._target_epsilon, entries=entries,
        )
        atomic_write_json(self._path, document)

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(path={str(self._path)!r}, accountant={self.accountant_name!r},"
            f" delta={self._delta}, unit={self._unit!r}, rounds={len(self._entries)})"
        )
