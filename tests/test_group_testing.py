"""Finding the update that makes an encrypted sum undecodable: group testing over sub-sums.

The search alone (any oracle), then the server with real CKKS updates among 20 devices: the hostile updates
are excluded and logged, the released sum is the honest updates' sum, and the questions stay within the bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shared_models.crypto.packing as packing
from client.secure import device_keys, encode_update, global_model, sum_decrypts
from server.group_testing import find_defective, query_bound
from server.loop import run_rounds
from server.run_log import log_record
from server.secure import SecureAggregation
from shared_models.crypto import HEConfig, init_keys, load_server_keys
from shared_models.messages import TrainReply
from tests.fed_helpers import tiny_config

N_DEVICES = 20
HEAVY_WEIGHT = 12  # within max_weight, so only the unit-weight check can tell
N_PARAMS = 3000
DEVICES = [f"d{i:02d}" for i in range(N_DEVICES)]


# ---- the search ---------------------------------------------------------------------------------------------

def _oracle(defective: set[int], calls: list):
    def is_valid(group):
        calls.append(list(group))
        return not defective & set(group)
    return is_valid


@pytest.mark.parametrize("defective, queries", [({0}, 8), ({19}, 6), ({4, 5}, 12)])
def test_known_question_counts_for_20_items(defective, queries):
    calls: list = []
    res = find_defective(20, _oracle(defective, calls))
    assert set(res.defective) == defective and res.queries == len(calls) == queries


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 200), data=st.data())
def test_finds_exactly_the_defective_items_within_the_bound(n, data):
    k = data.draw(st.integers(1, min(n, 6)))
    defective = set(data.draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k, unique=True)))
    calls: list = []
    res = find_defective(n, _oracle(defective, calls))
    assert set(res.defective) == defective
    assert res.queries == len(calls) <= query_bound(n, k)
    assert all(g == sorted(g) and g for g in calls)


def test_far_fewer_questions_than_testing_each_item():
    worst = max(find_defective(1024, _oracle({i}, [])).queries for i in range(0, 1024, 37))
    assert worst <= query_bound(1024, 1) == 20  # vs 1024 single tests


def test_a_defect_that_only_shows_in_combination_is_not_blamed_on_one_item():
    pair = {3, 12}  # invalid only together (e.g. two in-range updates whose sum wraps)
    res = find_defective(16, lambda g: not pair <= set(g))
    assert res.defective == ()  # nothing found: the caller tests the remainder and keeps the previous sum


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="n=0"):
        find_defective(0, lambda g: True)
    with pytest.raises(ValueError, match="n >= 1"):
        query_bound(0, 1)


# ---- the server, with real CKKS updates ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    init_keys(d, device_ids=DEVICES, he=HEConfig(max_weight=16, max_summands=32, scale_bits=28))
    return str(d)


def _values(node: int) -> np.ndarray:
    return np.linspace(-0.5, 0.5, N_PARAMS).astype(np.float32) * (node + 1) / N_DEVICES


def _weight(node: int) -> int:
    return 1 + node % 5


def _update(keys_dir, node: int, round_id: int, *, hostile: bool, weight: int | None = None) -> TrainReply:
    values = np.full(N_PARAMS, 1e4, np.float32) if hostile else _values(node)
    weight = _weight(node) if weight is None else weight
    with pytest.MonkeyPatch.context() as m:
        if hostile:  # a modified device: a validly signed update far outside clip_range
            m.setattr(packing, "check_values", lambda x, cfg: np.asarray(x, np.float64).ravel())
        payload, sig, _ = encode_update({"v": values}, weight=weight, keys=device_keys(keys_dir, DEVICES[node]),
                                        round_id=round_id)
    return TrainReply(node=node, device_id=DEVICES[node], round_id=round_id, payload=payload, signature=sig)


class KeyHolderTransport:
    """Twenty devices; ``hostile`` nodes send out-of-range updates; any node answers sum checks honestly."""

    def __init__(self, keys_dir, hostile: set[int], *, unit_weights: bool = False, heavy: int | None = None) -> None:
        """``unit_weights``: every honest update weighs 1 (DP) and the key holder checks that; ``heavy``: the
        node of a device that encrypts honest values but claims weight ``HEAVY_WEIGHT``."""
        self.keys_dir, self.hostile, self.asked = keys_dir, hostile, []
        self.unit_weights, self.heavy = unit_weights, heavy

    def node_ids(self):
        return list(range(N_DEVICES))

    def train(self, round_id, nodes, received):
        return [_update(self.keys_dir, n, round_id, hostile=n in self.hostile,
                        weight=HEAVY_WEIGHT if n == self.heavy else 1 if self.unit_weights else None) for n in nodes]

    def evaluate(self, round_id, nodes, received, stage):
        return {}

    def check_sum(self, node: int, blob: bytes) -> bool:
        self.asked.append(node)
        return sum_decrypts(blob, device_keys(self.keys_dir, DEVICES[node]), unit_weights=self.unit_weights)


def _run(tmp_path, keys_dir, hostile: set[int], *, min_train_nodes: int = 2, **transport):
    cfg = tiny_config(tmp_path / "unused.csv", federated={
        "num-server-rounds": 1, "clients-per-round": N_DEVICES, "min-train-nodes": min_train_nodes, "eval-every": 0})
    server = SecureAggregation(load_server_keys(keys_dir), n_params=N_PARAMS)
    transport = KeyHolderTransport(keys_dir, hostile, **transport)
    server.checker = transport.check_sum
    stats = run_rounds(cfg, transport, server)
    return cfg, server, transport, stats


def _honest_average(hostile: set[int]) -> np.ndarray:
    nodes = [n for n in range(N_DEVICES) if n not in hostile]
    return sum(_weight(n) * _values(n).astype(np.float64) for n in nodes) / sum(_weight(n) for n in nodes)


@pytest.mark.parametrize("hostile", [{7}, {2, 13}])
def test_hostile_updates_among_20_are_found_excluded_logged_and_the_honest_sum_released(tmp_path, keys_dir, hostile):
    cfg, server, transport, stats = _run(tmp_path, keys_dir, hostile)
    assert sorted(server.excluded) == sorted(hostile)
    assert stats[0].valid == N_DEVICES - len(hostile) and stats[0].rejected == len(hostile)
    weights, total, _ = global_model(server.latest, device_keys(keys_dir, DEVICES[0]), {"v": np.zeros(N_PARAMS)},
                                     user_level=False)
    assert total == pytest.approx(sum(_weight(n) for n in range(N_DEVICES) if n not in hostile), abs=1e-3)
    np.testing.assert_allclose(weights["v"], _honest_average(hostile), atol=1e-5)
    assert server.sum_checks == len(transport.asked) <= 2 + query_bound(N_DEVICES, len(hostile))
    assert set(transport.asked) == {0}  # one key holder, a device of the round
    record = log_record(cfg, stats[0], server)  # what the signed round log holds for the round
    assert sorted(r["node"] for r in record["rejected"]) == sorted(hostile)
    assert all("group testing" in r["reason"] for r in record["rejected"])


def test_an_honest_round_costs_one_question_and_releases_everything(tmp_path, keys_dir):
    _, server, transport, stats = _run(tmp_path, keys_dir, set())
    assert server.sum_checks == 1 and server.excluded == [] and stats[0].valid == N_DEVICES
    weights, _, _ = global_model(server.latest, device_keys(keys_dir, DEVICES[5]), {"v": np.zeros(N_PARAMS)},
                                 user_level=False)
    np.testing.assert_allclose(weights["v"], _honest_average(set()), atol=1e-5)


def test_too_few_left_after_exclusion_keeps_the_previous_sum(tmp_path, keys_dir):
    _, server, _, stats = _run(tmp_path, keys_dir, {1, 8}, min_train_nodes=19)
    assert server.latest is None  # round 1: nothing was released before, nothing undecodable is now
    assert sorted(server.excluded) == [1, 8] and stats[0].valid == 18
    assert "previous sum kept" in server.rejected[-1][2] and server.rejected[-1][1] == -1


def test_a_key_holder_that_does_not_answer_releases_nothing_and_excludes_nobody(tmp_path, keys_dir):
    cfg = tiny_config(tmp_path / "unused.csv", federated={"num-server-rounds": 1, "clients-per-round": 4,
                                                          "min-train-nodes": 1, "eval-every": 0})
    server = SecureAggregation(load_server_keys(keys_dir), n_params=N_PARAMS)
    transport = KeyHolderTransport(keys_dir, set())
    server.checker = lambda node, blob: (_ for _ in ()).throw(OSError("device offline"))
    stats = run_rounds(cfg, transport, server)
    assert stats[0].valid == 4 and stats[0].rejected == 0 and server.excluded == []
    assert server.latest is None and server.sum_checks == 1  # no search on an unanswered question
    assert "did not answer a sum check (device offline)" in server.rejected[-1][2]


def test_under_dp_a_device_claiming_more_weight_is_found_and_excluded(tmp_path, keys_dir):
    _, server, transport, stats = _run(tmp_path, keys_dir, set(), unit_weights=True, heavy=11)
    assert server.excluded == [11] and stats[0].valid == N_DEVICES - 1
    weights, total, _ = global_model(server.latest, device_keys(keys_dir, DEVICES[0]), {"v": np.zeros(N_PARAMS)},
                                     user_level=False, unit_weights=True)
    assert total == pytest.approx(N_DEVICES - 1, abs=1e-3)
    honest = [n for n in range(N_DEVICES) if n != 11]
    np.testing.assert_allclose(weights["v"], np.mean([_values(n) for n in honest], axis=0), atol=1e-5)


def test_without_the_unit_weight_check_a_heavier_update_goes_unnoticed(tmp_path, keys_dir):
    _, server, _, stats = _run(tmp_path, keys_dir, set(), heavy=11)  # in range: it decrypts, 12x the say
    assert server.excluded == [] and stats[0].valid == N_DEVICES and server.sum_checks == 1


@pytest.mark.parametrize("answers", [3, 7])  # gone in the middle of the search / at the remainder's question
def test_a_key_holder_lost_mid_search_leaves_no_half_recorded_exclusion(tmp_path, keys_dir, answers):
    cfg = tiny_config(tmp_path / "unused.csv", federated={"num-server-rounds": 1, "clients-per-round": N_DEVICES,
                                                          "min-train-nodes": 2, "eval-every": 0})
    server = SecureAggregation(load_server_keys(keys_dir), n_params=N_PARAMS)
    transport = KeyHolderTransport(keys_dir, {19})  # 1 confirming question, 6 to find it, the 8th about the rest

    def flaky(node, blob):
        if len(transport.asked) >= answers:
            raise TimeoutError("no answer")
        return transport.check_sum(node, blob)
    server.checker = flaky
    stats = run_rounds(cfg, transport, server)
    assert server.excluded == [] and server.latest is None and stats[0].rejected == 0
    assert [why for _, node, why in server.rejected if node != -1] == []
    assert "did not answer a sum check (no answer)" in server.rejected[-1][2]
