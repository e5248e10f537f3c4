"""Federated early stopping: keep the global state with the best validation metric, stop after ``patience``
evaluations without improvement (``federated.keep-best``, ``federated.patience``).

The centralized baseline stops on validation NDCG@10 with patience; a federated run that always reports its
last round compares a noisy endpoint with a selected one. Devices already send the rank of their validation
item in clear (the evaluation protocol), so the server can select without seeing anything new. What it keeps
is the same state it broadcasts: plaintext weights, or the encrypted sum (a blind server keeps a ciphertext).
Only the shared state is selected: personal weights stay on the devices, which keep their latest ones.
Selection reads validation items, which no example-level guarantee covers (they are never training windows);
user-level DP protects whole devices, validation items included, so it refuses this option (config.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

SELECT_METRIC = "ndcg@10"  # what the centralized early stopping watches (simulations/central.py)


@dataclass
class ModelSelection:
    patience: int = 0  # evaluations without improvement before stopping; 0 = run every round
    best_round: int = 0
    best_value: float = -math.inf
    stale: int = 0  # evaluations since the best one
    state: Any = None  # the best global state (dict of arrays, or the encrypted sum's bytes)

    def observe(self, round_id: int, metrics: dict[str, float], state: Any) -> bool:
        """Record an evaluation of ``state`` after ``round_id``; True when it is the new best."""
        if SELECT_METRIC not in metrics:
            return False
        value = float(metrics[SELECT_METRIC])
        if value > self.best_value:
            self.best_round, self.best_value, self.stale = round_id, value, 0
            self.state = _copy(state)
            return True
        self.stale += 1
        return False

    def stop_reason(self) -> str:
        if self.patience and self.stale >= self.patience:
            return (f"validation {SELECT_METRIC} has not improved for {self.stale} evaluations "
                    f"(best {self.best_value:.4f} after round {self.best_round}; federated.patience)")
        return ""

    def final_state(self, latest: Any) -> Any:
        """The state to test and ship: the best one evaluated, else ``latest`` (nothing was evaluated)."""
        return latest if self.state is None else self.state

    def summary(self) -> dict[str, Any]:
        return {"metric": SELECT_METRIC, "best_round": self.best_round,
                "best_value": None if self.state is None else self.best_value, "patience": self.patience}

    def to_json(self) -> dict[str, Any]:
        return {"best_round": self.best_round, "best_value": self.best_value if self.state is not None else None,
                "stale": self.stale}

    def load_json(self, data: dict[str, Any], state: Any) -> None:
        self.best_round, self.stale = int(data["best_round"]), int(data["stale"])
        self.best_value = -math.inf if data["best_value"] is None else float(data["best_value"])
        self.state = state


def _copy(state: Any) -> Any:
    if isinstance(state, dict):
        return {k: np.array(v, copy=True) for k, v in state.items()}
    return state  # bytes (the encrypted sum) are immutable
