"""federated.server_average: evaluation and the shipped model are the mean of the last K released models, in
plaintext and under CKKS (the blind server adds the last K sums, devices divide by K)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.secure import device_keys, encode_update, global_model
from server.loop import PlainFedAvg
from server.secure import SecureAggregation
from server.user_dp import PlainDPFedAvg
from shared_models.config import ConfigError, build_config
from shared_models.crypto import HEConfig, PayloadError, init_keys, load_server_keys, unwrap_average, wrap_average
from shared_models.messages import TrainReply
from simulations.simulate import simulate
from tests.fed_helpers import synthetic_csv, tiny_config

USER = {"mode": "user", "user-noise-multiplier": 1.0, "user-clip": 0.5, "user-target-epsilon": 200.0}
FED = {"clients-per-round": 10, "num-server-rounds": 3, "min-train-nodes": 2, "server-average": 2}
HE = {"enabled": True, "max-summands": 128, "max-weight": 1, "clip-range": 4.0}


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    init_keys(d, device_ids=[f"d{i}" for i in range(6)], he=HEConfig(max_weight=4, max_summands=64, scale_bits=28))
    return str(d)


def _plain_reply(node: int, value: float, n: int) -> TrainReply:
    return TrainReply(node=node, shared={"w": np.array([value], np.float32)}, num_examples=n)


def test_a_plaintext_server_evaluates_the_mean_of_its_last_released_models():
    dp = PlainDPFedAvg({"w": np.zeros(1, np.float32)}, server_lr=1.0, denominator=1.0, average_last=2)
    fedavg = PlainFedAvg({"w": np.zeros(1, np.float32)}, average_last=2)
    for r, (delta, model) in enumerate(((4.0, 4.0), (4.0, 8.0), (-8.0, 0.0)), start=1):  # models 4, 8, 0
        for strategy, value in ((dp, delta), (fedavg, model)):
            strategy.begin(r, [0])
            assert strategy.offer(_plain_reply(0, value, 3)) == ""
            assert strategy.finish(min_train_nodes=1)
    for strategy in (dp, fedavg):
        np.testing.assert_allclose(strategy.broadcast()["w"], [0.0])  # devices train from the latest
        got = strategy.evaluation_state()["w"]
        np.testing.assert_allclose(got, [4.0])  # (8 + 0) / 2: round 1's model has left the window
        assert got.dtype == np.float32


def _secure_rounds(keys_dir, *, rounds: list[list[tuple[np.ndarray, int]]]) -> SecureAggregation:
    """A user-level (running-sum) blind server averaging its last 2 released sums, after ``rounds``."""
    server = SecureAggregation(load_server_keys(keys_dir), n_params=20, accumulate=True, average_last=2)
    for r, updates in enumerate(rounds, start=1):
        server.begin(r, list(range(len(updates))))
        for i, (x, weight) in enumerate(updates):
            payload, sig, _ = encode_update({"w": x}, weight=weight, keys=device_keys(keys_dir, f"d{i}"), round_id=r)
            assert server.offer(TrainReply(node=i, device_id=f"d{i}", round_id=r, payload=payload,
                                           signature=sig)) == ""
        assert server.finish(min_train_nodes=len(updates))
    return server


def test_under_ckks_devices_decode_the_mean_of_the_last_released_models(keys_dir):
    """Distributed DP: model_r = x0 + lr * S_r / den with S_r the running sum; the envelope holds S_2 + S_3
    and decodes to the mean of models 2 and 3. The server only added ciphertexts."""
    rng = np.random.default_rng(0)
    deltas = [[rng.normal(0, 0.3, 20) for _ in range(2)] for _ in range(3)]
    server = _secure_rounds(keys_dir, rounds=[[(d, 1) for d in rnd] for rnd in deltas])
    template = {"w": np.linspace(-1, 1, 20).astype(np.float32)}
    keys, lr, den = device_keys(keys_dir, "d5"), 2.0, 4.0
    running = np.cumsum([sum(rnd) for rnd in deltas], axis=0)  # S_1, S_2, S_3
    models = [template["w"] + lr * s / den for s in running]
    shipped = server.evaluation_state()
    assert shipped != server.broadcast() and unwrap_average(shipped)[1] == 2
    got, _, _ = global_model(shipped, keys, template, user_level=True, server_lr=lr, denominator=den)
    np.testing.assert_allclose(got["w"], (models[1] + models[2]) / 2, atol=1e-5)
    latest, _, _ = global_model(server.broadcast(), keys, template, user_level=True, server_lr=lr, denominator=den)
    np.testing.assert_allclose(latest["w"], models[2], atol=1e-5)  # training still starts from the latest


def test_a_window_that_outgrows_the_encoding_ships_the_latest_sum_and_says_so(keys_dir):
    """6 updates a round: S_6 holds 36 summands, S_5 + S_6 66 > max_summands = 64 (the config check prevents
    this; the round loop must still not raise)."""
    server = _secure_rounds(keys_dir, rounds=[[(np.full(20, 0.01), 1)] * 6] * 5)
    assert unwrap_average(server.evaluation_state())[1] == 2  # S_4 + S_5 = 54 summands: fits
    server = _secure_rounds(keys_dir, rounds=[[(np.full(20, 0.01), 1)] * 6] * 6)
    assert server.evaluation_state() == server.broadcast()
    assert server.evaluation_state() == server.broadcast()  # asked again: the same answer, recorded once
    assert sum(node == -1 and "cannot add the last 2 released sums" in why for _, node, why in server.rejected) == 1


def test_a_blind_fedavg_server_refuses_to_average(keys_dir):
    with pytest.raises(ValueError, match="accumulate"):
        SecureAggregation(load_server_keys(keys_dir), n_params=20, accumulate=False, average_last=2)


def test_the_envelope_round_trips_and_a_plain_aggregate_is_one_term():
    assert unwrap_average(wrap_average(b"FIHE...", 5)) == (b"FIHE...", 5)
    assert unwrap_average(b"FIHE...") == (b"FIHE...", 1)
    with pytest.raises(ValueError, match="terms"):
        wrap_average(b"FIHE", 0)


@pytest.mark.parametrize("blob,reason", [(b"FIAV\x01", "truncated"), (b"FIAV\x01\x00\x02", "truncated"),
                                         (b"FIAV\x02\x00\x02FIHE", "unsupported_version"),
                                         (b"FIAV\x01\x00\x00FIHE", "malformed"), (b"FIAV\x01\xff\xffFIHE", "malformed")])
def test_a_hostile_envelope_is_refused_with_the_reason(blob, reason):
    with pytest.raises(PayloadError) as err:
        unwrap_average(blob)
    assert err.value.reason == reason and "envelope" in str(err.value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=16).map(lambda tail: b"FIAV" + tail))
def test_any_envelope_bytes_either_decode_or_raise_payload_error(blob):
    try:
        inner, terms = unwrap_average(blob)
    except PayloadError:
        return
    assert 1 <= terms <= 1024 and inner and blob.endswith(inner)


def _run(tmp_path, name, **sections):
    csv = synthetic_csv(tmp_path / "s.csv", users=30)
    cfg = tiny_config(csv, **{"privacy": USER, "federated": FED, **sections})
    return simulate(cfg, tmp_path / name, progress=False, resume=False)


def test_a_ckks_run_ships_the_same_averaged_model_as_a_plaintext_run(tmp_path):
    """Same seeds, same noise: the shipped averaged model decoded on a device equals the plaintext server's."""
    from client.round import DeviceContext, global_weights
    from client.store import DeviceStore
    from shared_models.datasets.population import population
    from shared_models.paths import run_keys_dir

    plain, he = _run(tmp_path, "plain"), _run(tmp_path, "he", he={**HE, "max-summands": 256})
    for k in ("recall@10", "ndcg@10"):
        assert he["metrics"][k] == pytest.approx(plain["metrics"][k], abs=0.005)
    blob = (tmp_path / "he" / "global_sum.ckks").read_bytes()
    assert unwrap_average(blob)[1] == 2
    he_cfg = build_config(json.loads((tmp_path / "he" / "config.json").read_text()))
    pop = population(he_cfg)
    device = DeviceContext(pop.devices[3], DeviceStore(tmp_path / "d3"), None, pop.max_interactions,
                           str(run_keys_dir(tmp_path / "he")))
    decoded, _ = global_weights(he_cfg, blob, device)
    with np.load(tmp_path / "plain" / "global_shared.npz") as shipped:
        diff = np.concatenate([np.abs(shipped[k] - decoded[k]).ravel() for k in shipped.files])
    assert diff.max() < 5e-3 and diff.mean() < 5e-6, (diff.max(), diff.mean())


@pytest.mark.parametrize("sections,key,needle", [
    ({"federated": {"server-average": 2, "server-ema": 0.5}, "he": {"enabled": False}}, "server_average",
     "server_ema"),
    ({"federated": {"server-average": -1}}, "server_average", "0..1024"),
    ({"federated": {"server-average": 2}, "he": {"enabled": True}, "privacy": {"mode": "example"}}, "server_average",
     "weighted by each round's total weight"),
])
def test_config_refuses_an_average_it_cannot_keep(sections, key, needle):
    with pytest.raises(ConfigError, match=key) as err:
        build_config(sections)
    assert needle in str(err.value)


def test_a_ckks_sum_of_too_many_rounds_is_refused_before_the_run_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="he.max_summands") as err:
        _run(tmp_path, "big", he=HE, federated={**FED, "server-average": 8})
    assert "server_average=8" in str(err.value)
