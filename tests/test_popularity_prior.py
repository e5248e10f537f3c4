"""The DP popularity prior: its mechanism (known values, clipping, noise shares), its accounting, and a run
that releases it once (plaintext and CKKS), sends it to every device and composes it into the claim."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_models.config import ConfigError, build_config
from shared_models.datasets.population import population
from shared_models.privacy import epsilon_from_history
from shared_models.privacy.popularity import (PRIOR_KEY, contribution_bound, item_histogram, log_prior,
                                              prior_contribution, window_histogram)
from simulations.audit.run import audit_run
from simulations.simulate import simulate
from tests.fed_helpers import synthetic_csv, tiny_config


def test_histogram_counts_distinct_items_and_never_padding():
    hist = item_histogram(np.array([3, 3, 0, 5, 1]), 7)
    assert hist.tolist() == [0, 1, 0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="outside the catalogue"):
        item_histogram(np.array([7]), 7)


def test_contribution_is_clipped_to_l2_norm():
    items = np.arange(1, 101)  # 100 distinct items: norm 10 before clipping
    noiseless = prior_contribution(items, 200, clip=2.0, noise_multiplier=0.0, min_contributors=1,
                                   rng=np.random.default_rng(0))
    assert np.linalg.norm(noiseless) == pytest.approx(2.0)
    assert np.allclose(noiseless[1:101], 0.2) and noiseless[0] == 0 and not noiseless[101:].any()


def test_noise_shares_of_min_contributors_add_up_to_the_claimed_std():
    sigma, clip, m, items = 3.0, 1.5, 40, 20_000
    rng = np.random.default_rng(1)
    total = sum(prior_contribution(np.zeros(0, np.int64), items, clip=clip, noise_multiplier=sigma,
                                   min_contributors=m, rng=rng) for _ in range(m))
    assert np.std(total[1:]) == pytest.approx(sigma * clip, rel=0.03)
    assert abs(np.mean(total[1:])) < 0.1


def test_log_prior_known_values_and_non_finite_counts():
    assert log_prior(np.array([5.0, -2.0, 0.0, np.e - 1])).tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="not all finite"):
        log_prior(np.array([0.0, np.nan]))


def test_bound_covers_an_honest_contribution():
    assert contribution_bound(clip=1.0, noise_multiplier=2.0, min_contributors=4) == pytest.approx(9.0)


def test_window_histogram_clips_each_window_then_caps_each_item():
    windows = [np.array([1, 2, 3, 4]), np.array([5, 5]), np.array([4, 6]), np.zeros(0, np.int64)]
    hist = window_histogram(windows, 8, clip=1.0)
    half, root = 0.5, 2 ** -0.5  # 4 distinct items: 1/sqrt(4) each; 2 distinct: 1/sqrt(2) each
    assert hist.tolist() == pytest.approx([0, half, half, half, min(half + root, 1.0), 1.0, root, 0])
    assert window_histogram([], 8, clip=1.0).tolist() == [0.0] * 8
    with pytest.raises(ValueError, match="clip"):
        window_histogram(windows, 8, clip=0.0)


@settings(max_examples=200, deadline=None)
@given(windows=st.lists(st.lists(st.integers(1, 11), max_size=12), min_size=1, max_size=8),
       drop=st.integers(0, 7), clip=st.floats(0.1, 5.0))
def test_one_window_more_or_less_moves_the_window_histogram_at_most_clip(windows, drop, clip):
    arrays = [np.array(w, dtype=np.int64) for w in windows]
    without = arrays[:drop % len(arrays)] + arrays[drop % len(arrays) + 1:]
    a, b = window_histogram(arrays, 12, clip=clip), window_histogram(without, 12, clip=clip)
    assert np.linalg.norm(a - b) <= clip * (1 + 1e-12)
    assert a.max(initial=0.0) <= clip and a.min(initial=0.0) >= 0.0  # within contribution_bound's clip term


def test_a_contribution_is_per_device_or_per_window_never_both():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="either"):
        prior_contribution(np.array([1]), 4, clip=1.0, noise_multiplier=0.0, min_contributors=1, rng=rng,
                           windows=[np.array([1])])
    with pytest.raises(ValueError, match="either"):
        prior_contribution(None, 4, clip=1.0, noise_multiplier=0.0, min_contributors=1, rng=rng)
    per_window = prior_contribution(None, 4, clip=1.0, noise_multiplier=0.0, min_contributors=1, rng=rng,
                                    windows=[np.array([1]), np.array([2, 3])])
    assert per_window.tolist() == pytest.approx([0.0, 1.0, 2 ** -0.5, 2 ** -0.5])


def test_window_items_are_the_windows_training_cuts():
    from client.prior import window_items
    from shared_models.train.sequences import build_windows

    train = np.arange(1, 118)  # 117 distinct items at max-len 50: windows of 51, 51 and the first 15
    parts = window_items(train, max_len=50)
    windows = build_windows([train], max_len=50)
    assert len(parts) == len(windows) == 3
    assert [len(p) for p in parts] == [15, 51, 51]
    for items, inputs, targets in zip(parts, windows.inputs, windows.targets):  # the same items as training's
        assert np.array_equal(items, np.union1d(inputs[inputs > 0], targets[targets > 0]))
    assert np.array_equal(np.sort(np.concatenate(parts)), train)  # every interaction in exactly one window here
    # 52 = 51 + 1 items: the oldest is in no window, as in training (which never sees it)
    assert [p.tolist() for p in window_items(np.arange(1, 53), max_len=50)] == [list(range(2, 53))]
    assert window_items(train[:1], max_len=50) == []  # no target: no window, the noise share alone
    repeats = window_items(np.array([4, 4, 7, 4]), max_len=50)  # repeated items count once per window
    assert [p.tolist() for p in repeats] == [[4, 7]]


def test_the_prior_is_refused_before_anything_is_asked_when_it_alone_would_pass_the_window_target(tmp_path):
    from server.prior import release_prior
    from server.user_dp import UserAccountant

    cfg = build_config({"privacy": {"mode": "window", "prior": True, "prior-noise-multiplier": 0.05,
                                    "target-epsilon": 1.0}, "federated": {"personal-short-term": False}})

    class NoTransport:  # asking a device would be a bug: the refusal comes first
        def node_ids(self):
            raise AssertionError("devices were asked")

    with pytest.raises(RuntimeError, match=r"privacy\.target_epsilon = 1\.0"):
        release_prior(cfg, NoTransport(), tmp_path, num_items=5, keys_dir="",
                      accountant=UserAccountant(cfg, tmp_path, 100))


@pytest.mark.parametrize("mode", ["window", "user"])
def test_under_he_a_prior_contribution_must_fit_the_encoding(mode):
    def cfg(min_contributors: int, he: bool = True):
        return build_config({"privacy": {"mode": mode, "prior": True, "prior-min-contributors": min_contributors},
                             "federated": {"personal-short-term": False, "min-train-nodes": 10},
                             "he": {"enabled": he, "clip-range": 8.0, "max-weight": 1}})

    assert cfg(100).privacy.prior  # clip 1 + 8 noise-share std (5 / sqrt(100)) = 5 <= 8
    with pytest.raises(ConfigError, match=r"he.clip_range.*13\.65"):  # 1 + 8 * 5 / sqrt(10)
        cfg(10)
    assert cfg(10, he=False).privacy.prior  # the plaintext server checks each contribution against the bound


def test_prior_is_refused_with_example_level_dp_and_allowed_at_window_level():
    with pytest.raises(ConfigError, match="privacy.prior"):
        build_config({"privacy": {"mode": "example", "prior": True}})
    assert build_config({"privacy": {"mode": "window", "prior": True},
                         "federated": {"personal-short-term": False}}).privacy.prior


PRIOR = {"mode": "user", "user-noise-multiplier": 1.0, "user-clip": 0.5, "user-target-epsilon": 10_000.0,
         "prior": True, "prior-noise-multiplier": 0.2, "prior-min-contributors": 10}


@pytest.mark.slow
@pytest.mark.parametrize("he", [False, True])
def test_run_releases_the_prior_once_and_composes_it_into_the_claim(tmp_path, he):
    he_cfg = {"enabled": True, "max-weight": 1, "max-summands": 4096, "clip-range": 3.5} if he else {"enabled": False}
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=12), privacy=PRIOR, he=he_cfg,
                      federated={"num-server-rounds": 2, "clients-per-round": 6, "min-train-nodes": 2})
    result = simulate(cfg, tmp_path / "run", progress=False, resume=False)
    prior = result["privacy"]["prior"]
    assert prior["released"] and prior["asked"] == 12 and prior["contributors"] == 12
    # every device contributed once, before round 1 (a resumed run never asks again)
    for d in population(cfg).devices:
        rounds = json.loads((tmp_path / "run" / "devices" / d.device_id / "contributions.json").read_text())["rounds"]
        assert rounds[0] == 0
    # the server's ledger charges the release first, then one step per round; the claim composes both
    rows = json.loads((tmp_path / "run" / "server" / "user_ledger.json").read_text())["rounds"]
    assert rows[0]["round"] == 0 and rows[0]["sample_rate"] == 1.0 and rows[0]["noise_multiplier"] == 0.2
    q = result["privacy"]["sample_rate"]
    history = [(0.2, 1.0, 1)] + [(1.0, q, 1)] * result["privacy"]["steps"]
    assert result["privacy"]["epsilon"] == pytest.approx(epsilon_from_history(history, delta=1e-5), rel=1e-9)
    assert result["privacy"]["epsilon"] > epsilon_from_history(history[1:], delta=1e-5)
    # under HE the server keeps only the encrypted sum; without it the released noisy counts
    saved = tmp_path / "run" / "server" / ("prior_sum.ckks" if he else "prior_sum.npy")
    assert saved.is_file()
    if not he:
        counts = np.load(saved)
        true = sum(item_histogram(d.train, len(counts)) / np.linalg.norm(item_histogram(d.train, len(counts)))
                   for d in population(cfg).devices)
        # the release is the clipped histograms' sum plus the shares' noise: std 0.2 * sqrt(12 devices / 10)
        residual = counts[1:] - true[1:]
        assert np.std(residual) == pytest.approx(0.2 * (12 / 10) ** 0.5, rel=0.35) and abs(residual.mean()) < 0.15
    verdict = audit_run(tmp_path / "run", verify_log=True)
    assert verdict["verdict"] == "FAIL"  # reproducible noise in tests: the audit refuses such runs ...
    reasons = " ".join(verdict["reasons"])
    assert "prior" not in reasons and "row 1" not in reasons  # ... but not because of the prior's ledger row


WINDOW_PRIOR = {"mode": "window", "noise-multiplier": 1.0, "max-grad-norm": 1.0, "window-sample-rate": 1.0,
                "expected-batch": 8.0, "target-epsilon": 10_000.0, "prior": True, "prior-noise-multiplier": 0.2,
                "prior-min-contributors": 10}


@pytest.mark.slow
@pytest.mark.parametrize("he", [False, True])
def test_window_level_run_releases_the_per_window_prior_and_composes_it_into_the_window_claim(tmp_path, he):
    from client.prior import window_items

    he_cfg = {"enabled": True, "max-weight": 1, "max-summands": 4096, "clip-range": 8.0} if he else {"enabled": False}
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=12), privacy=WINDOW_PRIOR, he=he_cfg,
                      federated={"num-server-rounds": 2, "clients-per-round": 6, "min-train-nodes": 2,
                                 "personal-short-term": False})
    result = simulate(cfg, tmp_path / "run", progress=False, resume=False)
    p = result["privacy"]
    assert p["unit"] == "window" and p["prior"]["released"] and p["prior"]["contributors"] == 12
    assert "windows' distinct-item histograms" in p["mechanism"]  # the claim names what the release protects
    rows = json.loads((tmp_path / "run" / "server" / "user_ledger.json").read_text())["rounds"]
    assert rows[0]["round"] == 0 and rows[0]["sample_rate"] == 1.0 and rows[0]["noise_multiplier"] == 0.2
    history = [(0.2, 1.0, 1)] + [(1.0, p["sample_rate"], 1)] * p["steps"]
    assert p["epsilon"] == pytest.approx(epsilon_from_history(history, delta=1e-5), rel=1e-9)
    if not he:  # the release: every device's capped sum of clipped window histograms, plus the shares' noise
        counts = np.load(tmp_path / "run" / "server" / "prior_sum.npy")
        true = sum(window_histogram(window_items(d.train, max_len=cfg.model.max_len), len(counts), clip=1.0)
                   for d in population(cfg).devices)
        per_device = sum(item_histogram(d.train, len(counts)) / np.linalg.norm(item_histogram(d.train, len(counts)))
                         for d in population(cfg).devices)
        residual = counts[1:] - true[1:]
        assert np.std(residual) == pytest.approx(0.2 * (12 / 10) ** 0.5, rel=0.35) and abs(residual.mean()) < 0.15
        assert np.std(counts[1:] - per_device[1:]) > 2 * np.std(residual)  # not the per-device histogram
    verdict = audit_run(tmp_path / "run", verify_log=True)
    reasons = " ".join(verdict["reasons"])
    assert "prior" not in reasons and "row 1" not in reasons and "ledger" not in reasons
    assert verdict["cross_check"]["event"].startswith("Composed([Gaussian(0.2), SelfComposed(PoissonSampled(")


def test_plaintext_server_rejects_a_contribution_beyond_the_honest_bound(tmp_path):
    from server.prior import _invalid
    from shared_models.messages import TrainReply

    ok = TrainReply(node=0, shared={PRIOR_KEY: np.zeros(5, np.float32)}, num_examples=1)
    assert _invalid(ok, 5, bound=2.0) == ""
    for bad in ({PRIOR_KEY: np.full(5, 3.0, np.float32)}, {PRIOR_KEY: np.zeros(4, np.float32)},
                {PRIOR_KEY: np.array([np.nan] * 5, np.float32)}, {PRIOR_KEY: np.zeros(5, np.complex64)},
                {"other": np.zeros(5, np.float32)}):
        assert _invalid(TrainReply(node=0, shared=bad, num_examples=1), 5, bound=2.0)


def test_deployed_device_keeps_the_prior_and_recommends_with_it(tmp_path):
    from client.recommend import Recommender
    from client.runtime import PRIOR_NPZ, DeviceState, deployed_device
    from tests.test_device_helpers import make_device

    state = make_device(tmp_path)
    num_items = DeviceState(state).catalogue().num_items
    cfg = build_config({"data": {"dataset": str(tmp_path / "synth.csv")}, "model": {"prior-weight": 2.0},
                        "privacy": {"mode": "none"}, "he": {"enabled": False}})
    counts = np.arange(num_items, dtype=np.float32)
    deployed_device(state, cfg, {}, {PRIOR_KEY: counts})
    assert (state / PRIOR_NPZ).is_file()
    with Recommender(state) as rec:
        assert torch.allclose(rec.model.item_prior, 2.0 * torch.as_tensor(log_prior(counts)))
        top = rec.recommend(3).items
    assert len(top) == 3
