"""User-level DP (privacy.mode = user | example+user): device-side clipping and noise before encryption,
Poisson client sampling, the fixed-denominator running sum (plaintext and CKKS), and the server accountant."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from client.secure import device_keys, encode_update
from shared_models.model.state import flatten
from client.store import DeviceStore
from client.device import device_train
from server.loop import sample_nodes
from shared_models.messages import TrainReply
from server.secure import SecureAggregation
from shared_models.config import ConfigError
from shared_models.crypto import HEConfig, add_aggregates, decrypt_average, init_keys, load_server_keys
from shared_models.privacy import epsilon_from_history
from shared_models.privacy.user_level import clip_l2, device_noise_std, privatize_delta
from shared_models.datasets.population import population
from simulations.simulate import simulate
from tests.fed_helpers import synthetic_csv, tiny_config

USER = {"mode": "user", "user-noise-multiplier": 1.0, "user-clip": 0.5, "user-target-epsilon": 200.0}
FED = {"clients-per-round": 10, "num-server-rounds": 3, "min-train-nodes": 2}
HE = {"enabled": True, "max-summands": 128, "max-weight": 1, "clip-range": 4.0}


def test_clip_bounds_the_norm_and_keeps_small_deltas():
    big, norm = clip_l2(np.full(100, 3.0), clip=0.5)
    assert norm == pytest.approx(30.0) and np.linalg.norm(big) == pytest.approx(0.5)
    small = np.full(4, 0.01)
    assert np.array_equal(clip_l2(small, clip=0.5)[0], small)


def test_device_noise_share_makes_the_sum_carry_the_full_noise():
    """m devices' shares add up to std z*C per coordinate (the central Gaussian mechanism)."""
    z, clip, m, d = 1.3, 0.7, 16, 20_000
    rng = np.random.default_rng(0)
    total = sum(privatize_delta(np.zeros(d), clip=clip, noise_multiplier=z, min_contributors=m, rng=rng)[0]
                for _ in range(m))
    assert device_noise_std(clip=clip, noise_multiplier=z, min_contributors=m) == pytest.approx(z * clip / 4)
    assert np.std(total) == pytest.approx(z * clip, rel=0.03)  # 20k coordinates: sampling error ~0.5%


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ukeys")
    init_keys(d, device_ids=[f"d{i}" for i in range(8)],
              he=HEConfig(max_weight=1, max_summands=64, clip_range=4.0, scale_bits=30))
    return str(d)


def test_noise_is_added_before_encryption_and_the_decrypted_sum_has_the_expected_variance(keys_dir):
    """8 devices clip + noise on the device, encrypt; the decrypted sum minus the clipped deltas is N(0, (zC)^2 k/m)."""
    z, clip, m, n = 1.0, 0.5, 4, 6000
    server = SecureAggregation(load_server_keys(keys_dir), n_params=n)
    server.begin(1, list(range(8)))
    rng = np.random.default_rng(1)
    clipped_sum = np.zeros(n)
    for i in range(8):
        delta = rng.normal(0, 1, n)  # norm ~77: clipping is exercised
        noisy, _ = privatize_delta(delta, clip=clip, noise_multiplier=z, min_contributors=m, rng=rng)
        clipped_sum += clip_l2(delta, clip=clip)[0]
        payload, sig, _ = encode_update({"w": noisy}, weight=1, keys=device_keys(keys_dir, f"d{i}"), round_id=1)
        assert server.offer(TrainReply(node=i, device_id=f"d{i}", round_id=1, payload=payload, signature=sig)) == ""
    assert server.finish(min_train_nodes=m)
    mean, total = decrypt_average(device_keys(keys_dir, "d0").context, server.latest, cfg=server.keys.he)
    assert total == pytest.approx(8, abs=1e-3)
    deviation = mean * total - clipped_sum
    expected_std = z * clip * math.sqrt(8 / m)
    assert np.std(deviation) == pytest.approx(expected_std, rel=0.05)  # chi-square, 6000 dof: ~1% sampling error
    assert abs(np.mean(deviation)) < 5 * expected_std / math.sqrt(n)


def test_running_sum_over_rounds_adds_aggregates_and_respects_capacity(keys_dir):
    server = SecureAggregation(load_server_keys(keys_dir), n_params=50, accumulate=True)
    rng, expected = np.random.default_rng(2), np.zeros(50)
    for r in (1, 2, 3):
        server.begin(r, [0, 1])
        for i in (0, 1):
            x = rng.normal(0, 0.3, 50)
            expected += x
            payload, sig, _ = encode_update({"w": x}, weight=1, keys=device_keys(keys_dir, f"d{i}"), round_id=r)
            assert server.offer(TrainReply(node=i, device_id=f"d{i}", round_id=r, payload=payload, signature=sig)) == ""
        assert server.finish(min_train_nodes=2)
    mean, total = decrypt_average(device_keys(keys_dir, "d3").context, server.latest, cfg=server.keys.he)
    assert total == pytest.approx(6, abs=1e-3)
    assert np.abs(mean * total - expected).max() < 1e-4
    with pytest.raises(Exception, match="too_many_summands|max_summands"):
        big = server.latest
        for _ in range(20):  # 6 summands x 2**k quickly passes max_summands=64
            big = add_aggregates(server.keys.context, big, big, cfg=server.keys.he)


def test_poisson_sampling_has_the_configured_rate_and_varies(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv"), privacy=USER, federated={"clients-per-round": 25})
    rng, nodes = np.random.default_rng(0), list(range(100))
    sizes = [len(sample_nodes(nodes, cfg, rng)) for _ in range(400)]
    assert np.mean(sizes) == pytest.approx(25, abs=1.0) and len(set(sizes)) > 5
    uniform = tiny_config(synthetic_csv(tmp_path / "s.csv"), federated={"clients-per-round": 25})
    assert {len(sample_nodes(nodes, uniform, rng)) for _ in range(20)} == {25}


def test_device_sends_only_a_clipped_noised_delta_of_the_shared_part(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv"), privacy={**USER, "user-noise-multiplier": 0.0001},
                      federated=FED)
    pop = population(cfg)
    from shared_models.model.state import initial_shared

    start = initial_shared(cfg, pop.num_items, None)
    out = device_train(data=pop.devices[0], store=DeviceStore(tmp_path / "d0"), global_shared=start, cfg=cfg,
                       round_id=1, max_interactions=pop.max_interactions)
    assert list(out.shared) == list(start) and out.num_examples == 1  # fixed weight, shared keys only
    assert np.linalg.norm(flatten(out.shared)) <= 0.5 + 1e-3  # a delta within user_clip (noise ~1e-4/sqrt(2))
    assert out.metrics["delta_norm"] > 0.5  # the raw delta was larger: clipping happened


def _run(tmp_path, name, **sections):
    csv = synthetic_csv(tmp_path / "s.csv", users=30)
    cfg = tiny_config(csv, **{"privacy": USER, "federated": FED, **sections})
    return simulate(cfg, tmp_path / name, progress=False, resume=False)


def test_user_run_reports_the_server_accountant_and_he_matches_plaintext(tmp_path):
    plain = _run(tmp_path, "plain")
    he = _run(tmp_path, "he", he=HE)
    p = plain["privacy"]
    q = 10 / 30
    assert (p["unit"], p["sample_rate"], p["steps"], p["noise_multiplier"]) == ("user", pytest.approx(q), 3, 1.0)
    assert p["epsilon"] == pytest.approx(epsilon_from_history([(1.0, q, 3)], delta=1e-5), rel=1e-9)
    assert he["privacy"]["epsilon"] == pytest.approx(p["epsilon"])
    for k in ("recall@10", "ndcg@10"):  # same seeds, same noise: only CKKS rounding differs
        assert he["metrics"][k] == pytest.approx(plain["metrics"][k], abs=0.005)
    _assert_same_global_model(tmp_path)
    ledger = json.loads((tmp_path / "plain" / "server" / "user_ledger.json").read_text())
    assert [e["round"] for e in ledger["rounds"]] == [1, 2, 3]


def _assert_same_global_model(tmp_path):
    """The model devices decode from the CKKS running sum equals the plaintext server's model."""
    from client.round import DeviceContext, global_weights

    cfg = json.loads((tmp_path / "he" / "config.json").read_text())
    from shared_models.config import build_config
    from shared_models.paths import run_keys_dir

    he_cfg = build_config(cfg)
    pop = population(he_cfg)
    blob = (tmp_path / "he" / "global_sum.ckks").read_bytes()
    device = DeviceContext(pop.devices[3], DeviceStore(tmp_path / "d3"), None, pop.max_interactions,
                           str(run_keys_dir(tmp_path / "he")))
    decoded, _ = global_weights(he_cfg, blob, device)
    with np.load(tmp_path / "plain" / "global_shared.npz") as plain:
        assert set(plain.files) == set(decoded)
        diff = np.concatenate([np.abs(plain[k] - decoded[k]).ravel() for k in plain.files])
    # CKKS rounding (~1e-7) is all that differs in round 1; Adam's sign-like steps on near-zero gradients can
    # turn it into an lr-sized step on a few coordinates in later rounds, so bound the mean tightly
    assert diff.max() < 5e-3 and diff.mean() < 5e-6, (diff.max(), diff.mean())  # weights ~0.02, steps ~0.01


def test_global_model_adds_the_running_sum_with_the_fixed_denominator(keys_dir):
    """One decoding for every reader (training, evaluation, recommend/export): initial + lr * sum / K."""
    from client.secure import global_model

    template = {"w": np.linspace(-1, 1, 30).astype(np.float32)}
    server = SecureAggregation(load_server_keys(keys_dir), n_params=30, accumulate=True)
    server.begin(1, [0, 1])
    deltas = [np.full(30, 0.1), np.full(30, -0.3)]
    for i, d in enumerate(deltas):
        payload, sig, _ = encode_update({"w": d}, weight=1, keys=device_keys(keys_dir, f"d{i}"), round_id=1)
        assert server.offer(TrainReply(node=i, device_id=f"d{i}", round_id=1, payload=payload, signature=sig)) == ""
    assert server.finish(min_train_nodes=2)
    keys = device_keys(keys_dir, "d5")
    got, total, _ = global_model(server.latest, keys, template, user_level=True, server_lr=2.0, denominator=4)
    assert total == pytest.approx(2, abs=1e-3)
    assert np.allclose(got["w"], template["w"] + 2.0 * (0.1 - 0.3) / 4, atol=1e-5)
    fedavg, _, _ = global_model(server.latest, keys, template, user_level=False)
    assert np.allclose(fedavg["w"], (0.1 - 0.3) / 2, atol=1e-5)  # FedAvg decoding: the mean
    assert global_model(None, keys, template, user_level=True)[0]["w"] is template["w"]  # round 1: initial


def test_device_adds_its_noise_share_to_the_delta_and_never_contributes_twice(tmp_path):
    """Same training (reproducible seeds), two noise levels: the difference is the device's Gaussian share."""
    csv = synthetic_csv(tmp_path / "s.csv")
    outs = {}
    for z in (1e-9, 1.0):
        cfg = tiny_config(csv, privacy={**USER, "user-noise-multiplier": z, "user-clip": 50.0}, federated=FED)
        pop = population(cfg)
        from shared_models.model.state import initial_shared

        start = initial_shared(cfg, pop.num_items, None)
        store = DeviceStore(tmp_path / f"z{z}")
        outs[z] = device_train(data=pop.devices[0], store=store, global_shared=start, cfg=cfg, round_id=1,
                               max_interactions=pop.max_interactions)
        again = device_train(data=pop.devices[0], store=store, global_shared=start, cfg=cfg, round_id=1,
                             max_interactions=pop.max_interactions)
        assert again.refused and "already contributed to round 1" in again.reason
    quiet, noisy = flatten(outs[1e-9].shared), flatten(outs[1.0].shared)
    assert 0 < np.linalg.norm(quiet) == pytest.approx(outs[1e-9].metrics["delta_norm"], rel=1e-6)  # < clip: as is
    std = 1.0 * 50.0 / math.sqrt(FED["min-train-nodes"])
    assert np.std(noisy - quiet) == pytest.approx(std, rel=0.05) and abs(np.mean(noisy - quiet)) < 0.05 * std


def test_server_stops_before_a_round_that_would_pass_the_user_budget(tmp_path):
    q = 10 / 30
    eps2 = epsilon_from_history([(1.0, q, 2)], delta=1e-5)
    eps3 = epsilon_from_history([(1.0, q, 3)], delta=1e-5)
    budget = (eps2 + eps3) / 2
    out = _run(tmp_path, "budget", privacy={**USER, "user-target-epsilon": budget})
    assert out["rounds"] == 2 and out["privacy"]["epsilon"] == pytest.approx(eps2)
    assert out["privacy"]["epsilon"] <= budget < eps3


@pytest.mark.parametrize("override, key", [
    ({"federated": {**FED, "fraction-train": 0.5}}, "federated.fraction_train"),
    ({"he": {**HE, "pack-bits": 20}}, "he.pack_bits"),
    ({"he": {**HE, "clip-range": 1.0}}, "he.clip_range"),
    ({"privacy": {**USER, "user-clip": 0.0}}, "privacy.user_clip"),
])
def test_bad_user_level_configs_name_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        tiny_config(synthetic_csv(tmp_path / "s.csv"), **{"privacy": USER, "federated": FED, **override})


def test_running_sum_capacity_is_checked_against_rounds(tmp_path):
    with pytest.raises(ConfigError, match=r"he\.max_summands"):
        _run(tmp_path, "cap", he={**HE, "max-summands": 32})


def test_example_plus_user_keeps_device_ledgers_and_the_cli_states_both_claims(tmp_path):
    from server.report import privacy_line

    out = _run(tmp_path, "both", privacy={**USER, "mode": "example+user"})
    p = out["privacy"]
    assert p["unit"] == "user" and p["example"]["unit"] == "window"
    assert 0 < p["example"]["epsilon"] and p["example"]["devices_trained"] > 0
    ledgers = list((tmp_path / "both" / "devices").glob("*/ledger.json"))
    assert len(ledgers) == p["example"]["devices_trained"]
    line = privacy_line(p)
    assert f"({p['epsilon']:.3f}, 1.0e-05)-DP for adding/removing one whole device" in line
    assert f"epsilon <= {p['example']['epsilon']:.3f} per training window" in line
