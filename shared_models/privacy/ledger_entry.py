"""One per-round row of the on-device privacy ledger, and the ledger's errors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .params import check_count, check_noise_multiplier, check_real, check_sample_rate


class LedgerError(ValueError):
    """Base class of privacy-ledger errors."""


class LedgerCorruptError(LedgerError):
    """The ledger file is unreadable, not JSON, or internally inconsistent."""


class LedgerMismatchError(LedgerError):
    """The ledger file was written for a different delta / unit / accountant."""


class DuplicateRoundError(LedgerError):
    """A round already in the ledger was recorded again with different parameters."""


@dataclass(frozen=True)
class LedgerEntry:
    """What one federated round spent: its steps, σ, q and the cumulative ε after it.

    ``epsilon`` is ``math.inf`` after a noiseless round (stored as JSON ``null``).
    ``recorded_at`` is an ISO-8601 UTC timestamp.
    """

    round_id: int
    num_steps: int
    noise_multiplier: float
    sample_rate: float
    epsilon: float
    recorded_at: str

    def same_params(self, *, noise_multiplier: float, sample_rate: float, num_steps: int) -> bool:
        """True iff this round was recorded with exactly these mechanism parameters."""
        return (self.noise_multiplier, self.sample_rate, self.num_steps) == (
            noise_multiplier,
            sample_rate,
            num_steps,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-safe row (non-finite ε becomes ``null``)."""
        return {
            "round": self.round_id,
            "num_steps": self.num_steps,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "epsilon": self.epsilon if math.isfinite(self.epsilon) else None,
            "recorded_at": self.recorded_at,
        }

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> "LedgerEntry":
        """Parse and validate a row written by :meth:`to_json` (raises ValueError/TypeError)."""
        if not isinstance(row, Mapping):
            raise TypeError(f"a round entry must be an object, got {type(row).__name__}")
        epsilon = row["epsilon"]
        recorded_at = row["recorded_at"]
        if not isinstance(recorded_at, str):
            raise TypeError("'recorded_at' must be a string")
        return cls(
            round_id=check_count("round", row["round"]),
            num_steps=check_count("num_steps", row["num_steps"]),
            noise_multiplier=check_noise_multiplier(row["noise_multiplier"]),
            sample_rate=check_sample_rate(row["sample_rate"]),
            epsilon=math.inf if epsilon is None else check_real("epsilon", epsilon),
            recorded_at=recorded_at,
        )
