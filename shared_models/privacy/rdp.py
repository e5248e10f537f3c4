"""Rényi DP of the Poisson-subsampled Gaussian mechanism, and its (ε, δ) conversion.

Formulas:

* RDP of the Sampled Gaussian Mechanism (SGM): I. Mironov, K. Talwar, L. Zhang,
  "Rényi Differential Privacy of the Sampled Gaussian Mechanism", 2019,
  arXiv:1908.10530, Section 3.3 (``A_α`` for integer and fractional α).
* RDP composes additively over steps and over mechanisms: I. Mironov,
  "Rényi Differential Privacy", CSF 2017, Proposition 1.
* RDP → (ε, δ)-DP: B. Balle, G. Barthe, M. Gaboardi, J. Hsu, T. Sato,
  "Hypothesis Testing Interpretations and Rényi Differential Privacy",
  AISTATS 2020, arXiv:1905.09982, Theorem 21 (the conversion Opacus and
  TF-privacy use).

Everything is evaluated in log space; numpy/scipy only, no framework imports.
"""

from __future__ import annotations

import functools
import math
from typing import Iterable, Sequence

import numpy as np
from scipy import special

from .params import check_delta, check_entry, check_history, check_orders

DEFAULT_ORDERS: tuple[float, ...] = (
    (1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5)
    + tuple(float(alpha) for alpha in range(5, 64))
    + (128.0, 256.0, 512.0)
)
"""Rényi orders searched for the tightest ε (the grid dp-accounting uses)."""

LOG_TERM_CUTOFF = -30.0
"""The fractional-order series stops at the first term below e^-30 (as TF-privacy)."""

FRACTIONAL_LOG_A_FLOOR = 1e-11
"""Below this, the fractional-order series (absolute error ~1e-16) is replaced by a bound."""

SERIES_FIRST_BLOCK = 64
SERIES_MAX_BLOCK = 65_536
SERIES_MAX_TERMS = 50_000_000
"""Block sizes / hard cap for the fractional-order series (guards a runaway loop)."""

_RDP_CACHE_SIZE = 512


def _log_expm1(x: np.ndarray) -> np.ndarray:
    """``log(exp(x) - 1)`` for ``x > 0`` without overflow or cancellation."""
    out = np.empty_like(x)
    small = x <= 1.0
    out[small] = np.log(np.expm1(x[small]))
    out[~small] = x[~small] + np.log1p(-np.exp(-x[~small]))
    return out


def _log_binom_abs(alpha: float, k: np.ndarray) -> np.ndarray:
    """``log|binom(α, k)|`` via log-gamma (valid for fractional α)."""
    return special.gammaln(alpha + 1.0) - special.gammaln(k + 1.0) - special.gammaln(alpha - k + 1.0)


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    """``log A_α`` for integer α (Mironov et al. 2019, Sec. 3.3).

    ``A_α = Σ_k binom(α,k) (1-q)^(α-k) q^k exp((k²-k)/(2σ²))``.  Since the
    binomial weights sum to 1, ``A_α - 1 = Σ_{k≥2} w_k · expm1((k²-k)/(2σ²))``
    with only positive terms, so ``log(A_α - 1)`` is a plain log-sum-exp and
    small RDP values keep full relative precision.
    """
    k = np.arange(2, alpha + 1, dtype=float)
    log_w = _log_binom_abs(float(alpha), k) + k * math.log(q) + (alpha - k) * math.log1p(-q)
    log_a_minus_1 = special.logsumexp(log_w + _log_expm1((k * k - k) / (2.0 * sigma**2)))
    return float(np.logaddexp(0.0, log_a_minus_1))


def _fractional_terms(
    alpha: float, q: float, sigma: float, i: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Log-magnitudes of the two series of ``A_α`` (fractional α), Mironov et al. Sec. 3.3.

    The split point is ``z0 = σ² log(1/q - 1) + 1/2``; the erfc factors of the
    paper are written as Gaussian CDFs, ``½ erfc(x/√2) = Φ(-x)``.
    """
    z0 = sigma**2 * math.log(1.0 / q - 1.0) + 0.5
    j = alpha - i
    log_binom = _log_binom_abs(alpha, i)
    log_q, log_1mq = math.log(q), math.log1p(-q)
    two_var = 2.0 * sigma**2
    s0 = log_binom + i * log_q + j * log_1mq + (i * i - i) / two_var + special.log_ndtr((z0 - i) / sigma)
    s1 = log_binom + j * log_q + i * log_1mq + (j * j - j) / two_var + special.log_ndtr((j - z0) / sigma)
    return s0, s1


def _signed_log_sum(log_terms: np.ndarray, signs: np.ndarray) -> float:
    """``log Σ sign_i · exp(log_terms_i)`` with exactly-rounded summation."""
    peak = float(np.max(log_terms))
    if peak == -math.inf:
        return -math.inf
    total = math.fsum((signs * np.exp(log_terms - peak)).tolist())
    if total <= 0.0:
        raise ArithmeticError("fractional-order RDP series lost all precision")
    return peak + math.log(total)


def _log_a_fractional(q: float, sigma: float, alpha: float) -> float:
    """``log A_α`` for fractional α: two alternating series summed until negligible."""
    s0_parts, s1_parts, start, block = [], [], 0, SERIES_FIRST_BLOCK
    while True:
        i = np.arange(start, start + block, dtype=float)
        s0, s1 = _fractional_terms(alpha, q, sigma, i)
        below = np.maximum(s0, s1) < LOG_TERM_CUTOFF
        stop = int(np.argmax(below)) + 1 if below.any() else block
        s0_parts.append(s0[:stop])
        s1_parts.append(s1[:stop])
        if below.any():
            break
        start, block = start + block, min(2 * block, SERIES_MAX_BLOCK)
        if start > SERIES_MAX_TERMS:
            raise ArithmeticError(f"RDP series for order {alpha} did not converge")
    i = np.arange(sum(part.size for part in s0_parts), dtype=float)
    # binom(α, i) is negative exactly for the odd number of factors (α - k) < 0, k < i.
    signs = np.where(np.maximum(i - math.floor(alpha) - 1.0, 0.0) % 2 == 0, 1.0, -1.0)
    log_a0 = _signed_log_sum(np.concatenate(s0_parts), signs)
    log_a1 = _signed_log_sum(np.concatenate(s1_parts), signs)
    return float(np.logaddexp(log_a0, log_a1))


def _rdp_one_order(q: float, sigma: float, alpha: float) -> float:
    """RDP of ONE step of the SGM at order α (edge cases first)."""
    if q == 0.0:
        return 0.0  # the output never depends on the data
    if sigma == 0.0:
        return math.inf  # no noise, no privacy
    if q == 1.0:
        return alpha / (2.0 * sigma**2)  # plain Gaussian mechanism (Mironov 2017)
    if alpha.is_integer():
        rdp = _log_a_integer(q, sigma, int(alpha)) / (alpha - 1.0)
        return math.inf if math.isnan(rdp) else rdp  # NaN only from overflow: be conservative
    return _rdp_fractional_order(q, sigma, alpha)


def _rdp_fractional_order(q: float, sigma: float, alpha: float) -> float:
    """RDP at a fractional order, never below the truth beyond the series' precision.

    ``log A_α = (α-1)·D_α = log E[L^α]`` is convex in α (moments are
    log-convex, by Hölder's inequality; see van Erven & Harremoës, "Rényi
    Divergence and Kullback-Leibler Divergence", IEEE T-IT 2014) and
    ``log A_1 = 0``, so the chord between the exactly computed integer orders
    ``floor(α)`` and ``ceil(α)`` bounds it from above.  The bound replaces the
    series when ``log A_α`` is below :data:`FRACTIONAL_LOG_A_FLOOR` (tiny q:
    the alternating series has only ~1e-16 absolute precision and may even
    come out negative) or when the series fails.
    """
    lo, hi = math.floor(alpha), math.ceil(alpha)
    log_a_lo = 0.0 if lo == 1 else _log_a_integer(q, sigma, lo)
    chord = (hi - alpha) * log_a_lo + (alpha - lo) * _log_a_integer(q, sigma, hi)
    bound = chord / (alpha - 1.0)
    try:
        log_a = _log_a_fractional(q, sigma, alpha)
    except ArithmeticError:
        return bound
    if math.isnan(log_a) or log_a < FRACTIONAL_LOG_A_FLOOR:
        return bound
    return min(log_a / (alpha - 1.0), bound)


@functools.lru_cache(maxsize=_RDP_CACHE_SIZE)
def _rdp_per_step(q: float, sigma: float, orders: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(_rdp_one_order(q, sigma, alpha) for alpha in orders)


def compute_rdp(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> np.ndarray:
    """RDP at each order of ``steps`` Poisson-subsampled Gaussian steps.

    Mironov, Talwar & Zhang 2019 (Sec. 3.3) for one step; ``steps``
    compositions add up (Mironov 2017, Prop. 1).  Edge cases: ``q = 0`` → 0,
    ``q = 1`` → ``α / (2σ²)`` per step, ``σ = 0`` (with ``q > 0``) → ∞.
    """
    sigma, q, n = check_entry(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    checked_orders = check_orders(orders)
    if n == 0:
        return np.zeros(len(checked_orders))
    return np.asarray(_rdp_per_step(q, sigma, checked_orders)) * n


def rdp_to_epsilon(
    *, rdp: Sequence[float] | np.ndarray, orders: Sequence[float], delta: float
) -> tuple[float, float]:
    """Smallest ε over the orders such that the mechanism is (ε, δ)-DP.

    Balle et al. 2020, Theorem 21:
    ``ε = RDP(α) + log((α-1)/α) - (log δ + log α) / (α - 1)``.
    Returns ``(ε, best order)``; ε is clamped at 0 and is ``(0.0, nan)`` when
    the RDP is 0 at every order (no data-dependent output), ``(inf, nan)``
    when it is infinite at every order.
    """
    delta = check_delta(delta)
    alphas = np.asarray(check_orders(orders))
    rdp_vec = np.asarray(rdp, dtype=float).reshape(-1)
    if rdp_vec.shape != alphas.shape:
        raise ValueError(f"rdp has {rdp_vec.size} values but there are {alphas.size} orders")
    if np.any(np.isnan(rdp_vec)) or np.any(rdp_vec < 0):
        raise ValueError("rdp values must be >= 0 and not NaN")
    if np.all(rdp_vec == 0.0):
        return 0.0, math.nan
    if np.all(np.isinf(rdp_vec)):
        return math.inf, math.nan
    eps = rdp_vec + np.log1p(-1.0 / alphas) - (math.log(delta) + np.log(alphas)) / (alphas - 1.0)
    best = int(np.argmin(eps))
    return max(0.0, float(eps[best])), float(alphas[best])


def rdp_from_history(
    history: Iterable[Sequence[float]], *, orders: Sequence[float] = DEFAULT_ORDERS
) -> np.ndarray:
    """Total RDP of a sequence of ``(noise_multiplier, sample_rate, steps)`` runs (additive)."""
    checked_orders = check_orders(orders)
    total = np.zeros(len(checked_orders))
    for sigma, q, steps in check_history(history):
        total = total + compute_rdp(noise_multiplier=sigma, sample_rate=q, steps=steps, orders=checked_orders)
    return total


def epsilon_from_history(
    history: Iterable[Sequence[float]],
    *,
    delta: float,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> float:
    """ε at ``delta`` after every ``(noise_multiplier, sample_rate, steps)`` run in ``history``."""
    rdp = rdp_from_history(history, orders=orders)
    eps, _ = rdp_to_epsilon(rdp=rdp, orders=orders, delta=delta)
    return eps
