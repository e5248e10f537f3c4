"""Broadcast by reference (in-process simulations): publish once by SHA-256, devices read and check it."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from server.grid_transport import GridTransport
from shared_models import broadcast
from shared_models.messages import ARRAYS, CONFIG, KEY_BROADCAST, KEY_BROADCAST_DIR
from tests.fed_helpers import tiny_config


@pytest.fixture(autouse=True)
def _fresh_caches():
    broadcast.fetch.cache_clear()
    broadcast.fetch_arrays.cache_clear()
    yield
    broadcast.fetch.cache_clear()
    broadcast.fetch_arrays.cache_clear()


def test_published_bytes_come_back_by_digest_and_old_states_are_pruned(tmp_path):
    blobs = [bytes([i]) * 1000 for i in range(4)]
    digests = [broadcast.publish(tmp_path, b) for b in blobs]
    assert digests == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert broadcast.fetch(str(tmp_path), digests[-1]) == blobs[-1]
    assert len(list(tmp_path.glob("*.bin"))) == broadcast.KEEP  # the current and the previous state
    with pytest.raises(FileNotFoundError, match="broadcast state"):
        broadcast.fetch(str(tmp_path), digests[0])


def test_a_replaced_file_is_refused(tmp_path):
    digest = broadcast.publish(tmp_path, b"the encrypted sum")
    (tmp_path / f"{digest}.bin").write_bytes(b"something else")
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        broadcast.fetch(str(tmp_path), digest)


def test_plaintext_weights_round_trip_read_only_in_key_order(tmp_path):
    state = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones(2, np.float32)}
    digest = broadcast.publish(tmp_path, broadcast.encode_state(state))
    got = broadcast.fetch_arrays(str(tmp_path), digest)
    assert list(got) == ["b", "a"] and all(np.array_equal(got[k], state[k]) for k in state)
    with pytest.raises(ValueError):  # shared by the devices of a process: nobody may change it in place
        got["a"][0] = 5.0


def test_the_transport_sends_the_digest_instead_of_the_state(tmp_path):
    class Grid:
        def get_node_ids(self):
            return [1, 2]

    cfg = tiny_config(tmp_path / "unused.csv")
    where = tmp_path / "broadcast"
    transport = GridTransport(Grid(), cfg, str(tmp_path), expected_nodes=2, timeout_s=1.0, broadcast_dir=str(where))
    blob = b"\x01" * 5000
    content = transport._content_fn(3, blob)()
    conf = content[CONFIG]
    assert len(content[ARRAYS]) == 0 and conf[KEY_BROADCAST_DIR] == str(where)
    assert broadcast.fetch(str(where), str(conf[KEY_BROADCAST])) == blob
    assert KEY_BROADCAST not in transport._content_fn(1, None)()[CONFIG]  # round 1 under HE: nothing to send
    plain = GridTransport(Grid(), cfg, str(tmp_path), expected_nodes=2, timeout_s=1.0)._content_fn(3, blob)()
    assert KEY_BROADCAST not in plain[CONFIG] and len(plain[ARRAYS]) == 1  # deployment: bytes in the message
