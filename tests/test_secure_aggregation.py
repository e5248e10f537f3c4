"""Server-blind aggregation: each malformed or malicious update is rejected with its reason; the round
completes with the rest; the server context cannot decrypt; HE and plaintext runs agree."""

import numpy as np
import pytest

from client.round import DeviceContext, RoundInput, train_round
from client.secure import decode_global, device_keys, encode_update
from shared_models.model.state import flatten
from client.store import DeviceStore
from shared_models.messages import TrainReply
from server.secure import SecureAggregation
from shared_models.crypto import HEConfig, decrypt_average, init_keys, load_server_keys
from simulations.simulate import simulate
from tests.fed_helpers import synthetic_csv, tiny_config

N_PARAMS = 5000
DEVICES = ["d0", "d1", "d2", "d3"]


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    init_keys(d, device_ids=DEVICES, he=HEConfig(max_weight=64, max_summands=16, scale_bits=28))
    return str(d)


def _template():
    return {"w": np.zeros((N_PARAMS - 10,), np.float32), "b": np.zeros((10,), np.float32)}


def _update(keys_dir, device, round_id, seed):
    rng = np.random.default_rng(seed)
    shared = {"w": rng.normal(0, 0.1, N_PARAMS - 10).astype(np.float32), "b": rng.normal(0, 1, 10).astype(np.float32)}
    payload, sig, _ = encode_update(shared, weight=seed + 1, keys=device_keys(keys_dir, device), round_id=round_id)
    return shared, TrainReply(node=DEVICES.index(device), device_id=device, round_id=round_id, payload=payload,
                              signature=sig)


def _server(keys_dir):
    return SecureAggregation(load_server_keys(keys_dir), n_params=N_PARAMS)


def test_server_context_is_public_and_cannot_decrypt(keys_dir):
    server = _server(keys_dir)
    assert not server.keys.context.is_private()
    server.begin(1, [0, 1])
    _, rep = _update(keys_dir, "d0", 1, 0)
    assert server.offer(rep) == ""
    server.finish(min_train_nodes=1)
    with pytest.raises(Exception):
        decrypt_average(server.keys.context, server.latest, cfg=server.keys.he)


def test_encrypted_fedavg_equals_plaintext_fedavg(keys_dir):
    server = _server(keys_dir)
    server.begin(1, [0, 1, 2, 3])
    plain, weights = [], []
    for i, dev in enumerate(DEVICES):
        shared, rep = _update(keys_dir, dev, 1, i)
        assert server.offer(rep) == ""
        plain.append(flatten(shared))
        weights.append(i + 1)
    assert server.finish(min_train_nodes=2)
    expected = np.average(np.stack(plain), axis=0, weights=weights)
    got, total, _ = decode_global(server.latest, device_keys(keys_dir, "d1"), _template())
    assert total == pytest.approx(sum(weights), abs=1e-3)  # CKKS noise at scale 2**21 is ~1e-4
    got_vec = flatten(got)
    assert np.linalg.norm(got_vec - expected) / np.linalg.norm(expected) < 1e-4


def _tamper(rep: TrainReply, **changes) -> TrainReply:
    return TrainReply(**{**rep.__dict__, **changes})


def test_each_bad_update_is_rejected_with_its_reason_and_the_round_completes(keys_dir):
    server = _server(keys_dir)
    server.begin(2, [0, 1, 2])
    _, good0 = _update(keys_dir, "d0", 2, 0)
    _, good1 = _update(keys_dir, "d1", 2, 1)
    _, stale = _update(keys_dir, "d2", 1, 2)
    _, other_round_sig = _update(keys_dir, "d2", 1, 3)
    cases = {
        "unknown device": _tamper(good0, device_id="mallory"),
        "bad signature": _tamper(good0, signature=bytes(64)),
        "replayed/stale round": stale,
        "not sampled": _tamper(_update(keys_dir, "d3", 2, 4)[1], node=3),
        "no encrypted payload": _tamper(good0, payload=None),
    }
    for expected, rep in cases.items():
        assert expected in server.offer(rep), expected
    assert server.offer(good0) == ""
    assert "second update" in server.offer(good0)
    # forged round id with a signature made for another round
    assert "bad signature" in server.offer(_tamper(other_round_sig, round_id=2))
    assert server.offer(good1) == ""
    assert server.finish(min_train_nodes=2)
    assert server.round.aggregator.n_summands == 2
    assert len(server.rejected) == len(cases) + 2


def test_a_device_speaking_from_another_node_than_before_is_rejected(keys_dir):
    server = _server(keys_dir)
    server.begin(1, [0, 1, 2])
    assert server.offer(_update(keys_dir, "d0", 1, 0)[1]) == ""  # d0 is bound to node 0 at first contact
    assert server.finish(min_train_nodes=1)
    server.begin(2, [0, 1, 2])
    moved = _tamper(_update(keys_dir, "d0", 2, 0)[1], node=2)  # its signed update, now arriving from node 2
    assert "speaks from node 2, registered on node 0" in server.offer(moved)


@pytest.mark.parametrize("corrupt, reason", [
    (lambda p: p[: len(p) // 2], "truncated"),
    (lambda p: bytes(np.random.default_rng(0).integers(0, 256, len(p), dtype=np.uint8)), "payload rejected"),
])
def test_corrupted_payloads_signed_by_the_device_are_rejected(keys_dir, corrupt, reason):
    from shared_models.crypto import payload_sha256, sign_update

    server = _server(keys_dir)
    server.begin(1, [0])
    _, rep = _update(keys_dir, "d0", 1, 0)
    bad = corrupt(rep.payload)
    sig = sign_update(device_keys(keys_dir, "d0").signing_key, round_id=1, device_id="d0",
                      payload_sha256=payload_sha256(bad))
    assert reason in server.offer(_tamper(rep, payload=bad, signature=sig))


def test_wrong_context_and_wrong_count_are_rejected(keys_dir, tmp_path):
    other = tmp_path / "other-keys"
    init_keys(other, device_ids=DEVICES, he=HEConfig(max_weight=64, max_summands=16, scale_bits=28))
    server = _server(keys_dir)
    server.begin(1, [0])
    _, foreign = _update(str(other), "d0", 1, 0)  # signed by a different key set too
    assert server.offer(foreign) != ""
    small = SecureAggregation(load_server_keys(keys_dir), n_params=N_PARAMS * 3)  # expects more ciphertexts
    small.begin(1, [0])
    _, rep = _update(keys_dir, "d0", 1, 0)
    assert "count_mismatch" in small.offer(rep)


def test_too_few_valid_updates_keep_the_previous_aggregate(keys_dir):
    server = _server(keys_dir)
    server.begin(1, [0, 1])
    server.offer(_update(keys_dir, "d0", 1, 0)[1])
    server.offer(_update(keys_dir, "d1", 1, 1)[1])
    assert server.finish(min_train_nodes=2)
    before = server.latest
    server.begin(2, [0, 1])
    server.offer(_update(keys_dir, "d0", 2, 0)[1])  # d1 dropped out
    assert not server.finish(min_train_nodes=2)
    assert server.latest == before


def test_he_run_matches_plaintext_run(tmp_path):
    csv = synthetic_csv(tmp_path / "s.csv", users=12, items=30)
    results = {}
    for he in (False, True):
        cfg = tiny_config(csv, federated={"num-server-rounds": 2, "clients-per-round": 6}, he={"enabled": he})
        results[he] = simulate(cfg, tmp_path / f"run-{he}", progress=False)
    assert abs(results[True]["metrics"]["recall@10"] - results[False]["metrics"]["recall@10"]) <= 0.005
    assert results[True]["privacy"]["epsilon"] == pytest.approx(results[False]["privacy"]["epsilon"])
    he = results[True]["he"]
    assert he["enabled"] and he["rejected_updates"] == 0 and he["bytes_per_update"] > 0
    assert not (tmp_path / "run-True" / "global_shared.npz").exists()  # the server never had the model
    assert (tmp_path / "run-True" / "global_sum.ckks").exists()


def test_device_reply_under_he_hides_example_count_and_epsilon(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv"), he={"enabled": True})
    from shared_models.datasets.population import population
    from server.job import prepare_keys

    pop = population(cfg)
    keys = prepare_keys(cfg, pop, tmp_path)
    device = DeviceContext(pop.devices[0], DeviceStore(tmp_path / "d"), None, pop.max_interactions, keys)
    rep = train_round(RoundInput(device, cfg, None, 1, node=0))
    assert rep.payload and rep.shared is None and rep.num_examples == 0
    assert set(rep.metrics) <= {"train_loss", "decrypt_s", "encrypt_s"}
