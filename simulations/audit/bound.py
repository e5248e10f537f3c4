"""From correct membership guesses on canaries to an ε lower bound, after Steinke, Nasr & Jagielski.

T. Steinke, M. Nasr, M. Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023,
arXiv:2305.08846, Theorem 5.2. Each of ``m`` canaries is included independently with probability 1/2;
after one run the auditor makes ``r`` guesses (a number fixed BEFORE seeing the output) and ``v`` of them
are right. If the mechanism is (ε, δ)-DP under add/remove of one canary, then for every ``v``

    P[W >= v] <= f(v) + 2 m δ · max_{1 <= i <= v} (f(v - i) - f(v)) / i,
    f(u) = P[Binomial(r, e^ε / (1 + e^ε)) >= u]

(for ``i > v`` the ratio is never larger than at ``i = v``). That right-hand side is the p-value of the
hypothesis "(ε, δ)-DP"; it grows with ε, so the lower bound at confidence ``c`` is the largest ε whose
p-value is still below ``1 - c`` (bisection).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

BISECTION_STEPS = 60
EPS_SEARCH_CAP = 100.0
"""Lower bounds are searched in [0, EPS_SEARCH_CAP]; with a few hundred canaries none gets near it."""
GDP_EPS_CAP = 5000.0
"""Search range of the Gaussian-fit ε estimate (a noiseless run reaches hundreds)."""
GUESS_FRACTION = 0.25
"""Guesses per side as a fraction of the canaries: top 25% "in", bottom 25% "out" (r = m / 2)."""


def count_correct(scores: np.ndarray, included: np.ndarray, k: int) -> int:
    """Correct guesses when the ``k`` top scores are guessed in and the ``k`` bottom ones out."""
    order = np.argsort(scores, kind="stable")
    return int(included[order[-k:]].sum() + (~included[order[:k]]).sum()) if k else 0


def _check(m: int, r: int, v: int, delta: float) -> None:
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")


def p_value(*, m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Largest probability that an (ε, δ)-DP mechanism lets ``r`` guesses get ``>= v`` right (Thm 5.2)."""
    _check(m, r, v, delta)
    if v == 0:
        return 1.0
    p = 1.0 / (1.0 + math.exp(-epsilon))  # accuracy of ε-DP randomized response
    tail = float(stats.binom.sf(v - 1, r, p))  # f(v) = P[Bin >= v]
    below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, p)  # P[Bin = v-1], P[Bin = v-2], ..., P[Bin = 0]
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))  # max_i (f(v-i) - f(v)) / i
    return min(1.0, tail + 2.0 * m * delta * alpha)


def epsilon_lower_bound(*, m: int, r: int, v: int, delta: float, confidence: float) -> float:
    """Largest ε rejected at ``confidence`` by ``v`` correct of ``r`` guesses on ``m`` canaries (0 if none)."""
    _check(m, r, v, delta)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    level = 1.0 - confidence
    if p_value(m=m, r=r, v=v, epsilon=0.0, delta=delta) > level:
        return 0.0
    lo, hi = 0.0, EPS_SEARCH_CAP
    if p_value(m=m, r=r, v=v, epsilon=hi, delta=delta) <= level:
        return hi
    for _ in range(BISECTION_STEPS):  # invariant: p(lo) <= level < p(hi)
        mid = 0.5 * (lo + hi)
        if p_value(m=m, r=r, v=v, epsilon=mid, delta=delta) <= level:
            lo = mid
        else:
            hi = mid
    return lo


def gaussian_epsilon_estimate(scores_in: np.ndarray, scores_out: np.ndarray, *, delta: float) -> float:
    """An ε ESTIMATE (not a bound), after Andrew et al., "One-shot empirical privacy estimation for federated
    learning", ICLR 2024: fit one Gaussian to the scores of included and one to excluded canaries (pooled
    variance), read the separation μ = |mean_in - mean_out| / σ as μ-Gaussian DP and convert to (ε, δ):
    δ(ε) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2). Unlike the one-run bound it is not capped by the number of
    canaries, so a run without noise shows as the large ε it is; it assumes Gaussian score distributions."""
    a, b = np.asarray(scores_in, float), np.asarray(scores_out, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    sigma = math.sqrt((a.var(ddof=1) * (len(a) - 1) + b.var(ddof=1) * (len(b) - 1)) / (len(a) + len(b) - 2))
    gap = abs(a.mean() - b.mean())
    if sigma == 0:
        return math.inf if gap > 0 else 0.0
    return gdp_to_epsilon(gap / sigma, delta=delta)


def gdp_to_epsilon(mu: float, *, delta: float) -> float:
    """Smallest ε with μ-GDP ⊆ (ε, δ)-DP (Dong, Roth & Su 2022, Corollary 2.13), by bisection."""
    if mu <= 0:
        return 0.0

    def delta_at(eps: float) -> float:
        first = stats.norm.cdf(-eps / mu + mu / 2)
        second = math.exp(min(eps + stats.norm.logcdf(-eps / mu - mu / 2), 700.0))
        return first - second

    if delta_at(0.0) <= delta:
        return 0.0
    lo, hi = 0.0, GDP_EPS_CAP
    if delta_at(hi) > delta:
        return math.inf
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_at(mid) > delta else (lo, mid)
    return hi
