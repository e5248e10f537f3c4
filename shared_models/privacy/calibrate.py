"""Budget calibration on top of the RDP accountant math.

* :func:`noise_for_target_epsilon` — the smallest noise multiplier (up to the
  tolerance) whose ε stays within a target, by bracketing + bisection on the
  monotone map σ ↦ ε(σ) (the same search as Opacus' ``get_noise_multiplier``).
* :func:`steps_within_budget` / :func:`max_rounds_within_budget` — whether
  (and how many) further rounds fit a budget given what was already spent.
  RDP composes additively (Mironov 2017, Prop. 1), so a round's RDP vector is
  computed once and scaled.

ε is converted with Balle et al. 2020, Theorem 21 (see :mod:`.rdp`).
numpy/scipy only, no framework imports.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .params import check_count, check_delta, check_entry, check_real, check_target_epsilon
from .rdp import DEFAULT_ORDERS, compute_rdp, rdp_from_history, rdp_to_epsilon

DEFAULT_EPSILON_TOLERANCE = 0.01
"""Calibrated σ gives ``target - tol <= ε <= target`` (Opacus' default tolerance)."""

INITIAL_NOISE_MULTIPLIER = 1.0
MAX_NOISE_MULTIPLIER = 1e6
"""Bracketing starts at σ = 1 and doubles; beyond this the target is deemed unreachable."""

MAX_BISECTION_ITERATIONS = 200
"""Far more than needed to exhaust double precision; a guard, not a tuning knob."""

MAX_ROUNDS_SEARCH = 2**40
"""Upper bound of the rounds search (finite even when a round costs no privacy)."""


def _epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, orders: Sequence[float]
) -> float:
    rdp = compute_rdp(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, orders=orders)
    return rdp_to_epsilon(rdp=rdp, orders=orders, delta=delta)[0]


def noise_for_target_epsilon(
    *,
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    tol: float = DEFAULT_EPSILON_TOLERANCE,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> float:
    """Noise multiplier σ with ``target_epsilon - tol <= ε(σ) <= target_epsilon``.

    ε(σ) for ``steps`` Poisson-subsampled Gaussian steps (Mironov, Talwar &
    Zhang 2019) is continuous and decreasing in σ, so bisection on a bracket
    ``[lo, hi]`` with ``ε(lo) > target >= ε(hi)`` converges; ``hi`` (the
    privacy-safe end) is returned.  Raises ``ValueError`` when no σ up to
    :data:`MAX_NOISE_MULTIPLIER` reaches the target (the RDP→DP conversion has
    a floor that depends on δ and the largest order).
    """
    target = check_target_epsilon(target_epsilon)
    _, q, n = check_entry(noise_multiplier=0.0, sample_rate=sample_rate, steps=steps)
    delta = check_delta(delta)
    tol = check_real("tol", tol)
    if q == 0.0 or n == 0 or tol <= 0.0:
        raise ValueError("calibration needs sample_rate > 0, steps >= 1 and tol > 0")

    def eps_at(sigma: float) -> float:
        return _epsilon(noise_multiplier=sigma, sample_rate=q, steps=n, delta=delta, orders=orders)

    lo, hi = 0.0, INITIAL_NOISE_MULTIPLIER
    eps_hi = eps_at(hi)
    while eps_hi > target:
        lo, hi = hi, 2.0 * hi
        if hi > MAX_NOISE_MULTIPLIER:
            raise ValueError(
                f"target_epsilon={target} is unreachable with sample_rate={q}, steps={n},"
                f" delta={delta} (even noise_multiplier={MAX_NOISE_MULTIPLIER} exceeds it)"
            )
        eps_hi = eps_at(hi)
    for _ in range(MAX_BISECTION_ITERATIONS):
        if target - eps_hi <= tol:
            break
        mid = 0.5 * (lo + hi)
        eps_mid = eps_at(mid)
        if eps_mid > target:
            lo = mid
        else:
            hi, eps_hi = mid, eps_mid
    return hi


def _round_cost(
    *, noise_multiplier: float, sample_rate: float, steps_per_round: int, orders: Sequence[float]
) -> np.ndarray:
    return compute_rdp(
        noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps_per_round, orders=orders
    )


def steps_within_budget(
    *,
    target_epsilon: float,
    delta: float,
    history: Iterable[Sequence[float]],
    noise_multiplier: float,
    sample_rate: float,
    steps_per_round: int,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> bool:
    """True iff one more round of ``steps_per_round`` steps keeps ε <= ``target_epsilon``.

    ``history`` holds the ``(noise_multiplier, sample_rate, steps)`` runs
    already spent; the new round composes additively in RDP.
    """
    return (
        max_rounds_within_budget(
            target_epsilon=target_epsilon,
            delta=delta,
            history=history,
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            steps_per_round=steps_per_round,
            orders=orders,
            limit=1,
        )
        >= 1
    )


def max_rounds_within_budget(
    *,
    target_epsilon: float,
    delta: float,
    history: Iterable[Sequence[float]],
    noise_multiplier: float,
    sample_rate: float,
    steps_per_round: int,
    orders: Sequence[float] = DEFAULT_ORDERS,
    limit: int = MAX_ROUNDS_SEARCH,
) -> int:
    """Largest ``r <= limit`` such that ``r`` more identical rounds keep ε <= target.

    Uses ε(history + r rounds) non-decreasing in r: exponential search for a
    bracket, then binary search, each probe a scaled sum of RDP vectors.
    """
    target = check_target_epsilon(target_epsilon)
    delta = check_delta(delta)
    limit = check_count("limit", limit)
    spent = rdp_from_history(history, orders=orders)
    per_round = _round_cost(
        noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps_per_round=steps_per_round, orders=orders
    )

    def fits(rounds: int) -> bool:
        total = spent + (per_round * rounds if rounds else 0.0)
        return rdp_to_epsilon(rdp=total, orders=orders, delta=delta)[0] <= target

    if limit == 0 or not fits(0) or not fits(1):
        return 0
    good, bad = 1, 2
    while bad <= limit and fits(bad):
        good, bad = bad, 2 * bad
    if bad > limit:
        if fits(limit):
            return limit
        bad = limit
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good
