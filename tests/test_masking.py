"""Pairwise masks on CKKS c0 (shared_models/crypto/masking.py, seed_sharing.py, mask_round.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as sealapi
from scipy import stats

from shared_models.crypto import (Aggregator, HEConfig, decrypt_average, encrypt_update, load_context,
                                  make_secret_context, public_context_bytes)
from shared_models.crypto import masking
from shared_models.crypto import payload as wire
from shared_models.crypto import seed_sharing as sharing
from shared_models.crypto.aggregate import load_ciphertexts
from shared_models.crypto.context import context_params
from shared_models.crypto.mask_round import MaskDevice, residual_from_shares, unmask_aggregate
from shared_models.crypto import seal_wire
from shared_models.crypto.seal_wire import plaintext_coeffs, vector_proto_from_polys

CFG = HEConfig()
N_PARAMS = 5000
N_CT = CFG.n_ciphertexts(N_PARAMS)
CONTEXT = b"run-x/round-3"
SHARES, THRESHOLD = 5, 3


@pytest.fixture(scope="module")
def keys():
    ctx = make_secret_context(CFG, n_threads=1)
    return ctx, load_context(public_context_bytes(ctx), n_threads=1)


def updates(n: int) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(7)
    return [rng.normal(0, 0.05, N_PARAMS) for _ in range(n)], [int(w) for w in rng.integers(10, 300, n)]


def run_round(ctx, pub, n_devices, *, drop_before_upload=(), silent_at_unmask=()):
    """Stages 0-3 with every device honest; returns (unmasked aggregate, masked payloads, devices, masks)."""
    params = context_params(pub)
    ids = list(range(100, 100 + n_devices))
    graph = sharing.neighbour_graph(ids, num_shares=SHARES, graph_seed=CONTEXT)
    devices = {u: MaskDevice.start(u) for u in ids}
    public = {u: d.public for u, d in devices.items()}
    for u, dev in devices.items():  # stage 1: every device shares, the server forwards
        tokens = dev.share_tokens({v: public[v] for v in graph[u]}, threshold=THRESHOLD, context=CONTEXT)
        for v, token in tokens.items():
            devices[v].receive_tokens({u: token}, public, context=CONTEXT)
    vectors, weights = updates(n_devices)
    agg = Aggregator(pub, expected_count=N_CT, cfg=CFG)
    payloads, masks = {}, {}
    for k, u in enumerate(ids):  # stage 2
        masks[u] = devices[u].upload_mask({v: public[v] for v in graph[u]}, context=CONTEXT, n_ciphertexts=N_CT,
                                          degree=params.degree, modulus=params.modulus)
        if u in drop_before_upload:
            continue
        payloads[u] = encrypt_update(ctx, vectors[k], weight=weights[k], cfg=CFG, c0_mask=masks[u])
        agg.add(payloads[u])
    in_sum, dropped = set(payloads), set(drop_before_upload)
    replies = {v: devices[v].unmask_reply(in_sum=in_sum & graph[v], dropped=dropped & graph[v])
               for v in ids if v in in_sum and v not in silent_at_unmask}
    residual = residual_from_shares(replies, graph=graph, keys=public, in_sum=in_sum, dropped=dropped,
                                    threshold=THRESHOLD, context=CONTEXT, n_ciphertexts=N_CT,
                                    degree=params.degree, modulus=params.modulus)
    summed = unmask_aggregate(pub, agg.to_bytes(), residual, cfg=CFG)
    return summed, payloads, devices, masks, graph, (vectors, weights, ids)


def reference(vectors, weights, ids, members):
    w = np.array([weights[k] for k, u in enumerate(ids) if u in members], dtype=float)
    x = np.array([vectors[k] for k, u in enumerate(ids) if u in members])
    return (w[:, None] * x).sum(0) / w.sum(), w.sum()


def unmasked_sum_bytes(pub, payloads, masks):
    """The aggregate of the same updates with their masks taken off one by one (what no mask would give)."""
    params = context_params(pub)
    agg = Aggregator(pub, expected_count=N_CT, cfg=CFG)
    for u, blob in payloads.items():
        up = load_ciphertexts(pub, blob, expected_count=N_CT, cfg=CFG)
        c0 = masking.remove_mask(up.c0, masks[u], modulus=params.modulus)
        agg.add(up.__class__(up.n_params, up.n_ciphertexts, up.seed, c0))
    return agg.to_bytes()


def raw_decrypt(ctx, c0: np.ndarray, seed: bytes) -> np.ndarray:
    """Coefficients of c0 + a*s (first ciphertext) as fractions of q: what a key holder reads from an update."""
    params = context_params(ctx)
    a = wire.expand_seed(seed, 1, params.degree, params.modulus)
    scale = 2.0 ** CFG.scale_bits
    proto = vector_proto_from_polys(np.stack([c0[:1], a], axis=1), n_slots=CFG.slots_per_ciphertext,
                                    parms_id=params.parms_id, scale=scale)
    plain = sealapi.Plaintext()
    params.decryptor.decrypt(ts.ckks_vector_from(ctx, proto).ciphertext()[0], plain)  # NTT form
    ntt = plaintext_coeffs(plain, params.degree)
    proto = vector_proto_from_polys(np.stack([ntt[None], np.ones_like(ntt)[None]], axis=1),
                                    n_slots=CFG.slots_per_ciphertext, parms_id=params.parms_id, scale=scale)
    cipher = ts.ckks_vector_from(ctx, proto).ciphertext()[0]  # (p, 1): c1 only keeps it non-transparent
    sealapi.Evaluator(ctx.seal_context().data).transform_from_ntt_inplace(cipher)
    with tempfile.TemporaryDirectory() as tmp:  # SEAL binds no array reader for ciphertexts: parse save()
        path = Path(tmp) / "ct.bin"
        cipher.save(str(path))
        raw = path.read_bytes()
    mode = seal_wire._HEADER.unpack_from(raw)[4]
    body = seal_wire._decompress(mode, raw[seal_wire._HEADER.size:])
    start = seal_wire._CT_MEMBERS.size + seal_wire._HEADER.size + 8  # members, DynArray header + count
    coeffs = np.frombuffer(body, dtype="<u8", count=params.degree, offset=start)
    return coeffs.astype(np.float64) / params.modulus


def test_pair_terms_cancel_exactly_and_only_the_self_masks_remain(keys):
    _, pub = keys
    params = context_params(pub)
    ids = [3, 8, 11, 20, 42]
    mk = {u: MaskDevice.start(u) for u in ids}
    pubs = {u: d.public for u, d in mk.items()}
    shape = dict(n_ciphertexts=2, degree=params.degree, modulus=params.modulus)
    total = masking._ModAccumulator((2, params.degree), params.modulus)
    for u in ids:
        total.add(mk[u].upload_mask(pubs, context=CONTEXT, **shape), 1)
    expected = masking.residual_mask(survivor_self_seeds={u: mk[u].self_seed for u in ids}, dropped_pair_seeds=(),
                                     **shape)
    assert np.array_equal(total.result(), expected)
    assert not np.array_equal(mk[3].upload_mask(pubs, context=CONTEXT, **shape),
                              mk[3].upload_mask(pubs, context=b"other round", **shape))


def _assert_exact_sum(ctx, pub, summed, payloads, masks, vectors, weights, ids, contributors) -> None:
    """The masked sum equals the unmasked one bit for bit and decrypts to the contributors' weighted mean."""
    assert summed == unmasked_sum_bytes(pub, payloads, masks)
    mean, total = decrypt_average(ctx, summed, cfg=CFG)
    ref, ref_total = reference(vectors, weights, ids, contributors)
    assert total == pytest.approx(ref_total, abs=1e-3)
    assert np.linalg.norm(mean - ref) / np.linalg.norm(ref) < 1e-4


def test_masked_round_decrypts_to_the_average_and_equals_the_unmasked_sum_bit_for_bit(keys):
    ctx, pub = keys
    summed, payloads, _, masks, _, (vectors, weights, ids) = run_round(ctx, pub, 8)
    _assert_exact_sum(ctx, pub, summed, payloads, masks, vectors, weights, ids, set(ids))


def test_a_key_holder_decrypting_one_masked_update_reads_uniform_noise(keys):
    ctx, pub = keys
    _, payloads, _, masks, _, _ = run_round(ctx, pub, 6)
    u = min(payloads)
    up = load_ciphertexts(pub, payloads[u], expected_count=N_CT, cfg=CFG)
    masked = raw_decrypt(ctx, up.c0, up.seed)
    clear = raw_decrypt(ctx, masking.remove_mask(up.c0, masks[u], modulus=context_params(pub).modulus), up.seed)
    assert stats.kstest(masked, "uniform").pvalue > 1e-3
    counts = np.histogram(masked, bins=32, range=(0, 1))[0]
    assert stats.chisquare(counts).pvalue > 1e-3
    assert stats.kstest(clear, "uniform").pvalue < 1e-12  # without the mask: m + e, near 0 or q
    with pytest.raises(ValueError):
        agg = Aggregator(pub, expected_count=N_CT, cfg=CFG)
        agg.add(payloads[u])
        decrypt_average(ctx, agg.to_bytes(), cfg=CFG)


def test_server_with_fewer_than_t_colluders_still_sees_uniform_noise(keys):
    """The server holds u's masked c0, u's self seed (u is in the sum) and every share of u held by t-1
    colluding neighbours, who also hold the CKKS key and their own pair seeds with u."""
    ctx, pub = keys
    params = context_params(pub)
    _, payloads, devices, _, graph, _ = run_round(ctx, pub, 10)
    u = min(payloads)
    colluders = sorted(graph[u] - {u})[:THRESHOLD - 1]
    key_shares = [devices[c].held[u].key_share for c in colluders]
    with pytest.raises(ValueError):
        sharing.combine(key_shares, threshold=THRESHOLD)
    guessed = b"".join(sharing.Shamir.combine([(int.from_bytes(s[:2], "little"), s[2 + k:18 + k])
                                                for s in key_shares], ssss=False) for k in (0, 16))
    assert guessed != sharing.raw_private(devices[u].mask_key)  # t-1 points interpolate to another secret
    known = {c: masking.pair_seed(devices[c].mask_key, devices[u].mask_key.public_key(), context=CONTEXT,
                                  own_id=c, peer_id=u) for c in colluders}
    partial = masking.residual_mask(survivor_self_seeds={u: devices[u].self_seed},
                                    dropped_pair_seeds=[(u, c, s) for c, s in known.items()],
                                    n_ciphertexts=N_CT, degree=params.degree, modulus=params.modulus)
    up = load_ciphertexts(pub, payloads[u], expected_count=N_CT, cfg=CFG)
    view = raw_decrypt(ctx, masking.remove_mask(up.c0, partial, modulus=params.modulus), up.seed)
    assert stats.kstest(view, "uniform").pvalue > 1e-3


def test_t_minus_one_shares_are_distributed_alike_for_any_secret():
    def share_bytes(secret):
        out = []
        for _ in range(150):
            shares = sharing.split_secret(secret, threshold=3, n_shares=5)
            out += [shares[h][2:] for h in (0, 1)]
        return np.frombuffer(b"".join(out), dtype=np.uint8)
    a, b = share_bytes(bytes(32)), share_bytes(bytes([255]) * 32)
    assert stats.chisquare(np.bincount(a, minlength=256)).pvalue > 1e-4
    assert stats.chisquare(np.bincount(b, minlength=256)).pvalue > 1e-4
    assert stats.ks_2samp(a, b).pvalue > 1e-4


def test_threshold_shares_recover_the_secret_from_any_subset():
    secret = bytes(range(32))
    shares = sharing.split_secret(secret, threshold=4, n_shares=9)
    rng = np.random.default_rng(1)
    for _ in range(5):
        pick = [shares[i] for i in rng.choice(9, 4, replace=False)]
        assert sharing.combine(pick, threshold=4) == secret
    with pytest.raises(ValueError):
        sharing.combine(shares[:3] + shares[:1], threshold=4)  # a duplicate does not count


def test_thirty_percent_dropped_before_upload_leaves_the_survivors_exact_sum(keys):
    ctx, pub = keys
    dropped = {101, 104, 108}
    summed, payloads, _, masks, _, (vectors, weights, ids) = run_round(ctx, pub, 10, drop_before_upload=dropped)
    assert set(payloads).isdisjoint(dropped) and len(payloads) == 7
    _assert_exact_sum(ctx, pub, summed, payloads, masks, vectors, weights, ids, set(payloads))


def test_a_device_silent_at_unmasking_stays_in_the_sum(keys):
    ctx, pub = keys
    summed, payloads, _, masks, _, (vectors, weights, ids) = run_round(ctx, pub, 10, drop_before_upload={102},
                                                                       silent_at_unmask={105, 107})
    assert summed == unmasked_sum_bytes(pub, payloads, masks)
    mean, _ = decrypt_average(ctx, summed, cfg=CFG)
    ref, _ = reference(vectors, weights, ids, set(payloads))
    assert np.linalg.norm(mean - ref) / np.linalg.norm(ref) < 1e-4


def test_a_holder_never_reveals_both_shares_and_shares_open_only_for_their_pair():
    devices = {u: MaskDevice.start(u) for u in (1, 2, 3)}
    public = {u: d.public for u, d in devices.items()}
    tokens = devices[1].share_tokens(public, threshold=2, context=CONTEXT)
    devices[2].receive_tokens({1: tokens[2]}, public, context=CONTEXT)
    with pytest.raises(ValueError, match="both"):
        devices[2].unmask_reply(in_sum={1}, dropped={1})
    with pytest.raises(ValueError):
        devices[3].receive_tokens({1: tokens[2]}, public, context=CONTEXT)
    with pytest.raises(ValueError):
        devices[2].receive_tokens({1: tokens[2]}, public, context=b"another round")


def test_too_few_replies_are_refused(keys):
    ctx, pub = keys
    with pytest.raises(ValueError, match="threshold"):
        run_round(ctx, pub, 6, silent_at_unmask={100, 101, 102, 103, 104, 105})


def test_shares_that_rebuild_another_key_than_the_advertised_one_are_refused():
    ids = [1, 2, 3, 4, 5]
    graph = sharing.neighbour_graph(ids, num_shares=5, graph_seed=CONTEXT)
    devices = {u: MaskDevice.start(u) for u in ids}
    public = {u: d.public for u, d in devices.items()}
    for u in ids:
        for v, token in devices[u].share_tokens(public, threshold=3, context=CONTEXT).items():
            devices[v].receive_tokens({u: token}, public, context=CONTEXT)
    in_sum, dropped = {1, 2, 3, 4}, {5}
    replies = {v: devices[v].unmask_reply(in_sum=in_sum, dropped=dropped) for v in in_sum}
    shape = dict(n_ciphertexts=1, degree=16, modulus=97)
    residual_from_shares(replies, graph=graph, keys=public, in_sum=in_sum, dropped=dropped, threshold=3,
                         context=CONTEXT, **shape)
    forged = {**public, 5: MaskDevice.start(5).public}
    with pytest.raises(ValueError, match="advertised"):
        residual_from_shares(replies, graph=graph, keys=forged, in_sum=in_sum, dropped=dropped, threshold=3,
                             context=CONTEXT, **shape)


def test_neighbour_graph_is_symmetric_with_num_shares_each():
    graph = sharing.neighbour_graph(list(range(100)), num_shares=15, graph_seed=b"r1")
    assert all(len(n) == 15 and u in n for u, n in graph.items())
    assert all(u in graph[v] for u, n in graph.items() for v in n)
    assert graph != sharing.neighbour_graph(list(range(100)), num_shares=15, graph_seed=b"r2")


def test_uniform_mod_fast_path_matches_rejection_sampling():
    q = (1 << 40) + 15  # half of the 41-bit words are rejected: exercises the slow path
    for modulus in (q, 17592186028033):
        got = wire.uniform_mod(bytes(range(32)), 3, 64, modulus)
        stream = wire.Cipher(wire.algorithms.AES(bytes(range(32))), wire.modes.CTR(bytes(16))).encryptor()
        words = np.frombuffer(stream.update(bytes(8 * 10_000)), dtype="<u8") & np.uint64((1 << modulus.bit_length()) - 1)
        assert np.array_equal(got.ravel(), words[words < np.uint64(modulus)][:192])
