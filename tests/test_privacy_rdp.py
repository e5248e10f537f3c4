"""RDP math of shared_models.privacy.rdp: known values, Opacus cross-check, properties."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_models.privacy import (
    DEFAULT_ORDERS,
    compute_rdp,
    epsilon_from_history,
    rdp_from_history,
    rdp_to_epsilon,
)

DELTA = 1e-5

# Abadi et al. 2016 MNIST setting: sigma=1.1, lot 256 of 60000, 60 epochs.
MNIST_SIGMA = 1.1
MNIST_Q = 256 / 60000
MNIST_STEPS = int(60 * 60000 / 256)  # 14062
# Pinned from Opacus 1.6 RDPAccountant (DEFAULT_ALPHAS) and dp-accounting 0.6: eps at alpha=8.1.
MNIST_EPS_OPACUS_ALPHAS = 2.5965558689607486
MNIST_BEST_ORDER_OPACUS_ALPHAS = 8.1
# Pinned for this package's DEFAULT_ORDERS (best order 8).
MNIST_EPS_DEFAULT_ORDERS = 2.596981178594854

# A sub-grid of Opacus' default alphas (fractional + integer) plus large orders.
CROSS_CHECK_ORDERS = [1.1, 1.5, 1.9, 2.0, 2.5, 3.0, 4.7, 8.1, 10.9, 12.0, 32.0, 63.0, 128.0, 256.0]
CROSS_CHECK_REL_TOL = 1e-6

# Opacus' own default alphas, copied here as data so the pinned value is independent of opacus.
OPACUS_DEFAULT_ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))

sigmas = st.floats(min_value=0.3, max_value=10.0)
rates = st.floats(min_value=1e-4, max_value=1.0)
step_counts = st.integers(min_value=1, max_value=100_000)
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None, database=None)


def _eps(sigma: float, q: float, steps: int) -> float:
    return epsilon_from_history([(sigma, q, steps)], delta=DELTA)


def _assert_le(smaller: float, larger: float) -> None:
    assert smaller <= larger * (1 + 1e-9) + 1e-12


def test_package_imports_no_framework() -> None:
    code = (
        "import sys, shared_models.privacy\n"
        "bad = [m for m in ('torch', 'opacus', 'flwr', 'tenseal') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("q", [1e-3, 0.01, 0.1, 0.5, 0.9, 1.0])
def test_compute_rdp_matches_opacus(sigma: float, q: float) -> None:
    opacus_rdp = pytest.importorskip("opacus.accountants.analysis.rdp")
    for steps in (1, 1000):
        ours = compute_rdp(noise_multiplier=sigma, sample_rate=q, steps=steps, orders=CROSS_CHECK_ORDERS)
        theirs = np.asarray(opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=CROSS_CHECK_ORDERS))
        np.testing.assert_allclose(ours, theirs, rtol=CROSS_CHECK_REL_TOL, atol=0)


@pytest.mark.parametrize(
    ("q", "sigma", "alpha"),
    [(1e-4, 5.0, 1.1), (1e-3, 5.0, 1.5), (0.01, 1.0, 2.5), (0.3, 0.7, 3.0), (0.01, 1.0, 17.0), (0.05, 2.0, 6.0)],
)
def test_compute_rdp_matches_high_precision_integral(q: float, sigma: float, alpha: float) -> None:
    ours = compute_rdp(noise_multiplier=sigma, sample_rate=q, steps=1, orders=[alpha])[0]
    assert ours == pytest.approx(_reference_rdp(q, sigma, alpha), rel=1e-5)


def _reference_rdp(q: float, sigma: float, alpha: float) -> float:
    """A_alpha = E_{z~N(0,s^2)}[((1-q) + q exp((2z-1)/(2 s^2)))^alpha] (Mironov et al. 2019), by mpmath."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(40):
        s, qq, a = mpmath.mpf(sigma), mpmath.mpf(q), mpmath.mpf(alpha)

        def integrand(z):  # type: ignore[no-untyped-def]
            return mpmath.npdf(z, 0, s) * ((1 - qq) + qq * mpmath.exp((2 * z - 1) / (2 * s * s))) ** a

        a_alpha = mpmath.quad(integrand, [-mpmath.inf, -10 * s, 0, 1, 10 * s, mpmath.inf])
        return float(mpmath.log(a_alpha) / (a - 1))


@pytest.mark.parametrize(("q", "sigma"), [(1e-4, 20.0), (1e-7, 1.0), (2e-8, 0.5), (1e-9, 30.0)])
def test_tiny_rate_fractional_orders_are_conservative(q: float, sigma: float) -> None:
    """Where the fractional series loses precision, an upper bound (never a negative value) is used."""
    orders = [1.1, 1.5, 1.9, 2.0, 7.3, 8.0]
    rdp = compute_rdp(noise_multiplier=sigma, sample_rate=q, steps=1, orders=orders)
    assert np.all(rdp >= 0)
    slack = 1 + 1e-12
    assert max(rdp[0], rdp[1], rdp[2]) <= rdp[3] * slack and rdp[4] <= rdp[5] * slack
    if q >= 1e-4:
        assert rdp[0] >= _reference_rdp(q, sigma, 1.1) * (1 - 1e-9)
    assert epsilon_from_history([(sigma, q, 10**6)], delta=DELTA) >= 0


def test_mnist_known_value_with_opacus_alphas() -> None:
    rdp = compute_rdp(noise_multiplier=MNIST_SIGMA, sample_rate=MNIST_Q, steps=MNIST_STEPS, orders=OPACUS_DEFAULT_ALPHAS)
    eps, order = rdp_to_epsilon(rdp=rdp, orders=OPACUS_DEFAULT_ALPHAS, delta=DELTA)
    assert eps == pytest.approx(MNIST_EPS_OPACUS_ALPHAS, rel=1e-8)
    assert order == MNIST_BEST_ORDER_OPACUS_ALPHAS


def test_mnist_known_value_default_orders() -> None:
    assert _eps(MNIST_SIGMA, MNIST_Q, MNIST_STEPS) == pytest.approx(MNIST_EPS_DEFAULT_ORDERS, rel=1e-8)


def test_mnist_matches_live_opacus_accountant() -> None:
    accountants = pytest.importorskip("opacus.accountants")
    acc = accountants.RDPAccountant()
    acc.history = [(MNIST_SIGMA, MNIST_Q, MNIST_STEPS)]
    eps = epsilon_from_history([(MNIST_SIGMA, MNIST_Q, MNIST_STEPS)], delta=DELTA, orders=acc.DEFAULT_ALPHAS)
    assert eps == pytest.approx(acc.get_epsilon(delta=DELTA), rel=1e-8)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.7])
def test_full_batch_is_plain_gaussian(sigma: float) -> None:
    orders = np.asarray(DEFAULT_ORDERS)
    rdp = compute_rdp(noise_multiplier=sigma, sample_rate=1.0, steps=1, orders=DEFAULT_ORDERS)
    np.testing.assert_array_equal(rdp, orders / (2 * sigma**2))
    rdp10 = compute_rdp(noise_multiplier=sigma, sample_rate=1.0, steps=10, orders=DEFAULT_ORDERS)
    np.testing.assert_allclose(rdp10, 10 * orders / (2 * sigma**2), rtol=1e-15)


def test_edge_cases() -> None:
    zero_q = compute_rdp(noise_multiplier=1.0, sample_rate=0.0, steps=100, orders=DEFAULT_ORDERS)
    assert np.all(zero_q == 0.0)
    assert rdp_to_epsilon(rdp=zero_q, orders=DEFAULT_ORDERS, delta=DELTA)[0] == 0.0
    no_noise = compute_rdp(noise_multiplier=0.0, sample_rate=0.1, steps=1, orders=DEFAULT_ORDERS)
    assert np.all(np.isinf(no_noise))
    assert rdp_to_epsilon(rdp=no_noise, orders=DEFAULT_ORDERS, delta=DELTA)[0] == math.inf
    assert np.all(compute_rdp(noise_multiplier=0.0, sample_rate=0.1, steps=0, orders=DEFAULT_ORDERS) == 0.0)
    assert epsilon_from_history([], delta=DELTA) == 0.0


def test_balle_conversion_formula() -> None:
    orders = [2.0, 4.0, 16.0]
    rdp = [0.5, 1.0, 3.0]
    expected = [r + math.log1p(-1 / a) - (math.log(DELTA) + math.log(a)) / (a - 1) for r, a in zip(rdp, orders)]
    eps, order = rdp_to_epsilon(rdp=rdp, orders=orders, delta=DELTA)
    assert eps == pytest.approx(min(expected), rel=1e-14)
    assert order == orders[int(np.argmin(expected))]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_multiplier": -1.0, "sample_rate": 0.1, "steps": 1},
        {"noise_multiplier": 1.0, "sample_rate": 1.5, "steps": 1},
        {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": -1},
        {"noise_multiplier": float("nan"), "sample_rate": 0.1, "steps": 1},
        {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 1, "orders": [1.0, 2.0]},
        {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 1, "orders": [2.0, float("inf")]},
        {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 1, "orders": []},
    ],
)
def test_compute_rdp_rejects_bad_input(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        compute_rdp(**{"orders": DEFAULT_ORDERS, **kwargs})


def test_rejects_bad_types_and_delta() -> None:
    with pytest.raises(TypeError):
        compute_rdp(noise_multiplier=1.0, sample_rate=0.1, steps=True, orders=DEFAULT_ORDERS)
    with pytest.raises(TypeError):
        compute_rdp(noise_multiplier=1.0, sample_rate=0.1, steps=1.5, orders=DEFAULT_ORDERS)  # type: ignore[arg-type]
    for delta in (0.0, 1.0, -1e-5):
        with pytest.raises(ValueError):
            epsilon_from_history([(1.0, 0.1, 1)], delta=delta)
    with pytest.raises(ValueError):
        rdp_to_epsilon(rdp=[1.0], orders=[2.0, 3.0], delta=DELTA)


@PROPERTY_SETTINGS
@given(sigma=sigmas, q=rates, steps=step_counts, extra=st.integers(min_value=1, max_value=10_000))
def test_epsilon_increases_with_steps(sigma: float, q: float, steps: int, extra: int) -> None:
    _assert_le(_eps(sigma, q, steps), _eps(sigma, q, steps + extra))


@PROPERTY_SETTINGS
@given(sigma=sigmas, factor=st.floats(min_value=1.01, max_value=4.0), q=rates, steps=step_counts)
def test_epsilon_decreases_with_noise(sigma: float, factor: float, q: float, steps: int) -> None:
    _assert_le(_eps(sigma * factor, q, steps), _eps(sigma, q, steps))


@PROPERTY_SETTINGS
@given(sigma=sigmas, q=st.floats(min_value=1e-4, max_value=0.99), factor=st.floats(min_value=1.01, max_value=10.0), steps=step_counts)
def test_epsilon_increases_with_sample_rate(sigma: float, q: float, factor: float, steps: int) -> None:
    _assert_le(_eps(sigma, q, steps), _eps(sigma, min(1.0, q * factor), steps))


def test_strict_monotonicity_on_known_points() -> None:
    assert _eps(1.0, 0.01, 100) < _eps(1.0, 0.01, 1000)
    assert _eps(2.0, 0.01, 1000) < _eps(1.0, 0.01, 1000)
    assert _eps(1.0, 0.01, 1000) < _eps(1.0, 0.02, 1000)


@PROPERTY_SETTINGS
@given(sigma=sigmas, q=rates, a=step_counts, b=step_counts)
def test_composition_equals_summed_steps(sigma: float, q: float, a: int, b: int) -> None:
    split = rdp_from_history([(sigma, q, a), (sigma, q, b)])
    joint = rdp_from_history([(sigma, q, a + b)])
    np.testing.assert_allclose(split, joint, rtol=1e-12)
    assert epsilon_from_history([(sigma, q, a), (sigma, q, b)], delta=DELTA) == pytest.approx(
        _eps(sigma, q, a + b), rel=1e-12
    )


def test_heterogeneous_history_composes_additively() -> None:
    history = [(1.0, 0.01, 100), (2.0, 0.05, 50), (0.8, 0.001, 1000)]
    parts = sum(compute_rdp(noise_multiplier=s, sample_rate=q, steps=n, orders=DEFAULT_ORDERS) for s, q, n in history)
    np.testing.assert_allclose(rdp_from_history(history), parts, rtol=1e-15)
