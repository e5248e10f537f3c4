"""What a device enforces in the masking exchange whatever the server asks (``client/masks.py``), the wire
codec under fuzzing, the coordinator against hostile replies, and the config checks of ``he.masking``."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.masks import STATE_FILE, answer, upload_mask
from client.store import DeviceStore
from server.masks import MaskCoordinator, MaskError
from shared_models.config import ConfigError, build_config
from shared_models.crypto import HEConfig, init_keys, load_device_keys, load_server_keys
from shared_models.crypto import mask_wire as wire

RUN, ROUND, T = "run-1", 3, 2
IDS = [f"d{i}" for i in range(6)]


@pytest.fixture(scope="module")
def keyset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask-keys")
    init_keys(root, device_ids=IDS, he=HEConfig())
    return root


@pytest.fixture
def devices(keyset, tmp_path):
    return {i: (DeviceStore(tmp_path / d), load_device_keys(keyset, d, n_threads=1)) for i, d in enumerate(IDS)}


def _ask(devices, i, stage, request, *, round_id=ROUND):
    store, keys = devices[i]
    return answer(stage, request, store=store, keys=keys, run_id=RUN, round_id=round_id)


def _through_receive(devices, attempt=b"a" * 16, nodes=range(6)):
    """Stages 1-3 for ``nodes``, everyone everyone's neighbour; returns the advertised keys."""
    keys = {i: wire.KeysReply.decode(_ask(devices, i, wire.STAGE_KEYS, wire.KeysRequest(i, attempt).encode())).keys
            for i in nodes}
    tokens = {i: wire.TokensMessage.decode(_ask(devices, i, wire.STAGE_SHARES,
                                                wire.SharesRequest(T, keys).encode())).tokens for i in nodes}
    for u in nodes:
        assert _ask(devices, u, wire.STAGE_RECEIVE,
                    wire.TokensMessage({v: tokens[v][u] for v in nodes}, keys).encode()) == wire.ACK
    return keys


def test_stages_must_come_in_order_and_once_per_attempt(devices):
    with pytest.raises(ValueError, match="no mask keys"):
        _ask(devices, 0, wire.STAGE_SHARES, wire.SharesRequest(T, {}).encode())
    request = wire.KeysRequest(0, b"a" * 16).encode()
    _ask(devices, 0, wire.STAGE_KEYS, request)
    with pytest.raises(ValueError, match="one key set per attempt"):
        _ask(devices, 0, wire.STAGE_KEYS, request)
    with pytest.raises(ValueError, match="out of order"):
        _ask(devices, 0, wire.STAGE_UNMASK, wire.UnmaskRequest({0, 1}, set()).encode())
    with pytest.raises(ValueError, match="no mask keys for round 4"):
        _ask(devices, 0, wire.STAGE_SHARES, wire.SharesRequest(T, {}).encode(), round_id=4)
    _ask(devices, 0, wire.STAGE_KEYS, wire.KeysRequest(0, b"b" * 16).encode())  # a resumed run's new attempt


def test_a_device_checks_its_own_keys_the_threshold_and_its_number_of_peers(devices):
    keys = {i: wire.KeysReply.decode(_ask(devices, i, wire.STAGE_KEYS, wire.KeysRequest(i, b"a" * 16).encode())).keys
            for i in range(3)}
    with pytest.raises(ValueError, match="must list this device"):
        _ask(devices, 0, wire.STAGE_SHARES, wire.SharesRequest(T, {0: keys[1], 1: keys[1], 2: keys[2]}).encode())
    with pytest.raises(ValueError, match="threshold 3 for 3 neighbours"):
        _ask(devices, 0, wire.STAGE_SHARES, wire.SharesRequest(3, keys).encode())
    tokens = wire.TokensMessage.decode(_ask(devices, 0, wire.STAGE_SHARES, wire.SharesRequest(T, keys).encode()))
    with pytest.raises(ValueError, match="fewer than the threshold"):  # the server hides every peer but one
        _ask(devices, 0, wire.STAGE_RECEIVE, wire.TokensMessage({0: tokens.tokens[0]}, {0: keys[0], 1: keys[1]}).encode())


def test_one_reveal_per_round_never_both_shares_and_secrets_erased(devices):
    _through_receive(devices)
    store, keys = devices[0]
    upload_mask(store, keys, 100, run_id=RUN, round_id=ROUND)
    with pytest.raises(ValueError, match="out of order"):  # a second masked upload in the same round
        upload_mask(store, keys, 100, run_id=RUN, round_id=ROUND)
    with pytest.raises(ValueError, match="fewer than the threshold"):
        _ask(devices, 0, wire.STAGE_UNMASK, wire.UnmaskRequest({0}, {1, 2}).encode())
    with pytest.raises(ValueError, match="both in the sum and dropped"):
        _ask(devices, 0, wire.STAGE_UNMASK, wire.UnmaskRequest({0, 1, 2}, {2}).encode())
    reply = wire.SharesReply.decode(_ask(devices, 0, wire.STAGE_UNMASK, wire.UnmaskRequest({0, 1, 2}, {3}).encode()))
    assert set(reply.shares) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="out of order"):
        _ask(devices, 0, wire.STAGE_UNMASK, wire.UnmaskRequest({0, 1, 2}, {3}).encode())
    left = json.loads((store.root / STATE_FILE).read_text())
    assert left["stage"] == "revealed" and not {"channel", "mask", "self_seed", "held"} & set(left)
    assert oct(os.stat(store.root / STATE_FILE).st_mode & 0o777) == "0o600"


DECODERS = [wire.KeysRequest, wire.KeysReply, wire.SharesRequest, wire.TokensMessage, wire.UnmaskRequest,
            wire.SharesReply]
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                       lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                       max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300) | JSONISH.map(lambda v: json.dumps(v).encode()),
       st.sampled_from(DECODERS))
def test_every_decoder_rejects_junk_with_a_named_error_and_nothing_else(data, decoder):
    try:
        decoder.decode(data)
    except wire.MaskWireError as exc:
        assert "field" in str(exc) or "message" in str(exc)


def test_field_names_appear_in_the_error():
    with pytest.raises(wire.MaskWireError, match="field 'attempt'"):
        wire.KeysRequest.decode(b'{"id": 1, "attempt": "AAAA"}')
    with pytest.raises(wire.MaskWireError, match="field 'in_sum'"):
        wire.UnmaskRequest.decode(b'{"in_sum": [1, 1], "dropped": []}')


def test_the_coordinator_drops_hostile_devices_and_goes_on(keyset, devices):
    server = load_server_keys(keyset, n_threads=1)
    he = build_config({"he": {"masking": True, "mask-neighbours": 5, "mask-threshold": 2},
                       "federated": {"min-train-nodes": 3}}).he

    def exchange(round_id, stage, requests):
        out = {}
        for n, req in requests.items():
            if n == 5:  # answers every stage with junk
                out[n] = b"\x00junk"
                continue
            if n == 4 and stage == wire.STAGE_KEYS:  # signs keys as another device: bad signature
                reply = wire.KeysReply.decode(_ask(devices, n, stage, req, round_id=round_id))
                out[n] = wire.KeysReply("d0", reply.keys, reply.seed_commit, reply.signature).encode()
                continue
            store, keys = devices[n]
            out[n] = answer(stage, req, store=store, keys=keys, run_id=RUN, round_id=round_id)
        return out

    coord = MaskCoordinator(exchange, server, he=he, run_id=RUN)
    ready, failed = coord.prepare(ROUND, list(range(6)))
    assert ready == [0, 1, 2, 3] and set(failed) == {4, 5}
    assert "already advertised" in failed[4] or "bad signature" in failed[4]
    assert "not JSON" in failed[5]
    assert coord.check_update(4, "d4") and coord.check_update(0, "d1") and not coord.check_update(0, "d0")
    with pytest.raises(MaskError, match="never joined"):
        coord.unmask(b"", {0, 5})


@pytest.mark.parametrize("he, fed, key", [
    ({"enabled": False, "masking": True}, {}, "he.masking"),
    ({"masking": True, "mask-neighbours": 8}, {"min-train-nodes": 9}, "he.mask_neighbours"),
    ({"masking": True, "mask-neighbours": 5, "mask-threshold": 5}, {"min-train-nodes": 9}, "he.mask_threshold"),
    ({"masking": True, "mask-threshold": 1}, {"min-train-nodes": 9}, "he.mask_threshold"),
    ({"masking": True, "mask-threshold": 8}, {"min-train-nodes": 8}, "federated.min_train_nodes"),
])
def test_masking_config_errors_name_the_key(he, fed, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config({"he": he, "federated": fed})
