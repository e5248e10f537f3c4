"""Group testing over a Flower Grid: the server's sum checks travel as QUERY messages, the device answers
with one bit through the ClientApp's query handler, and a hostile update is found and excluded as inline."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict

import shared_models.crypto.packing as packing
from client.app import answer_query
from client.secure import device_keys, encode_update, global_model
from server.grid_transport import GridTransport
from server.loop import run_rounds
from server.secure import SecureAggregation
from shared_models.crypto import init_keys, load_server_keys
from shared_models.datasets.population import population
from shared_models.messages import (METRICS, SUM_VALID, TrainReply, decode_identity,
                                    decode_instruction, decode_sum_check, encode_sum_check, encode_train_reply)
from tests.fed_helpers import synthetic_csv, tiny_config
from tests.hostile_grid import FakeMessage, HostileGrid

N_PARAMS, USERS, BAD = 3000, 8, 5  # node index 5 (Grid node id 6) sends an out-of-range update


@pytest.fixture(autouse=True)
def _fake_message(monkeypatch):
    monkeypatch.setattr("server.grid_transport.Message", FakeMessage)
    monkeypatch.setattr("server.grid_transport.PULL_S", 0.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid-check")
    cfg = tiny_config(synthetic_csv(tmp / "s.csv", users=USERS), he={"enabled": True, "keys-dir": str(tmp / "keys")},
                      federated={"num-server-rounds": 1, "clients-per-round": USERS, "min-train-nodes": 2,
                                 "eval-every": 0})
    ids = [d.device_id for d in population(cfg).devices]
    init_keys(tmp / "keys", device_ids=ids, he=cfg.he.to_he_config())
    return cfg, ids, str(tmp / "keys")


def _values(i: int) -> np.ndarray:
    return np.linspace(-0.5, 0.5, N_PARAMS).astype(np.float32) * (i + 1) / USERS


def _train(cfg, ids, keys_dir):
    def answer(dst, msg):
        i = dst - 1
        values = np.full(N_PARAMS, 1e4, np.float32) if i == BAD else _values(i)
        with pytest.MonkeyPatch.context() as m:
            if i == BAD:
                m.setattr(packing, "check_values", lambda x, c: np.asarray(x, np.float64).ravel())
            payload, sig, _ = encode_update({"v": values}, weight=1, keys=device_keys(keys_dir, ids[i]), round_id=1)
        return encode_train_reply(TrainReply(node=i, device_id=ids[i], round_id=1, payload=payload, signature=sig))
    return answer


def _device(dst, msg):
    """The real ClientApp query handler of the simulated device on partition ``dst - 1``."""
    return answer_query(decode_instruction(msg), SimpleNamespace(node_config={"partition-id": dst - 1}))


def test_a_hostile_update_is_found_over_the_grid_and_the_honest_sum_released(world, tmp_path):
    cfg, ids, keys_dir = world
    grid = HostileGrid(USERS, _train(cfg, ids, keys_dir), _device)
    transport = GridTransport(grid, cfg, str(tmp_path), expected_nodes=USERS, timeout_s=5.0, keys_dir=keys_dir)
    server = SecureAggregation(load_server_keys(keys_dir), n_params=N_PARAMS)
    server.checker = transport.check_sum
    stats = run_rounds(cfg, transport, server)
    assert server.excluded == [BAD] and stats[0].valid == USERS - 1 and stats[0].rejected == 1
    weights, total, _ = global_model(server.latest, device_keys(keys_dir, ids[0]), {"v": np.zeros(N_PARAMS)},
                                     user_level=False)
    honest = [i for i in range(USERS) if i != BAD]
    assert total == pytest.approx(len(honest), abs=1e-3)
    np.testing.assert_allclose(weights["v"], np.mean([_values(i) for i in honest], axis=0), atol=1e-4)  # scale 2**21


def test_the_query_handler_still_names_the_device(world):
    cfg, ids, keys_dir = world
    msg = FakeMessage(_identify_content(cfg, keys_dir), 3, "query")
    assert decode_identity(FakeMessage(_device(3, msg), 3, "query")) == ids[2]


def _identify_content(cfg, keys_dir):
    from shared_models.messages import config_to_json, instruction_builder

    return instruction_builder(config_to_json(cfg), None, round_id=0, stage="identify", keys_dir=keys_dir)()


def test_the_answer_is_one_bit_and_a_malformed_answer_is_an_error(world, tmp_path):
    assert decode_sum_check(FakeMessage(encode_sum_check(True), 1, "query")) is True
    assert set(encode_sum_check(False)[METRICS]) == {SUM_VALID}  # nothing the device decrypted
    cfg, ids, keys_dir = world
    for bad in (RecordDict({}), RecordDict({METRICS: MetricRecord({SUM_VALID: 2})}),
                RecordDict({METRICS: MetricRecord({SUM_VALID: 0.5})}), RecordDict({METRICS: MetricRecord({})})):
        grid = HostileGrid(USERS, _train(cfg, ids, keys_dir), lambda dst, msg, bad=bad: bad)
        transport = GridTransport(grid, cfg, str(tmp_path), expected_nodes=USERS, timeout_s=5.0, keys_dir=keys_dir)
        with pytest.raises(RuntimeError, match="malformed sum-check answer"):
            transport.check_sum(0, b"anything")
