"""Plaintext FedAvg of the shared weights (the HE path replaces the transport, not the arithmetic)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np


def fedavg(updates: Sequence[dict[str, np.ndarray]], weights: Sequence[float]) -> "OrderedDict[str, np.ndarray]":
    """Weighted average sum_i w_i x_i / sum_i w_i of identically-keyed weight dicts."""
    if not updates:
        raise ValueError("fedavg needs at least one update")
    if len(updates) != len(weights):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"total weight must be positive, got {total}")
    keys = list(updates[0].keys())
    for i, u in enumerate(updates[1:], start=1):
        if list(u.keys()) != keys:
            raise ValueError(f"update {i} has keys that differ from update 0")
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for k in keys:
        acc = np.zeros_like(np.asarray(updates[0][k], dtype=np.float64))
        for u, w in zip(updates, weights):
            acc += float(w) * np.asarray(u[k], dtype=np.float64)
        out[k] = (acc / total).astype(np.float32)
    return out


def sum_updates(updates: Sequence[dict[str, np.ndarray]]) -> "OrderedDict[str, np.ndarray]":
    """Unweighted float64 sum of identically-keyed weight dicts (user-level DP: fixed weight 1 per device)."""
    if not updates:
        raise ValueError("sum_updates needs at least one update")
    keys = list(updates[0].keys())
    out: "OrderedDict[str, np.ndarray]" = OrderedDict((k, np.zeros(np.shape(updates[0][k]))) for k in keys)
    for i, u in enumerate(updates):
        if list(u.keys()) != keys:
            raise ValueError(f"update {i} has keys that differ from update 0")
        for k in keys:
            out[k] += np.asarray(u[k], dtype=np.float64)
    return out
