"""The stateful accountant interface (after the layout of Opacus' ``IAccountant``).

An accountant records a *history* of homogeneous runs
``(noise_multiplier, sample_rate, steps)`` of the Poisson-subsampled Gaussian
mechanism and turns it into ε for a given δ.  The math lives in pure
functions (:mod:`.rdp`); subclasses only say how a history becomes ε.
State is plain data, so :meth:`Accountant.to_dict` is JSON-safe.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping, Sequence

from .params import HistoryEntry, check_delta, check_entry, check_history

def merge_step(history: Sequence[HistoryEntry], entry: HistoryEntry) -> list[HistoryEntry]:
    """``history`` plus ``entry``, merged into the last run when σ and q are identical.

    Zero-step entries change nothing and are dropped.
    """
    merged = list(history)
    sigma, q, steps = entry
    if steps == 0:
        return merged
    if merged and merged[-1][0] == sigma and merged[-1][1] == q:
        merged[-1] = (sigma, q, merged[-1][2] + steps)
    else:
        merged.append(entry)
    return merged


class Accountant(abc.ABC):
    """Records mechanism runs and reports the (ε, δ) spent so far."""

    mechanism: ClassVar[str]
    """Registry key and the ``mechanism`` field of :meth:`to_dict`."""

    def __init__(self) -> None:
        self._history: list[HistoryEntry] = []

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        """Recorded ``(noise_multiplier, sample_rate, steps)`` runs, oldest first."""
        return tuple(self._history)

    @property
    def total_steps(self) -> int:
        """Number of mechanism steps recorded."""
        return sum(steps for _, _, steps in self._history)

    def __len__(self) -> int:
        return len(self._history)

    def step(self, *, noise_multiplier: float, sample_rate: float, num_steps: int = 1) -> None:
        """Record ``num_steps`` steps; merges into the last run if σ and q are unchanged."""
        entry = check_entry(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=num_steps)
        self._set_history(merge_step(self._history, entry))

    def get_epsilon(self, *, delta: float) -> float:
        """ε spent so far at ``delta`` (0.0 for an empty history)."""
        return self._epsilon_for(self._history, check_delta(delta))

    def epsilon_if(
        self, *, noise_multiplier: float, sample_rate: float, num_steps: int, delta: float
    ) -> float:
        """ε that WOULD be spent after ``num_steps`` more steps; records nothing."""
        entry = check_entry(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=num_steps)
        return self._epsilon_for(merge_step(self._history, entry), check_delta(delta))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state: ``{"mechanism": ..., "history": [[σ, q, steps], ...], ...}``."""
        return {"mechanism": self.mechanism, "history": [list(entry) for entry in self._history]}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> "Accountant":
        """Rebuild an accountant from :meth:`to_dict` output (validated)."""
        if not isinstance(state, Mapping):
            raise ValueError(f"accountant state must be a mapping, got {type(state).__name__}")
        if state.get("mechanism") != cls.mechanism:
            raise ValueError(
                f"accountant state is for mechanism {state.get('mechanism')!r}, not {cls.mechanism!r}"
            )
        history = state.get("history")
        if not isinstance(history, list):
            raise ValueError("accountant state field 'history' must be a list")
        accountant = cls(**cls._init_kwargs_from_state(state))
        for sigma, q, steps in check_history(history):
            accountant.step(noise_multiplier=sigma, sample_rate=q, num_steps=steps)
        return accountant

    @classmethod
    def _init_kwargs_from_state(cls, state: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor keyword arguments stored in the state (none by default)."""
        return {}

    def _set_history(self, history: list[HistoryEntry]) -> None:
        """Replace the history (subclasses may hook cache invalidation here)."""
        self._history = history

    @abc.abstractmethod
    def _epsilon_for(self, history: Sequence[HistoryEntry], delta: float) -> float:
        """ε of ``history`` at a validated ``delta``."""
