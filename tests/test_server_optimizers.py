"""Server optimizers (Reddi et al. 2021): known values, checkpointed state, and config rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.loop import PlainFedAvg
from server.user_dp import PlainDPFedAvg
from shared_models.messages import TrainReply
from server.optimizers import FedAdam, FedAvgM, ServerOptimizer, fedadam_step, fedavgm_step, make_server_optimizer
from shared_models.config import ConfigError, build_config


def test_fedavgm_known_values():
    x, m = np.array([1.0, -2.0]), np.zeros(2)
    x, m = fedavgm_step(x, np.array([2.0, -2.0]), m, lr=0.5, momentum=0.9)  # delta (1, 0)
    np.testing.assert_allclose(m, [1.0, 0.0])
    np.testing.assert_allclose(x, [1.5, -2.0])
    x, m = fedavgm_step(x, np.array([1.5, -1.0]), m, lr=0.5, momentum=0.9)  # delta (0, 1)
    np.testing.assert_allclose(m, [0.9, 1.0])
    np.testing.assert_allclose(x, [1.95, -1.5])


def test_fedadam_known_values():
    x, m, v = fedadam_step(np.array([0.0, 1.0]), np.array([0.1, 1.0]), np.zeros(2), np.zeros(2), lr=0.01,
                           beta1=0.9, beta2=0.99, tau=1e-3)
    np.testing.assert_allclose(m, [0.01, 0.0])
    np.testing.assert_allclose(v, [1e-4, 0.0])
    np.testing.assert_allclose(x, [0.01 * 0.01 / (0.01 + 1e-3), 1.0])  # no movement where delta = 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=20), st.floats(1e-4, 1.0))
def test_fedadam_first_step_moves_towards_the_average_by_at_most_lr_over_sqrt_one_minus_beta2(deltas, lr):
    d = np.array(deltas)
    x1, _, _ = fedadam_step(np.zeros_like(d), d, np.zeros_like(d), np.zeros_like(d), lr=lr, beta1=0.9,
                            beta2=0.99, tau=1e-3)
    assert np.all(x1 * d >= 0)  # never against the average (a subnormal delta's step underflows to 0)
    visible = np.abs(d) > 1e-300
    assert np.array_equal(np.sign(x1[visible]), np.sign(d[visible]))
    assert np.all(np.abs(x1) <= lr * 0.1 / np.sqrt(0.01) + 1e-12)


def _reply(node, weights, n):
    return TrainReply(node=node, shared={"w": np.asarray(weights, np.float32)}, num_examples=n)


def test_plain_fedavg_is_the_weighted_average_and_fedavgm_adds_momentum():
    for opt, expected in ((ServerOptimizer(lr=1.0), [2.5]), (FedAvgM(lr=1.0, momentum=0.5), [2.5])):
        strategy = PlainFedAvg({"w": np.zeros(1, np.float32)}, opt)
        strategy.begin(1, [0, 1])
        strategy.offer(_reply(0, [1.0], 1))
        strategy.offer(_reply(1, [3.0], 3))
        assert strategy.finish(min_train_nodes=1)
        np.testing.assert_allclose(strategy.shared["w"], expected)  # first momentum step = the average
    strategy.begin(2, [0])  # a round whose average equals the model: momentum alone keeps it moving
    strategy.offer(_reply(0, [2.5], 1))
    assert strategy.finish(min_train_nodes=1)
    np.testing.assert_allclose(strategy.shared["w"], [2.5 + 0.5 * 2.5])


def test_state_round_trip_continues_exactly():
    rng = np.random.default_rng(0)
    avgs = [{"a": rng.normal(size=3), "b": rng.normal(size=(2, 2))} for _ in range(4)]
    x0 = {"a": np.zeros(3), "b": np.zeros((2, 2))}
    ref, x = FedAdam(lr=0.1), dict(x0)
    for avg in avgs:
        x = ref.step(x, avg)
    first, y = FedAdam(lr=0.1), dict(x0)
    for avg in avgs[:2]:
        y = first.step(y, avg)
    second = FedAdam(lr=0.1)
    second.load(first.state())
    for avg in avgs[2:]:
        y = second.step(y, avg)
    assert all(np.array_equal(x[k], y[k]) for k in x)
    with pytest.raises(ValueError, match="slot"):
        FedAvgM(lr=1.0).load({"v/a": np.zeros(3)})


def test_unknown_optimizer_names_the_key():
    with pytest.raises(ValueError, match="server-optimizer"):
        make_server_optimizer("fedyogi", lr=1.0, momentum=0.9, beta2=0.99, tau=1e-3)


@pytest.mark.parametrize("sections,needle", [
    ({"federated": {"server-optimizer": "fedadam"}, "he": {"enabled": True}}, "he.enabled = true"),
    ({"federated": {"server-optimizer": "fedavgm"}, "he": {"enabled": False}, "privacy": {"mode": "user"}},
     "privacy.mode = 'user'"),
    ({"federated": {"server-optimizer": "fedadam"}, "he": {"enabled": False}, "privacy": {"mode": "window"},
      "model": {"kind": "long"}}, "privacy.mode = 'window'"),
    ({"federated": {"server-optimizer": "sgd"}}, "fedavg | fedavgm | fedadam"),
    ({"federated": {"server-optimizer": "fedadam", "server-beta2": 1.0}, "he": {"enabled": False}},
     "server_beta2"),
])
def test_config_refuses_what_a_blind_or_user_level_server_cannot_run(sections, needle):
    with pytest.raises(ConfigError, match="server_optimizer|server_beta2") as err:
        build_config(sections)
    assert needle in str(err.value)


def test_the_config_accepts_exactly_the_registered_optimizers():
    from server.optimizers import SERVER_OPTIMIZERS as REGISTRY
    from shared_models.config import SERVER_OPTIMIZERS as NAMES

    assert set(REGISTRY) == set(NAMES)  # the config validates names it cannot import (server depends on it)


def test_ema_known_values_and_devices_still_train_from_the_raw_model():
    from server.optimizers import ema_step

    np.testing.assert_allclose(ema_step(np.array([1.0, 0.0]), np.array([3.0, 2.0]), decay=0.75), [1.5, 0.5])
    strategy = PlainFedAvg({"w": np.zeros(1, np.float32)}, ServerOptimizer(lr=1.0), ema_decay=0.5)
    assert strategy.evaluation_state() is strategy.shared  # no round yet: nothing averaged
    for r, value in enumerate((4.0, 8.0, 0.0), start=1):
        strategy.begin(r, [0])
        strategy.offer(_reply(0, [value], 1))
        assert strategy.finish(min_train_nodes=1)
    np.testing.assert_allclose(strategy.broadcast()["w"], [0.0])  # what devices train from: the last average
    ema = strategy.evaluation_state()["w"]  # 4, then 0.5*4 + 0.5*8 = 6, then 0.5*6 + 0.5*0 = 3
    np.testing.assert_allclose(ema, [3.0])
    assert ema.dtype == np.float32


def test_a_plaintext_dp_server_keeps_an_ema_of_the_released_models():
    """Under user- or window-level DP the released models are already private: their EMA is post-processing."""
    strategy = PlainDPFedAvg({"w": np.zeros(1, np.float32)}, server_lr=1.0, denominator=1.0, ema_decay=0.5)
    for r, value in enumerate((4.0, 4.0, -8.0), start=1):  # models 4, 8, 0 -> EMA 4, 6, 3
        strategy.begin(r, [0])
        strategy.offer(_reply(0, [value], 1))
        assert strategy.finish(min_train_nodes=1)
    np.testing.assert_allclose(strategy.broadcast()["w"], [0.0])
    np.testing.assert_allclose(strategy.evaluation_state()["w"], [3.0])
    cfg = build_config({"federated": {"server-ema": 0.5, "personal-short-term": False}, "he": {"enabled": False},
                        "privacy": {"mode": "window"}})
    assert cfg.federated.server_ema == 0.5


@pytest.mark.parametrize("sections,needle", [
    ({"federated": {"server-ema": 0.9}, "he": {"enabled": True}}, "he.enabled = true"),
    ({"federated": {"server-ema": 1.0}, "he": {"enabled": False}}, "in [0, 1)"),
])
def test_config_refuses_an_ema_the_server_cannot_keep(sections, needle):
    with pytest.raises(ConfigError, match="server_ema") as err:
        build_config(sections)
    assert needle in str(err.value)
