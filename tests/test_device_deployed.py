"""A deployed device (ClientApp with ``state-dir``): its own history, ledger, personal weights and keys,
in-process (the Flower processes are covered by test_deploy_e2e.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from client.recommend import Recommender
from client.round import HE_VISIBLE_METRICS, RoundInput, train_round
from client.runtime import (GLOBAL_CKKS, GLOBAL_NPZ, DeviceState, DeviceStateError, add_interaction,
                            deployed_device, install_device_keys, init_device)
from shared_models.config import build_config
from shared_models.crypto import init_keys, load_server_keys, sum_ciphertexts
from tests.fed_helpers import TINY_MODEL
from tests.test_device_helpers import make_device


def _run_cfg(dataset: str):
    return build_config({"data": {"dataset": dataset}, "model": dict(TINY_MODEL),
                         "federated": {"batch-size": 4, "lr": 0.01, "local-epochs": 1},
                         "privacy": {"mode": "example", "target-epsilon": 50.0, "delta": 1e-5},
                         "he": {"enabled": True}})


def _round(states, cfg, round_id, received):
    replies = []
    for i, s in enumerate(states):
        dev = deployed_device(s, cfg, received)
        replies.append(train_round(RoundInput(dev, cfg, received, round_id, node=i)))
    return replies


def test_two_he_rounds_from_state_dirs_then_recommend(tmp_path):
    states = [make_device(tmp_path, user=u, name=f"dev-{u}") for u in ("u0", "u1")]
    cfg = _run_cfg(str(tmp_path / "synth.csv"))
    keys = init_keys(tmp_path / "keys", device_ids=["u0", "u1", "u2"], he=cfg.he.to_he_config())
    for s, u in zip(states, ("u0", "u1")):
        install_device_keys(s, keys.root, u)
    server = load_server_keys(keys.root, n_threads=1)
    blob = None
    for round_id in (1, 2):
        replies = _round(states, cfg, round_id, blob)
        assert all(r.payload and not r.refused and r.device_id in ("u0", "u1") for r in replies)
        assert all(set(r.metrics) <= set(HE_VISIBLE_METRICS) for r in replies)  # no epsilon leak
        n = server.he.n_ciphertexts(_n_params(states[0], cfg))
        blob = sum_ciphertexts(server.context, [r.payload for r in replies], expected_count=n, cfg=server.he)
    _ = _round(states, cfg, 3, blob)  # a third message stores the round-2 sum on the devices
    for s in states:
        ledger = DeviceState(s).store().ledger(cfg.privacy, delta=1e-5)
        assert len(ledger.rounds) == 3 and 0 < ledger.epsilon() < 50
        assert DeviceState(s).store().load_personal()  # personal weights written
        assert json.loads((s / "config.json").read_text())["he"]["enabled"] is True
        assert (s / GLOBAL_CKKS).read_bytes() == blob and not (s / GLOBAL_NPZ).exists()
        with Recommender(s) as rec:
            res = rec.recommend(5)
        assert res.source == GLOBAL_CKKS and len(res.items) == 5


def _n_params(state, cfg) -> int:
    from shared_models.model.state import initial_shared

    return int(sum(v.size for v in initial_shared(cfg, DeviceState(state).catalogue().num_items, None).values()))


def test_history_is_split_leave_one_out_and_plaintext_global_is_kept(tmp_path):
    state = make_device(tmp_path)
    cfg = _run_cfg(str(tmp_path / "synth.csv"))
    cfg.he.enabled = False
    history = DeviceState(state).history_indices()
    weights = {"item_emb.weight": np.ones((3, 2), np.float32)}
    dev = deployed_device(state, cfg, weights)
    assert list(dev.data.train) == list(history[:-2])
    assert (dev.data.valid, dev.data.test) == (history[-2], history[-1])
    with np.load(state / GLOBAL_NPZ) as z:
        assert np.array_equal(z["item_emb.weight"], weights["item_emb.weight"])
    add_interaction(state, DeviceState(state).catalogue().item_ids[5], 9e9)
    assert deployed_device(state, cfg, None).data.test == 5  # a new interaction is the next test item


def test_a_device_with_too_little_history_fails_clearly(tmp_path):
    cat = tmp_path / "cat.csv"
    cat.write_text("item\na\nb\n")
    init_device(tmp_path / "d", user_id="me", catalogue_csv=cat)
    add_interaction(tmp_path / "d", "a", 1.0)
    with pytest.raises(DeviceStateError, match="1 interactions; a device needs >= 3"):
        deployed_device(tmp_path / "d", _run_cfg("x.csv"), None)
