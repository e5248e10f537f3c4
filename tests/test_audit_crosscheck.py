"""Our RDP accountant against Google's dp_accounting (RDP and PLD), with pinned known values."""

from __future__ import annotations

import itertools
import math

import pytest

from shared_models.privacy import DEFAULT_ORDERS, epsilon_from_history
from simulations.audit.crosscheck import REL_TOLERANCE, cross_check, pld_epsilon, rdp_epsilon

DELTA = 1e-5
GRID = list(itertools.product((0.8, 1.5, 3.0), (0.01, 0.1, 1.0), (1, 10, 100)))


@pytest.mark.parametrize("sigma,q,steps", GRID)
def test_ours_agrees_with_dp_accounting_rdp_on_the_grid(sigma: float, q: float, steps: int) -> None:
    history = ((sigma, q, steps),)
    ours = epsilon_from_history(history, delta=DELTA)
    same_orders = rdp_epsilon(history, delta=DELTA, orders=DEFAULT_ORDERS)
    assert abs(ours - same_orders) / same_orders < 0.005  # same math, same orders: < 0.5% (REL_TOLERANCE 5%)
    own_grid = rdp_epsilon(history, delta=DELTA)  # the library's finer order grid can only help it...
    assert abs(ours - own_grid) / own_grid < 0.06  # ...by at most ~6% here (worst: sigma=0.8, q=0.01, 100 steps)
    assert pld_epsilon(history, delta=DELTA) <= ours  # PLD is the tighter upper bound


def test_pinned_values() -> None:
    # sigma 1.5, full batch, 10 steps: both accountants give 11.46836 at delta 1e-5
    assert epsilon_from_history([(1.5, 1.0, 10)], delta=DELTA) == pytest.approx(11.468358, abs=1e-5)
    assert rdp_epsilon(((1.5, 1.0, 10),), delta=DELTA, orders=DEFAULT_ORDERS) == pytest.approx(11.468358, abs=1e-5)
    # sigma 3, q 0.01, 100 steps
    assert rdp_epsilon(((3.0, 0.01, 100),), delta=DELTA, orders=DEFAULT_ORDERS) == pytest.approx(0.142926, abs=1e-5)
    # the smoke run's device round (sigma 1, q 1, 2 steps): RDP 7.0879, PLD 6.573, PLD replace-one 15.46
    check = cross_check([(1.0, 1.0, 2)], ours=epsilon_from_history([(1.0, 1.0, 2)], delta=DELTA), delta=DELTA,
                        orders=DEFAULT_ORDERS)
    assert check.ours == pytest.approx(7.08786, abs=1e-4) and check.agrees and not check.understated
    assert check.pld == pytest.approx(6.573, abs=0.01)
    assert check.pld_replace_one == pytest.approx(15.46, abs=0.05)


def test_multi_round_history_composes() -> None:
    history = [(1.0, 0.1, 20), (1.2, 0.2, 10)]
    ours = epsilon_from_history(history, delta=DELTA)
    check = cross_check(history, ours=ours, delta=DELTA, orders=DEFAULT_ORDERS)
    assert check.relative_difference < 0.005 and check.agrees
    assert check.rdp_same_orders > epsilon_from_history(history[:1], delta=DELTA)


def test_disagreement_and_understatement_are_flagged() -> None:
    history = [(1.0, 0.1, 20)]
    true = epsilon_from_history(history, delta=DELTA)
    low = cross_check(history, ours=true * 0.5, delta=DELTA, orders=DEFAULT_ORDERS)
    assert not low.agrees and low.understated and low.relative_difference > REL_TOLERANCE
    high = cross_check(history, ours=true * 1.2, delta=DELTA, orders=DEFAULT_ORDERS)
    assert not high.agrees and not high.understated


def test_edge_histories() -> None:
    assert cross_check([], ours=0.0, delta=DELTA, orders=DEFAULT_ORDERS).agrees
    noiseless = cross_check([(0.0, 0.5, 3)], ours=math.inf, delta=DELTA, orders=DEFAULT_ORDERS)
    assert noiseless.agrees and noiseless.to_json()["rdp_same_orders"] is None
