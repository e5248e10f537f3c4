"""Every byte a device sends is hostile: a malformed train/evaluate reply is a logged rejection, never an
exception out of the round loop, and the released model stays finite. Driven through the real GridTransport
decode path and the real round loop (server/loop.py run_rounds) with PlainFedAvg and SecureAggregation."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.secure import device_keys, encode_update
from server.grid_transport import GridTransport
from server.loop import PlainFedAvg, UpdateLimits, run_rounds
from server.secure import SecureAggregation
from shared_models.crypto import HEConfig, init_keys, load_server_keys
from shared_models.messages import (ARRAYS, CONFIG, KEY_DEVICE_ID, KEY_ROUND, KEY_SIGNATURE, KEY_SIGNED_ROUND, METRICS,
                                    RANK, RANK_UNMASKED, UPDATE, TrainReply, decode_train_reply, encode_train_reply)
from tests.fed_helpers import tiny_config
from tests.hostile_grid import FakeMessage, HostileGrid

TEMPLATE = {"w": np.zeros((3, 4), np.float32), "b": np.zeros((4,), np.float32)}
N_PARAMS = 5000
DEVICES = ["d0", "d1", "d2", "d3"]


@pytest.fixture(autouse=True)
def _fake_message(monkeypatch):
    monkeypatch.setattr("server.grid_transport.Message", FakeMessage)
    monkeypatch.setattr("server.grid_transport.PULL_S", 0.0)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    init_keys(d, device_ids=DEVICES, he=HEConfig(max_weight=64, max_summands=16, scale_bits=28))
    return str(d)


def _cfg(tmp_path, **federated):
    return tiny_config(tmp_path / "unused.csv", federated={"num-server-rounds": 2, "clients-per-round": 4,
                                                           "eval-every": 1, "min-train-nodes": 1, **federated})


def _honest(scale: float = 0.5, n: int = 3) -> RecordDict:
    shared = {"w": np.full((3, 4), scale, np.float32), "b": np.full((4,), -scale, np.float32)}
    return encode_train_reply(TrainReply(node=0, shared=shared, num_examples=n, metrics={"train_loss": 1.0}))


def _plain_run(tmp_path, answer, evaluate=None):
    cfg = _cfg(tmp_path)
    grid = HostileGrid(4, answer, *(() if evaluate is None else (evaluate,)))
    strategy = PlainFedAvg({k: v.copy() for k, v in TEMPLATE.items()}, limits=UpdateLimits.from_config(cfg))
    transport = GridTransport(grid, cfg, str(tmp_path), expected_nodes=4, timeout_s=5.0)
    return run_rounds(cfg, transport, strategy), strategy


def _one_hostile(hostile: RecordDict):
    """Node 1 sends ``hostile``; nodes 2..4 send honest updates of value 0.5."""
    return lambda dst, msg: hostile if dst == 1 else _honest()


# ---- the named crashers of issue 16 (plaintext) ------------------------------------------------------------

def _without(content: RecordDict, key: str) -> RecordDict:
    return RecordDict({k: v for k, v in content.items() if k != key})


@pytest.mark.parametrize("name, hostile, reason", [
    ("no metrics record", _without(_honest(), METRICS), "no 'metrics' record"),
    ("nan example count", RecordDict({**_honest(), METRICS: MetricRecord({"num-examples": float("nan")})}),
     "'num-examples' must be an integer"),
    ("1e12 examples", _honest(n=10 ** 12), "federated.max_examples"),
    ("0 examples", _honest(n=0), "outside [1,"),
    ("1e38 weights", _honest(scale=1e38), "federated.max_abs_weight"),
    ("complex weights", RecordDict({**_honest(), ARRAYS: ArrayRecord(
        {"w": Array(np.full((3, 4), 1 + 1j, np.complex64)), "b": Array(np.zeros(4, np.float32))})}), "dtype complex64"),
    ("int weights", RecordDict({**_honest(), ARRAYS: ArrayRecord(
        {"w": Array(np.ones((3, 4), np.int64)), "b": Array(np.zeros(4, np.float32))})}), "dtype int64"),
    ("wrong shape", RecordDict({**_honest(), ARRAYS: ArrayRecord(
        {"w": Array(np.ones((4, 3), np.float32)), "b": Array(np.zeros(4, np.float32))})}), "shape (4, 3)"),
    ("metrics of the wrong record type", RecordDict({**_without(_honest(), METRICS), METRICS: ConfigRecord({"a": 1})}),
     "expected MetricRecord"),
    ("non-finite metric", RecordDict({**_honest(), METRICS: MetricRecord({"num-examples": 3, "train_loss": float("inf")})}),
     "'train_loss' must be a finite number"),
    ("non-numeric round id", RecordDict({**_honest(), CONFIG: ConfigRecord({KEY_SIGNED_ROUND: "one"})}),
     "'signed-round' must be an integer"),
])
def test_a_named_crasher_is_a_logged_rejection_and_the_round_goes_on(tmp_path, name, hostile, reason):
    stats, strategy = _plain_run(tmp_path, _one_hostile(hostile))
    assert [s.valid for s in stats] == [3, 3] and [s.rejected for s in stats] == [1, 1], name
    assert all(reason in why for _, node, why in strategy.rejected), strategy.rejected
    assert {node for _, node, _ in strategy.rejected} == {0}
    np.testing.assert_allclose(strategy.shared["w"], 0.5)  # the honest average, untouched by node 1
    assert all(s.metrics["evaluated"] == 4 for s in stats)


def test_shuffled_parameter_order_is_accepted_and_averaged_by_name(tmp_path):
    honest = _honest(0.25)
    reordered = RecordDict({**honest, ARRAYS: ArrayRecord({"b": honest[ARRAYS]["b"], "w": honest[ARRAYS]["w"]})})
    stats, strategy = _plain_run(tmp_path, lambda dst, msg: reordered if dst == 1 else honest)
    assert [s.valid for s in stats] == [4, 4]
    np.testing.assert_allclose(strategy.shared["b"], -0.25)


@pytest.mark.parametrize("rank", [0, -3, 2 ** 40, 1.5, float("nan")])
def test_a_bad_rank_leaves_that_node_unevaluated(tmp_path, rank):
    bad = RecordDict({METRICS: MetricRecord({RANK: rank, RANK_UNMASKED: 1})})
    stats, _ = _plain_run(tmp_path, lambda dst, msg: _honest(),
                          lambda dst, msg: bad if dst == 2 else RecordDict({METRICS: MetricRecord({RANK: 1, RANK_UNMASKED: 1})}))
    assert [s.metrics["evaluated"] for s in stats] == [3, 3]
    assert stats[-1].metrics["recall@10"] == 1.0  # the rank-1 nodes only


# ---- property: arbitrary reply structures through the real decode path and loop ---------------------------

NAMES = st.sampled_from(["w", "b", "x", UPDATE, "num-examples", "refused", "train_loss", RANK, KEY_SIGNED_ROUND,
                         KEY_DEVICE_ID, KEY_SIGNATURE, "reason"])
NUMBERS = st.one_of(st.integers(-2 ** 63, 2 ** 63 - 1), st.floats(allow_nan=True, allow_infinity=True),
                    st.floats(-1e6, 1e6), st.integers(0, 5))
METRIC_VALUE = st.one_of(NUMBERS, st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), max_size=3),
                         st.lists(st.floats(allow_nan=True), max_size=3))
CONFIG_VALUE = st.one_of(NUMBERS, st.booleans(), st.text(max_size=20), st.binary(max_size=70))
DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.complex64, np.int64, np.int8, np.bool_, np.uint64])
SHAPES = st.sampled_from([(3, 4), (4,), (4, 3), (), (0,), (12,), (3, 4, 1)])


@st.composite
def arrays(draw):
    dtype, shape = draw(DTYPES), draw(SHAPES)
    value = draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-100, 100)))
    with np.errstate(all="ignore"):
        return Array(np.full(shape, value).astype(dtype))


@st.composite
def replies(draw):
    parts = {}
    if draw(st.booleans()):
        parts[METRICS] = MetricRecord(draw(st.dictionaries(NAMES, METRIC_VALUE, max_size=4)))
    if draw(st.booleans()):
        parts[CONFIG] = ConfigRecord(draw(st.dictionaries(NAMES, CONFIG_VALUE, max_size=4)))
    if draw(st.booleans()):
        arr = draw(st.dictionaries(NAMES, st.one_of(arrays(), st.binary(max_size=40).map(
            lambda b: Array("uint8", (len(b),), "raw.bytes", b))), max_size=3))
        parts[ARRAYS] = ArrayRecord(arr)
    if draw(st.booleans()):  # a record of the wrong kind under a known name
        parts[draw(st.sampled_from([METRICS, CONFIG, ARRAYS]))] = draw(st.sampled_from(
            [ConfigRecord({"a": "b"}), MetricRecord({"a": 1.0}), ArrayRecord({})]))
    honest = _honest(draw(st.floats(-2, 2)), draw(st.integers(1, 5)))
    return draw(st.sampled_from([RecordDict(parts), honest, RecordDict({**honest, **parts})]))


def _by_node(contents):
    return lambda dst, msg: contents[(dst - 1) % len(contents)]


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(contents=st.lists(replies(), min_size=1, max_size=4), ranks=st.lists(
    st.one_of(st.builds(lambda v: RecordDict({METRICS: MetricRecord({RANK: v, RANK_UNMASKED: v})}), METRIC_VALUE),
              replies()),
    min_size=1, max_size=4))
def test_plain_loop_never_raises_and_the_model_stays_finite_and_bounded(tmp_path, contents, ranks):
    stats, strategy = _plain_run(tmp_path, _by_node(contents), _by_node(ranks))
    assert len(stats) == 2
    limit = UpdateLimits().max_abs_weight
    for k, v in strategy.shared.items():
        assert v.shape == TEMPLATE[k].shape and v.dtype == np.float32
        assert np.isfinite(v).all() and np.abs(v).max() <= limit
    for s in stats:
        assert s.valid + s.rejected + s.refused + s.failed == s.sampled == 4


@SETTINGS
@given(contents=st.lists(replies(), min_size=1, max_size=4))
def test_secure_loop_never_raises(tmp_path, keys_dir, contents):
    cfg = _cfg(tmp_path, **{"eval-every": 0})
    strategy = SecureAggregation(load_server_keys(keys_dir), n_params=N_PARAMS)
    transport = GridTransport(HostileGrid(4, _by_node(contents)), cfg, str(tmp_path), expected_nodes=4,
                              timeout_s=5.0)
    stats = run_rounds(cfg, transport, strategy)
    assert len(stats) == 2 and all(s.valid == 0 for s in stats) and strategy.latest is None  # none is signed


# ---- HE: the named crashers and the short header ----------------------------------------------------------

def _signed(keys_dir, device, round_id, values, weight=1):
    payload, sig, _ = encode_update({"v": values}, weight=weight, keys=device_keys(keys_dir, device), round_id=round_id)
    return encode_train_reply(TrainReply(node=0, device_id=device, round_id=round_id, payload=payload, signature=sig))


def test_he_run_rejects_malformed_replies_and_sums_the_honest_ones(tmp_path, keys_dir):
    cfg = _cfg(tmp_path, **{"eval-every": 0})
    honest = {r: {d: _signed(keys_dir, d, r, np.full(N_PARAMS, 0.1, np.float32)) for d in DEVICES} for r in (1, 2)}
    crashers = [_without(honest[1]["d0"], METRICS),
                RecordDict({**honest[1]["d0"], CONFIG: ConfigRecord({KEY_SIGNED_ROUND: "abc", KEY_DEVICE_ID: "d0"})}),
                RecordDict({**honest[1]["d0"], METRICS: MetricRecord({"num-examples": float("inf")})})]

    def answer(dst, msg):
        rnd = 1 if msg.content[CONFIG][KEY_ROUND] == 1 else 2
        return crashers[rnd - 1 + (dst == 1)] if dst == 1 else honest[rnd][DEVICES[dst - 1]]
    strategy = SecureAggregation(load_server_keys(keys_dir), n_params=N_PARAMS)
    transport = GridTransport(HostileGrid(4, answer), cfg, str(tmp_path), expected_nodes=4, timeout_s=5.0)
    stats = run_rounds(cfg, transport, strategy)
    assert [(s.valid, s.rejected) for s in stats] == [(3, 1), (3, 1)]
    assert [n for _, n, _ in strategy.rejected] == [0, 0]
    assert "malformed reply" in strategy.rejected[0][2] and "malformed reply" in strategy.rejected[1][2]


def test_a_short_header_arriving_first_is_rejected_and_honest_updates_still_count(keys_dir):
    server = SecureAggregation(load_server_keys(keys_dir), n_params=N_PARAMS)
    he = server.keys.he
    short = N_PARAMS - 10
    assert he.n_ciphertexts(short) == he.n_ciphertexts(N_PARAMS)  # the attack: same ciphertext count
    server.begin(1, [0, 1, 2])
    liar = decode_train_reply(0, FakeMessage(_signed(keys_dir, "d0", 1, np.zeros(short, np.float32)), 0, "train"))
    assert "params" in server.offer(liar)
    for i, dev in enumerate(["d1", "d2"], start=1):
        rep = decode_train_reply(i, FakeMessage(_signed(keys_dir, dev, 1, np.full(N_PARAMS, 0.1, np.float32)), i,
                                                "train"))
        assert server.offer(rep) == ""
    assert server.finish(min_train_nodes=2)


# ---- HE: an update outside the encoding's range makes the sum undecodable; the server goes back ------------

def _out_of_range_update(keys_dir, monkeypatch, device, round_id):
    """What a modified device can send: a validly signed update whose values lie far outside clip_range."""
    import shared_models.crypto.packing as packing

    with monkeypatch.context() as m:
        m.setattr(packing, "check_values", lambda x, cfg: np.asarray(x, np.float64).ravel())
        return _signed(keys_dir, device, round_id, np.full(N_PARAMS, 1e4, np.float32))


def test_an_undecodable_sum_fails_every_device_and_the_server_goes_back_to_the_previous_sum(keys_dir, monkeypatch):
    from client.secure import global_model
    from shared_models.crypto import DecryptionError

    server = SecureAggregation(load_server_keys(keys_dir), n_params=N_PARAMS)
    good = {}
    for r, bad in ((1, False), (2, True)):
        server.begin(r, [0, 1, 2])
        for i, dev in enumerate(DEVICES[:3]):
            content = (_out_of_range_update(keys_dir, monkeypatch, dev, r) if bad and i == 0 else
                       _signed(keys_dir, dev, r, np.full(N_PARAMS, 0.1, np.float32)))
            assert server.offer(decode_train_reply(i, FakeMessage(content, i, "train"))) == ""
        assert server.finish(min_train_nodes=2)
        good[r] = server.latest
    template = {"v": np.zeros(N_PARAMS, np.float32)}
    weights, _, _ = global_model(good[1], device_keys(keys_dir, "d1"), template, user_level=False)
    np.testing.assert_allclose(weights["v"], 0.1, atol=1e-3)
    with pytest.raises(DecryptionError):  # the device checks what it decrypts (total weight, clip range)
        global_model(good[2], device_keys(keys_dir, "d1"), template, user_level=False)
    server.begin(3, [0, 1, 2])
    for i in range(3):  # every device reports, through the real codec, that the sum does not decrypt
        rep = decode_train_reply(i, FakeMessage(encode_train_reply(TrainReply(
            node=i, error="DecryptionError: decrypted total weight 12.5 outside (0, 64]")), i, "train"))
        assert rep.error == "DecryptionError"  # the kind only: no decrypted value reaches the server
        server.note_failure(rep)
    assert not server.finish(min_train_nodes=2)
    assert server.latest == good[1]  # back to the last sum devices could decrypt
    assert server.rejected[-1][0] == 3 and "reverted" in server.rejected[-1][2]
