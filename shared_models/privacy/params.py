"""Validation of the privacy-critical parameters shared by every module here.

A *history entry* is one homogeneous run of the Poisson-subsampled Gaussian
mechanism: ``(noise_multiplier, sample_rate, steps)``, the same triple Opacus
and TF-privacy keep in their accountants.  Every public function in this
package validates its inputs through the helpers below, so a bad value is
reported once, with the parameter's name, instead of surfacing later as a NaN
epsilon.

Pure Python + numpy; no framework imports.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from collections.abc import Iterable, Sequence

HistoryEntry = tuple[float, float, int]
"""``(noise_multiplier, sample_rate, steps)`` of one homogeneous run."""

MIN_ORDER_EXCLUSIVE = 1.0
"""Rényi orders must be strictly greater than 1 (order 1 is KL divergence)."""


def check_real(name: str, value: object) -> float:
    """Return ``value`` as a float, rejecting bools, non-numbers and NaN."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    result = float(value)
    if math.isnan(result):
        raise ValueError(f"{name} must not be NaN")
    return result


def check_count(name: str, value: object) -> int:
    """Return ``value`` as a non-negative int (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    result = int(value)
    if result < 0:
        raise ValueError(f"{name} must be >= 0, got {result}")
    return result


def check_noise_multiplier(value: object) -> float:
    """A finite, non-negative noise multiplier (0 means no noise: ε = ∞)."""
    sigma = check_real("noise_multiplier", value)
    if not 0.0 <= sigma < math.inf:
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {sigma}")
    return sigma


def check_sample_rate(value: object) -> float:
    """A Poisson sampling probability in ``[0, 1]``."""
    q = check_real("sample_rate", value)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"sample_rate must be in [0, 1], got {q}")
    return q


def check_delta(value: object) -> float:
    """The δ of (ε, δ)-DP, strictly inside ``(0, 1)``."""
    delta = check_real("delta", value)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return delta


def check_target_epsilon(value: object) -> float:
    """A finite, strictly positive privacy budget ε."""
    eps = check_real("target_epsilon", value)
    if not 0.0 < eps < math.inf:
        raise ValueError(f"target_epsilon must be finite and > 0, got {eps}")
    return eps


def check_orders(orders: Iterable[object]) -> tuple[float, ...]:
    """A non-empty sequence of finite Rényi orders, each strictly greater than 1."""
    checked = tuple(check_real("order", alpha) for alpha in orders)
    if not checked:
        raise ValueError("orders must not be empty")
    bad = [alpha for alpha in checked if not MIN_ORDER_EXCLUSIVE < alpha < math.inf]
    if bad:
        raise ValueError(f"every Rényi order must be finite and > 1, got {bad}")
    return checked


def check_entry(
    *, noise_multiplier: object, sample_rate: object, steps: object
) -> HistoryEntry:
    """Validate one ``(noise_multiplier, sample_rate, steps)`` triple."""
    return (
        check_noise_multiplier(noise_multiplier),
        check_sample_rate(sample_rate),
        check_count("steps", steps),
    )


def check_history(history: Iterable[Sequence[object]]) -> list[HistoryEntry]:
    """Validate every ``(noise_multiplier, sample_rate, steps)`` triple."""
    checked: list[HistoryEntry] = []
    for index, entry in enumerate(history):
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 3:
            raise ValueError(
                f"history[{index}] must be (noise_multiplier, sample_rate, steps),"
                f" got {entry!r}"
            )
        sigma, q, steps = entry
        checked.append(check_entry(noise_multiplier=sigma, sample_rate=q, steps=steps))
    return checked
