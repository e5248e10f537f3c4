"""Budget calibration: noise_for_target_epsilon, steps_within_budget, max_rounds_within_budget."""

from __future__ import annotations

import pytest

from shared_models.privacy import (
    DEFAULT_EPSILON_TOLERANCE,
    epsilon_from_history,
    max_rounds_within_budget,
    noise_for_target_epsilon,
    steps_within_budget,
)

DELTA = 1e-5


@pytest.mark.parametrize(
    ("target", "q", "steps"),
    [(1.0, 0.01, 1000), (3.0, 256 / 60000, 14062), (8.0, 0.1, 200), (0.5, 1.0, 1)],
)
def test_calibrated_noise_meets_target_within_tolerance(target: float, q: float, steps: int) -> None:
    sigma = noise_for_target_epsilon(target_epsilon=target, sample_rate=q, steps=steps, delta=DELTA)
    eps = epsilon_from_history([(sigma, q, steps)], delta=DELTA)
    assert target - DEFAULT_EPSILON_TOLERANCE <= eps <= target
    # Slightly less noise must overshoot (sigma is near the smallest that fits).
    assert epsilon_from_history([(sigma * 0.9, q, steps)], delta=DELTA) > target - DEFAULT_EPSILON_TOLERANCE


def test_tighter_tolerance_is_honoured() -> None:
    tol = 1e-4
    sigma = noise_for_target_epsilon(target_epsilon=2.0, sample_rate=0.02, steps=500, delta=DELTA, tol=tol)
    eps = epsilon_from_history([(sigma, 0.02, 500)], delta=DELTA)
    assert 2.0 - tol <= eps <= 2.0


def test_unreachable_target_and_bad_input_raise() -> None:
    with pytest.raises(ValueError, match="unreachable"):
        noise_for_target_epsilon(target_epsilon=1e-3, sample_rate=0.01, steps=10, delta=DELTA)
    with pytest.raises(ValueError):
        noise_for_target_epsilon(target_epsilon=1.0, sample_rate=0.0, steps=10, delta=DELTA)
    with pytest.raises(ValueError):
        noise_for_target_epsilon(target_epsilon=-1.0, sample_rate=0.1, steps=10, delta=DELTA)
    with pytest.raises(TypeError):
        noise_for_target_epsilon(3.0, 0.1, 10, DELTA)  # type: ignore[misc]


def test_steps_within_budget_agrees_with_epsilon() -> None:
    history = [(1.0, 0.01, 2000)]
    spent_after = epsilon_from_history([*history, (1.0, 0.01, 500)], delta=DELTA)
    common = dict(delta=DELTA, history=history, noise_multiplier=1.0, sample_rate=0.01, steps_per_round=500)
    assert steps_within_budget(target_epsilon=spent_after + 1e-6, **common)
    assert not steps_within_budget(target_epsilon=spent_after - 1e-6, **common)


def test_max_rounds_within_budget_is_the_boundary() -> None:
    history = [(1.1, 0.01, 300)]
    round_ = (1.1, 0.01, 100)
    target = 2.0
    rounds = max_rounds_within_budget(
        target_epsilon=target, delta=DELTA, history=history,
        noise_multiplier=round_[0], sample_rate=round_[1], steps_per_round=round_[2],
    )
    assert rounds > 1
    fits = epsilon_from_history([*history, (round_[0], round_[1], round_[2] * rounds)], delta=DELTA)
    over = epsilon_from_history([*history, (round_[0], round_[1], round_[2] * (rounds + 1))], delta=DELTA)
    assert fits <= target < over


def test_max_rounds_edge_cases() -> None:
    common = dict(delta=DELTA, noise_multiplier=1.0, sample_rate=0.01, steps_per_round=100)
    assert max_rounds_within_budget(target_epsilon=1e-3, history=[], **common) == 0
    assert max_rounds_within_budget(target_epsilon=50.0, history=[], limit=3, **common) == 3
    free = dict(delta=DELTA, noise_multiplier=1.0, sample_rate=0.0, steps_per_round=100)
    assert max_rounds_within_budget(target_epsilon=1.0, history=[], limit=1000, **free) == 1000
    spent = [(0.5, 0.5, 10_000)]
    assert max_rounds_within_budget(target_epsilon=1.0, history=spent, **common) == 0
