"""Steinke-Nasr-Jagielski one-run bound: closed-form cases and monotonicity."""

from __future__ import annotations

import math

import pytest

from simulations.audit.bound import epsilon_lower_bound, p_value


def test_perfect_guesses_without_delta_match_the_closed_form() -> None:
    # r = v: P[Bin(r, p) >= r] = p^r = 0.05  =>  p = 0.05^(1/r), eps = log(p / (1 - p))
    for r in (20, 50, 100):
        p = 0.05 ** (1 / r)
        expected = math.log(p / (1 - p))
        assert epsilon_lower_bound(m=2 * r, r=r, v=r, delta=0.0, confidence=0.95) == pytest.approx(expected, abs=1e-6)
    assert epsilon_lower_bound(m=100, r=50, v=50, delta=0.0, confidence=0.95) == pytest.approx(2.7847, abs=1e-3)


def test_chance_level_gives_no_bound_and_more_correct_gives_more() -> None:
    assert epsilon_lower_bound(m=200, r=100, v=50, delta=1e-5, confidence=0.95) == 0.0
    bounds = [epsilon_lower_bound(m=200, r=100, v=v, delta=1e-5, confidence=0.95) for v in (70, 80, 90, 100)]
    assert bounds == sorted(bounds) and bounds[0] > 0
    assert bounds[-1] == pytest.approx(3.4875, abs=1e-3)  # what a perfect no-DP audit of 200 canaries reaches


def test_delta_only_weakens_the_bound() -> None:
    no_delta = epsilon_lower_bound(m=1000, r=100, v=95, delta=0.0, confidence=0.95)
    with_delta = epsilon_lower_bound(m=1000, r=100, v=95, delta=1e-4, confidence=0.95)
    assert 0 < with_delta < no_delta
    assert p_value(m=1000, r=100, v=95, epsilon=1.0, delta=1e-4) > p_value(m=1000, r=100, v=95, epsilon=1.0, delta=0)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="correct"):
        epsilon_lower_bound(m=10, r=5, v=6, delta=0.0, confidence=0.95)
    with pytest.raises(ValueError, match="confidence"):
        epsilon_lower_bound(m=10, r=5, v=5, delta=0.0, confidence=1.0)


def test_gdp_conversion_matches_the_gaussian_mechanism_and_the_estimate_separates_noise_from_none():
    """μ = 1 is the Gaussian mechanism with σ = sensitivity: ε ≈ 4.38 at δ = 1e-5 (analytic Gaussian)."""
    import numpy as np

    from simulations.audit.bound import gaussian_epsilon_estimate, gdp_to_epsilon

    assert gdp_to_epsilon(1.0, delta=1e-5) == pytest.approx(4.377, abs=0.01)
    assert gdp_to_epsilon(2.0, delta=1e-5) > 2 * gdp_to_epsilon(1.0, delta=1e-5) > 0 == gdp_to_epsilon(0.0, delta=1e-5)
    rng = np.random.default_rng(0)
    noisy = gaussian_epsilon_estimate(rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.0, 500), delta=1e-5)
    quiet = gaussian_epsilon_estimate(rng.normal(1.0, 0.01, 500), rng.normal(0.0, 0.01, 500), delta=1e-5)
    assert 3.0 < noisy < 6.0 and quiet > 100 * noisy
