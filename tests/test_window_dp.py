"""Window-level DP as distributed DP-SGD (``privacy.mode = window``): the device's reply, its noise share,
the per-window gradients, the server's accountant against dp_accounting, and a small end-to-end run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from client.round import HE_VISIBLE_METRICS, DeviceContext, RoundInput, train_round
from client.store import DeviceStore
from client.window_dp import WindowGradients, window_noise_std, window_update
from server.job import prepare_keys
from server.user_dp import UserAccountant
from shared_models.config import ConfigError, build_config
from shared_models.datasets.population import DeviceData, population
from shared_models.model.state import build_device_model, flatten, initial_shared, shared_keys
from shared_models.privacy import epsilon_from_history
from shared_models.privacy.window_level import box_project, clip_rows, noisy_negative_sum
from shared_models.train.sequences import build_windows
from shared_models.train.window_grads import clipped_gradient_sum, per_window_gradients
from tests.fed_helpers import synthetic_csv, tiny_config

WINDOW = {"mode": "window", "noise-multiplier": 1.0, "max-grad-norm": 1.0, "window-sample-rate": 1.0,
          "expected-batch": 8.0, "target-epsilon": 50.0, "delta": 1e-5, "reproducible-noise": False}
FED = {"personal-short-term": False, "min-train-nodes": 4}


def _cfg(tmp_path, *, he: bool, **privacy):
    return tiny_config(synthetic_csv(tmp_path / "s.csv"), privacy={**WINDOW, **privacy}, federated=dict(FED),
                       he={"enabled": he, "max-weight": 1, "clip-range": 8.0})


def _reply(cfg, pop, keys, data, store_dir, *, he: bool):
    device = DeviceContext(data, DeviceStore(store_dir), pop.text, pop.max_interactions, keys)
    received = None if he else initial_shared(cfg, pop.num_items, pop.text)
    return train_round(RoundInput(device, cfg, received, 1, node=0))


@pytest.mark.parametrize("he", [False, True])
def test_reply_is_the_same_with_zero_one_or_two_windows(tmp_path, he):
    cfg = _cfg(tmp_path, he=he)
    pop = population(cfg)
    keys = prepare_keys(cfg, pop, tmp_path)
    base, window = pop.devices[0], cfg.model.max_len + 1
    datas = {"zero": DeviceData(base.device_id, base.train[-1:], base.valid, base.test, base.num_items),
             "one": DeviceData(base.device_id, base.train[-window:], base.valid, base.test, base.num_items),
             "two": DeviceData(base.device_id, np.concatenate([base.train[-window:]] * 2), base.valid, base.test,
                               base.num_items)}
    counts = [len(build_windows([d.train], max_len=cfg.model.max_len)) for d in datas.values()]
    assert counts == [0, 1, 2]
    replies = [_reply(cfg, pop, keys, d, tmp_path / name, he=he) for name, d in datas.items()]
    for r in replies:
        assert not r.refused and not r.error and r.reason == ""
        assert r.num_examples == replies[0].num_examples == (0 if he else 1)  # weight 1 (inside the ciphertext)
        assert set(r.metrics) == set(replies[0].metrics) and set(r.metrics) <= set(HE_VISIBLE_METRICS)
        if he:
            assert len(r.payload) == len(replies[0].payload) and r.signature
        else:
            assert [(k, v.shape) for k, v in r.shared.items()] == [(k, v.shape) for k, v in replies[0].shared.items()]


def test_noise_shares_of_min_train_nodes_devices_sum_to_sigma_times_clip(tmp_path):
    sigma, clip = 1.5, 0.7
    cfg = _cfg(tmp_path, he=False, **{"noise-multiplier": sigma, "max-grad-norm": clip})
    pop = population(cfg)
    m = cfg.federated.min_train_nodes
    total = None
    for i, dev in enumerate(pop.devices[:m]):  # no window: each reply is its noise share alone (device secrets)
        empty = DeviceData(dev.device_id, dev.train[-1:], dev.valid, dev.test, dev.num_items)
        vec = flatten(_reply(cfg, pop, "", empty, tmp_path / f"d{i}", he=False).shared)
        total = vec if total is None else total + vec
    d = total.size
    assert d > 2000
    assert abs(total.std() / (sigma * clip) - 1) < 6 / math.sqrt(2 * d)  # std sigma*C per coordinate
    assert abs(total.mean()) < 6 * sigma * clip / math.sqrt(d)
    assert window_noise_std(cfg) == pytest.approx(sigma * clip / math.sqrt(m))


def test_device_sends_minus_the_clipped_sum_plus_its_noise_share(tmp_path):
    cfg = _cfg(tmp_path, he=True)
    template = {"a": np.zeros((2, 3)), "b": np.zeros(4)}
    clipped = np.linspace(-20, 20, 10)
    out = flatten(window_update(WindowGradients(1, 1, 1.0, 1.0, 1.0, 0.0, clipped_sum=clipped), template, cfg=cfg,
                                noise_seed=7))
    rng = np.random.default_rng([7, 4])
    bound = cfg.he.clip_range - 8 * window_noise_std(cfg)
    expected = -(np.clip(clipped, -bound, bound) + rng.normal(0.0, window_noise_std(cfg), size=10))
    np.testing.assert_allclose(out, expected)


def test_box_projection_keeps_the_sensitivity():
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = rng.normal(0, 3, size=20)
        g = rng.normal(size=20)
        g *= rng.uniform(0, 1) / np.linalg.norm(g)  # one clipped window, norm <= 1
        assert np.linalg.norm(box_project(s + g, bound=2.0) - box_project(s, bound=2.0)) <= 1.0 + 1e-12
    rows, norms = clip_rows(np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]]), clip=1.0)
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])
    np.testing.assert_allclose(norms, [5.0, 0.5, 0.0])
    np.testing.assert_allclose(noisy_negative_sum(np.ones(3), noise_std=0.0, rng=rng), -np.ones(3))


def test_opacus_per_window_gradients_equal_one_window_at_a_time(tmp_path):
    cfg = _cfg(tmp_path, he=False)
    model = build_device_model(cfg, 40, None, "d")
    windows = build_windows([np.random.default_rng(1).integers(1, 40, size=4 * cfg.model.max_len)],
                            max_len=cfg.model.max_len)
    keys = shared_keys(model, personal_short_term=False)
    rows = per_window_gradients(model, windows, keys=keys)
    params = dict(model.named_parameters())
    for i in range(len(windows)):
        model.zero_grad(set_to_none=True)
        model.calculate_loss({"inputs": torch.from_numpy(windows.inputs[i:i + 1]),
                              "targets": torch.from_numpy(windows.targets[i:i + 1])}).backward()
        one = torch.cat([(params[k].grad if params[k].grad is not None else torch.zeros_like(params[k])).reshape(-1)
                         for k in keys]).double().numpy()
        np.testing.assert_allclose(rows[i], one, atol=1e-5)
    total, norms = clipped_gradient_sum(model, windows, keys=keys, clip=0.5)
    assert (norms > 0.5).all()  # every window clipped: the sum has norm <= len * clip
    assert np.linalg.norm(total) <= 0.5 * len(windows) + 1e-9
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())  # hooks removed


def test_window_accountant_equals_dp_accounting(tmp_path):
    dp_accounting = pytest.importorskip("dp_accounting")
    cfg = _cfg(tmp_path, he=False, **{"noise-multiplier": 1.3, "window-sample-rate": 0.4, "target-epsilon": 8.0})
    cfg.federated.clients_per_round = 6
    acc = UserAccountant(cfg, tmp_path / "run", num_devices=12)
    assert acc.q == pytest.approx(6 / 12 * 0.4) and acc.unit == "window"
    for r in range(1, 6):
        assert acc.stop_reason(r) == ""
        acc.record(r)
    ours = acc.epsilon
    lib = dp_accounting.rdp.RdpAccountant()
    lib.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.2, dp_accounting.GaussianDpEvent(1.3)), 5))
    assert ours == pytest.approx(lib.get_epsilon(1e-5), rel=0.02)
    assert ours == pytest.approx(epsilon_from_history([(1.3, 0.2, 5)], delta=1e-5), rel=1e-9)
    assert acc.ledger.unit == "window"
    small = _cfg(tmp_path / "b", he=False, **{"target-epsilon": ours * 1.0001, "noise-multiplier": 1.3,
                                              "window-sample-rate": 0.4})
    small.federated.clients_per_round = 6
    again = UserAccountant(small, tmp_path / "run2", num_devices=12)
    for r in range(1, 6):
        again.record(r)
    assert "would exceed privacy.target_epsilon" in again.stop_reason(6)


@pytest.mark.parametrize("override, key", [
    ({"federated": {"personal-short-term": True}}, "federated.personal_short_term"),
    ({"privacy": {"window-sample-rate": 0.0}}, "privacy.window_sample_rate"),
    ({"privacy": {"expected-batch": 0.0}}, "privacy.expected_batch"),
    ({"he": {"enabled": True, "clip-range": 1.5}}, "he.clip_range"),
])
def test_bad_window_config_names_the_field(override, key):
    data = {"federated": dict(FED), "privacy": dict(WINDOW), "he": {"enabled": False}}
    for section, values in override.items():
        data[section].update(values)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config(data)


def test_small_window_run_with_he_reports_the_accountants_epsilon(tmp_path, ml100k_cache):
    from simulations.simulate import simulate

    cfg = build_config({
        "data": {"dataset": "ml-100k", "max-users": 60},
        "model": {"hidden": 16, "max-len": 20, "num-layers": 1, "inner": 32, "dropout": 0.0},
        "federated": {"backend": "inline", "num-server-rounds": 2, "clients-per-round": 30, "min-train-nodes": 5,
                      "personal-short-term": False, "eval-every": 0, "server-lr": 1.0},
        "privacy": {**WINDOW, "noise-multiplier": 1.1, "window-sample-rate": 0.5, "expected-batch": 40.0,
                    "target-epsilon": 20.0},
        "he": {"enabled": True, "max-weight": 1, "max-summands": 256, "clip-range": 5.0}})
    result = simulate(cfg, tmp_path / "run", progress=False)
    p = result["privacy"]
    q = 30 / 60 * 0.5
    assert p["unit"] == "window" and p["sample_rate"] == pytest.approx(q) and p["steps"] == 2
    assert p["epsilon"] == pytest.approx(epsilon_from_history([(1.1, q, 2)], delta=1e-5), rel=1e-9)
    assert result["he"]["enabled"]
    assert result["evaluated_devices"] == 60
    for block in ("metrics", "metrics_unmasked"):
        assert set(result[block]) >= {"recall@10", "ndcg@10"}
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in result[block].values())
    ledger = json.loads((tmp_path / "run" / "server" / "user_ledger.json").read_text())
    assert ledger["unit"] == "window" and len(ledger["rounds"]) == 2
    from simulations.audit.run import audit_run

    audit = audit_run(tmp_path / "run", verify_log=True)
    assert audit["verdict"] == "PASS", audit["reasons"]
    assert audit["cross_check"]["epsilon"] == pytest.approx(p["epsilon"], rel=1e-6)
