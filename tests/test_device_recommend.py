"""On-device recommendation: unseen top-K, immediate reaction to new interactions, explanations, fallbacks,
and the three sources of global weights (plaintext, decrypted CKKS sum, initial model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from client.recommend import Recommender, _AttentionProbe, fast_inference, global_shared
from client.runtime import GLOBAL_CKKS, GLOBAL_NPZ, DeviceState, DeviceStateError, add_interaction, init_device
from shared_models.train.sequences import left_pad
from tests.test_device_helpers import make_device, train_central


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rec")
    state = make_device(tmp, user="u2")
    model = train_central(state, epochs=10)
    return state, model


def test_top_k_excludes_seen_items_and_matches_the_pytorch_model(trained):
    state, model = trained
    with Recommender(state) as rec:
        res = rec.recommend(5)
        history = rec.history()
    assert res.source == GLOBAL_NPZ and len(res.items) == 5
    cat = DeviceState(state).catalogue()
    seen = {cat.item_ids[i] for i in history}
    assert not seen & {r.item for r in res.items}
    x = torch.from_numpy(left_pad(history, model.cfg.max_len)).unsqueeze(0)
    scores = model.full_sort_predict({"inputs": x})[0]
    scores[torch.from_numpy(np.append(history, 0))] = -torch.inf
    assert [r.item for r in res.items] == [cat.item_ids[i] for i in scores.topk(5).indices.tolist()]


def test_a_new_interaction_changes_the_next_recommendation_at_once(trained):
    state, _ = trained
    with Recommender(state) as rec:
        before = rec.recommend(10)
        top = before.items[0].item
        add_interaction(state, top, 4e9)  # another process would do the same through the store
        after = rec.recommend(10)
    assert top not in [r.item for r in after.items]
    assert [r.item for r in before.items] != [r.item for r in after.items]


def test_explanation_is_consistent_with_the_model(trained):
    state, _ = trained
    with Recommender(state) as rec:
        res = rec.recommend(3, explain=True, top_reasons=50)
        history, model = rec.history(), rec.model
    e = res.explanation
    assert 0.0 <= e.long_share <= 1.0 and e.long_share + e.short_share == pytest.approx(1.0)
    assert sum(w for *_, w in e.long_items) == pytest.approx(1.0, abs=1e-5)  # all window items
    assert sum(w for *_, w in e.short_items) == pytest.approx(1.0, abs=1e-5)
    window_items = {DeviceState(state).catalogue().item_ids[i] for i in history[-model.cfg.short_len:]}
    assert {it for it, *_ in e.short_items} <= window_items
    # the short-term weights reproduce the short-term user vector from the GRU states
    x = torch.from_numpy(left_pad(history, model.cfg.max_len)).unsqueeze(0)
    probe, states = _AttentionProbe(model), {}
    hook = model.short.gru.register_forward_hook(lambda m, a, out: states.update(s=out[0]))  # returns None
    with torch.no_grad():
        enc = model.encode(x)
    probe.remove(), hook.remove()
    allowed = x[0] != 0
    w = probe.short_weights(allowed)
    assert torch.allclose(model.short.ln(w @ states["s"][0]), enc["short"][0, -1], atol=1e-5)
    # and the long-term weights reproduce the last layer's attention output (per head) at the last position
    blk, d = model.long.blocks[-1], model.cfg.hidden
    v = probe.out["qkv"][0, :, 2 * d:].view(-1, model.cfg.num_heads, d // model.cfg.num_heads)
    per_head = probe.long_weights(allowed, per_head=True)
    y = torch.einsum("ht,thc->hc", per_head, v).reshape(-1)
    attn_out = {}
    h2 = blk.attn.register_forward_hook(lambda m, a, out: attn_out.update(o=out))
    with torch.no_grad():
        model.encode(x)
    h2.remove()
    assert torch.allclose(blk.attn.proj(y), attn_out["o"][0, -1], atol=1e-5)


def test_fast_inference_gru_matches_the_dp_gru(trained):
    _, model = trained
    x = torch.randint(1, model.num_items, (3, model.cfg.max_len))
    with torch.no_grad():
        assert torch.allclose(model.eval().encode(x)["user"], fast_inference(model).encode(x)["user"], atol=1e-5)


def test_empty_history_falls_back_to_popularity(tmp_path):
    state = make_device(tmp_path, history=False)
    with Recommender(state) as rec:
        res = rec.recommend(3, explain=True)
    pop = np.array(DeviceState(state).catalogue().popularity)
    assert res.source == "popularity" and "empty history" in res.explanation.note
    assert [float(r.score) for r in res.items] == sorted(pop, reverse=True)[:3]


def test_empty_history_without_popularity_is_a_clear_error(tmp_path):
    cat = tmp_path / "cat.csv"
    cat.write_text("item\na\nb\n")
    init_device(tmp_path / "d", user_id="me", catalogue_csv=cat)
    with Recommender(tmp_path / "d") as rec, pytest.raises(DeviceStateError, match="history is empty"):
        rec.recommend(2)


def test_unknown_state_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DeviceStateError, match="not a device state directory"):
        Recommender(tmp_path / "nope")


def test_a_device_with_a_spent_budget_still_recommends(tmp_path):
    state = make_device(tmp_path)
    cfg = DeviceState(state).config()
    cfg.privacy.target_epsilon = 0.5
    ledger = DeviceState(state).store().ledger(cfg.privacy, delta=1e-5)
    ledger.record(round_id=1, noise_multiplier=0.5, sample_rate=1.0, num_steps=50)
    assert ledger.epsilon() > 0.5
    with Recommender(state) as rec:
        assert len(rec.recommend(5).items) == 5


def test_initial_model_when_no_global_weights_and_decrypted_ckks_sum(tmp_path):
    from client.runtime import install_device_keys
    from client.secure import device_keys, encode_update
    from shared_models.crypto import init_keys, load_server_keys, sum_ciphertexts, sum_released

    state = make_device(tmp_path, user="u1")
    dev = DeviceState(state)
    cfg, cat = dev.config(), dev.catalogue()
    init, source = global_shared(dev, cfg, cat.num_items, None)
    assert source == "initial"
    keys = init_keys(tmp_path / "keys", device_ids=["u0", "u1"], he=cfg.he.to_he_config())
    install_device_keys(state, keys.root, "u1")
    assert not (state / "keys" / "clients" / "u0").exists()  # only this device's secrets travel
    target = {k: (v + 0.25).astype(np.float32) for k, v in init.items()}
    payload, _, _ = encode_update(target, weight=3, keys=device_keys(str(state / "keys"), "u1"), round_id=1)
    server = load_server_keys(keys.root, n_threads=1)
    n = sum(v.size for v in init.values())
    blob = sum_ciphertexts(server.context, [payload], expected_count=server.he.n_ciphertexts(n), cfg=server.he)
    (state / GLOBAL_CKKS).write_bytes(blob)
    weights, source = global_shared(dev, cfg, cat.num_items, None)
    assert source == GLOBAL_CKKS
    for k in init:
        assert np.allclose(weights[k], target[k], atol=1e-2)
    with Recommender(state) as rec:
        assert rec.source == GLOBAL_CKKS and len(rec.recommend(3).items) == 3
    # federated.server_average: the shipped envelope of two released sums decodes to their mean
    lower = {k: (v - 0.25).astype(np.float32) for k, v in init.items()}
    payload2, _, _ = encode_update(lower, weight=3, keys=device_keys(str(state / "keys"), "u1"), round_id=2)
    blob2 = sum_ciphertexts(server.context, [payload2], expected_count=server.he.n_ciphertexts(n), cfg=server.he)
    (state / GLOBAL_CKKS).write_bytes(sum_released(server.context, [blob, blob2], cfg=server.he))
    averaged, _ = global_shared(dev, cfg, cat.num_items, None)
    assert all(np.allclose(averaged[k], init[k], atol=1e-2) for k in init)
    (state / "keys" / "manifest.json").unlink()
    with pytest.raises(DeviceStateError, match="needs this device's keys"):
        Recommender(state)
    assert not (state / GLOBAL_NPZ).exists()
