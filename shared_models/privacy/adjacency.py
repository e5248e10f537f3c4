"""Epsilon under replace-one adjacency from an add/remove-one RDP history (pure math, numpy only).

The device ledgers account the Poisson-subsampled Gaussian under add/remove-one adjacency (one training
window present or absent). Changing the CONTENT of one window (e.g. the item of one interaction) is a
replace-one change: its sensitivity is 2C instead of C. A sound upper bound, used here, treats every step as
the plain Gaussian mechanism with noise multiplier sigma / 2 and no subsampling amplification (q = 1).
"""

from __future__ import annotations

from collections.abc import Iterable

from .rdp import epsilon_from_history

REPLACE_ONE_SENSITIVITY = 2.0  # ||g(x) - g(x')|| <= 2C when one clipped per-sample gradient is swapped


def replace_one_epsilon(history: Iterable[tuple[float, float, int]], *, delta: float) -> float:
    """Upper bound on epsilon for changing one sample, from ``(noise_multiplier, sample_rate, steps)``."""
    bounded = [(sigma / REPLACE_ONE_SENSITIVITY, 1.0, steps) for sigma, _q, steps in history if steps > 0]
    return epsilon_from_history(bounded, delta=delta) if bounded else 0.0
