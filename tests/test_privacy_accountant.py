"""RDPAccountant (stateful wrapper) and the accountant registry."""

from __future__ import annotations

import json

import pytest

from shared_models.privacy import (
    ACCOUNTANTS,
    RDPAccountant,
    accountant_from_dict,
    epsilon_from_history,
    make_accountant,
)

DELTA = 1e-5


def test_step_merges_consecutive_identical_entries() -> None:
    acc = RDPAccountant()
    acc.step(noise_multiplier=1.0, sample_rate=0.01)
    acc.step(noise_multiplier=1.0, sample_rate=0.01, num_steps=9)
    acc.step(noise_multiplier=2.0, sample_rate=0.01, num_steps=5)
    acc.step(noise_multiplier=1.0, sample_rate=0.01, num_steps=3)
    acc.step(noise_multiplier=1.0, sample_rate=0.01, num_steps=0)
    assert acc.history == ((1.0, 0.01, 10), (2.0, 0.01, 5), (1.0, 0.01, 3))
    assert acc.total_steps == 18
    assert len(acc) == 3


def test_get_epsilon_matches_pure_function() -> None:
    acc = RDPAccountant()
    assert acc.get_epsilon(delta=DELTA) == 0.0
    acc.step(noise_multiplier=1.1, sample_rate=0.02, num_steps=400)
    acc.step(noise_multiplier=0.9, sample_rate=0.01, num_steps=100)
    expected = epsilon_from_history([(1.1, 0.02, 400), (0.9, 0.01, 100)], delta=DELTA)
    assert acc.get_epsilon(delta=DELTA) == pytest.approx(expected, rel=1e-12)
    eps, order = acc.get_privacy_spent(delta=DELTA)
    assert eps == acc.get_epsilon(delta=DELTA) and order in acc.orders


def test_epsilon_if_predicts_without_recording() -> None:
    acc = RDPAccountant()
    acc.step(noise_multiplier=1.0, sample_rate=0.01, num_steps=100)
    before = acc.get_epsilon(delta=DELTA)
    predicted = acc.epsilon_if(noise_multiplier=1.0, sample_rate=0.01, num_steps=50, delta=DELTA)
    assert acc.history == ((1.0, 0.01, 100),) and acc.get_epsilon(delta=DELTA) == before
    acc.step(noise_multiplier=1.0, sample_rate=0.01, num_steps=50)
    assert acc.get_epsilon(delta=DELTA) == pytest.approx(predicted, rel=1e-12)
    assert predicted > before


def test_matches_opacus_accountant() -> None:
    accountants = pytest.importorskip("opacus.accountants")
    theirs = accountants.RDPAccountant()
    ours = RDPAccountant(orders=theirs.DEFAULT_ALPHAS)
    for sigma, q, n in [(1.0, 0.01, 30), (1.3, 0.02, 20), (1.0, 0.01, 10)]:
        for _ in range(n):
            theirs.step(noise_multiplier=sigma, sample_rate=q)
        ours.step(noise_multiplier=sigma, sample_rate=q, num_steps=n)
    assert ours.history == tuple(theirs.history)
    assert ours.get_epsilon(delta=DELTA) == pytest.approx(theirs.get_epsilon(delta=DELTA), rel=1e-6)


def test_privacy_parameters_are_keyword_only() -> None:
    acc = RDPAccountant()
    with pytest.raises(TypeError):
        acc.step(1.0, 0.01)  # type: ignore[misc]
    with pytest.raises(TypeError):
        acc.get_epsilon(DELTA)  # type: ignore[misc]
    with pytest.raises(ValueError):
        acc.step(noise_multiplier=1.0, sample_rate=2.0)


def test_to_dict_round_trips_through_strict_json() -> None:
    acc = RDPAccountant(orders=[1.5, 2.0, 8.0, 32.0])
    acc.step(noise_multiplier=1.0, sample_rate=0.01, num_steps=100)
    acc.step(noise_multiplier=2.0, sample_rate=0.05, num_steps=7)
    state = json.loads(json.dumps(acc.to_dict(), allow_nan=False))
    restored = RDPAccountant.from_dict(state)
    assert restored.history == acc.history and restored.orders == acc.orders
    assert restored.get_epsilon(delta=DELTA) == acc.get_epsilon(delta=DELTA)
    assert accountant_from_dict(state).get_epsilon(delta=DELTA) == acc.get_epsilon(delta=DELTA)


@pytest.mark.parametrize(
    "state",
    [
        {"mechanism": "gdp", "history": []},
        {"mechanism": "rdp", "history": [[1.0, 0.1]]},
        {"mechanism": "rdp", "history": [[-1.0, 0.1, 3]]},
        {"mechanism": "rdp", "history": "nope"},
        {"mechanism": "rdp", "history": [], "orders": [0.5]},
    ],
)
def test_from_dict_rejects_bad_state(state: dict) -> None:
    with pytest.raises(ValueError):
        RDPAccountant.from_dict(state)


def test_registry() -> None:
    assert ACCOUNTANTS["rdp"] is RDPAccountant
    acc = make_accountant("rdp")
    assert isinstance(acc, RDPAccountant) and acc.mechanism == "rdp"
    with pytest.raises(ValueError) as err:
        make_accountant("gdp")
    assert "'gdp'" in str(err.value) and "'rdp'" in str(err.value)
    with pytest.raises(ValueError, match="'prv'"):
        accountant_from_dict({"mechanism": "prv", "history": []})
