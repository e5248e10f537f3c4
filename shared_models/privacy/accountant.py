"""``RDPAccountant``: the stateful Rényi-DP accountant (mechanism ``"rdp"``).

A thin wrapper over :mod:`.rdp`: RDP of the Poisson-subsampled Gaussian
mechanism (Mironov, Talwar & Zhang 2019), additive composition (Mironov
2017), and the RDP → (ε, δ) conversion of Balle et al. 2020 (Theorem 21).
The summed RDP vector of the recorded history is cached, so ``get_epsilon``
and ``epsilon_if`` cost one conversion (plus one new RDP vector) per call.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .base import Accountant
from .params import HistoryEntry, check_orders
from .rdp import DEFAULT_ORDERS, compute_rdp, rdp_from_history, rdp_to_epsilon


class RDPAccountant(Accountant):
    """Rényi-DP accountant over a fixed grid of orders (default :data:`DEFAULT_ORDERS`)."""

    mechanism = "rdp"

    def __init__(self, *, orders: Sequence[float] = DEFAULT_ORDERS) -> None:
        super().__init__()
        self._orders = check_orders(orders)
        self._spent: np.ndarray | None = None

    @property
    def orders(self) -> tuple[float, ...]:
        """The Rényi orders searched for the tightest ε."""
        return self._orders

    def get_privacy_spent(self, *, delta: float) -> tuple[float, float]:
        """``(ε, best order)`` spent so far; ``(0.0, nan)`` for an empty history."""
        return rdp_to_epsilon(rdp=self._spent_rdp(), orders=self._orders, delta=delta)

    def epsilon_if(
        self, *, noise_multiplier: float, sample_rate: float, num_steps: int, delta: float
    ) -> float:
        """ε after ``num_steps`` more steps at (σ, q), from the cached RDP; records nothing."""
        extra = compute_rdp(
            noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=num_steps, orders=self._orders
        )
        return rdp_to_epsilon(rdp=self._spent_rdp() + extra, orders=self._orders, delta=delta)[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state including the orders, so a reload reproduces ε exactly."""
        state = super().to_dict()
        state["orders"] = list(self._orders)
        return state

    @classmethod
    def _init_kwargs_from_state(cls, state: Mapping[str, Any]) -> dict[str, Any]:
        orders = state.get("orders", DEFAULT_ORDERS)
        if not isinstance(orders, (list, tuple)):
            raise ValueError("accountant state field 'orders' must be a list")
        return {"orders": orders}

    def _set_history(self, history: list[HistoryEntry]) -> None:
        super()._set_history(history)
        self._spent = None

    def _spent_rdp(self) -> np.ndarray:
        if self._spent is None:
            self._spent = rdp_from_history(self._history, orders=self._orders)
        return self._spent

    def _epsilon_for(self, history: Sequence[HistoryEntry], delta: float) -> float:
        rdp = rdp_from_history(history, orders=self._orders)
        return rdp_to_epsilon(rdp=rdp, orders=self._orders, delta=delta)[0]

    def get_epsilon(self, *, delta: float) -> float:
        """ε spent so far at ``delta`` (0.0 for an empty history)."""
        return self.get_privacy_spent(delta=delta)[0]
