"""Server-side payload validation: every malformed input gets a distinct reason."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tenseal as ts

from shared_models.crypto import (
    Aggregator, HEConfig, PayloadError, encrypt_update, load_ciphertexts, load_context,
    make_secret_context, public_context_bytes)
from shared_models.crypto import payload as wire

CFG = HEConfig(max_summands=2)
N_PARAMS = 3000
COUNT = CFG.n_ciphertexts(N_PARAMS)


@pytest.fixture(scope="module")
def keys() -> tuple[ts.Context, ts.Context, bytes]:
    ctx = make_secret_context(CFG, n_threads=1)
    pub = load_context(public_context_bytes(ctx), n_threads=1)
    payload = encrypt_update(ctx, np.linspace(-1, 1, N_PARAMS), weight=7, cfg=CFG)
    return ctx, pub, payload


def _reason(pub, data, *, count=COUNT, cfg=CFG) -> str:
    with pytest.raises(PayloadError) as info:
        load_ciphertexts(pub, data, expected_count=count, cfg=cfg)
    return info.value.reason


def test_valid_payload_loads(keys) -> None:
    update = load_ciphertexts(keys[1], keys[2], expected_count=COUNT, cfg=CFG)
    assert update.n_params == N_PARAMS and update.c0.shape == (COUNT, CFG.poly_modulus_degree)


def test_wrong_count(keys) -> None:
    assert _reason(keys[1], keys[2], count=COUNT + 1) == "count_mismatch"


def test_truncated_and_trailing(keys) -> None:
    assert _reason(keys[1], keys[2][:-1]) == "truncated"
    assert _reason(keys[1], keys[2][:20]) == "truncated"
    assert _reason(keys[1], keys[2] + b"\0") == "length_mismatch"


def test_random_bytes(keys) -> None:
    assert _reason(keys[1], os.urandom(len(keys[2]))) == "bad_magic"
    assert _reason(keys[1], b"") == "bad_magic"


def test_header_fields_tampered(keys) -> None:
    data = bytearray(keys[2])
    data[4] = 9  # version
    assert _reason(keys[1], bytes(data)) == "unsupported_version"
    data = bytearray(keys[2])
    data[5] = wire.KIND_AGGREGATE
    assert _reason(keys[1], bytes(data)) == "wrong_kind"
    header = wire.parse_header(keys[2])
    fake = wire.Header(header.kind, header.context_fp, header.config_fp, N_PARAMS + 3000,
                       header.n_ciphertexts, 1, header.coeff_bits).to_bytes()
    assert _reason(keys[1], fake + keys[2][wire.HEADER_BYTES:]) == "shape_mismatch"


def test_ciphertext_from_a_different_context(keys) -> None:
    other = make_secret_context(CFG, n_threads=1)
    foreign = encrypt_update(other, np.zeros(N_PARAMS), weight=1, cfg=CFG)
    assert _reason(keys[1], foreign) == "context_mismatch"


def test_config_mismatch(keys) -> None:
    cfg = HEConfig(max_summands=2, max_weight=512)
    assert _reason(keys[1], keys[2], cfg=cfg) == "config_mismatch"


def test_coefficient_out_of_range(keys) -> None:
    bits = wire.parse_header(keys[2]).coeff_bits
    data = bytearray(keys[2])
    start = wire.HEADER_BYTES + wire.SEED_BYTES
    data[start:start + bits] = b"\xff" * bits  # first 8 coefficients -> 2**bits - 1 >= q
    assert _reason(keys[1], bytes(data)) == "coefficient_out_of_range"


def test_duplicate_and_too_many_summands(keys) -> None:
    ctx, pub, payload = keys
    agg = Aggregator(pub, expected_count=COUNT, cfg=CFG)
    agg.add(payload)
    with pytest.raises(PayloadError) as info:
        agg.add(payload)
    assert info.value.reason == "duplicate"
    agg.add(encrypt_update(ctx, np.zeros(N_PARAMS), weight=1, cfg=CFG))
    with pytest.raises(PayloadError) as info:
        agg.add(encrypt_update(ctx, np.zeros(N_PARAMS), weight=1, cfg=CFG))
    assert info.value.reason == "too_many_summands"


def test_shape_mismatch_between_updates(keys) -> None:
    ctx, pub, payload = keys
    agg = Aggregator(pub, expected_count=COUNT, cfg=CFG)
    agg.add(payload)
    other = encrypt_update(ctx, np.zeros(N_PARAMS - 1), weight=1, cfg=CFG)
    with pytest.raises(PayloadError) as info:
        agg.add(other)
    assert info.value.reason == "shape_mismatch"


def test_seed_expansion_is_deterministic_and_reduced() -> None:
    q = (1 << 44) - 2 ** 20 + 1
    a = wire.expand_seed(b"\1" * 32, 2, 64, q)
    assert a.shape == (2, 64) and np.all(a < q)
    np.testing.assert_array_equal(a, wire.expand_seed(b"\1" * 32, 2, 64, q))
    assert not np.array_equal(a, wire.expand_seed(b"\2" * 32, 2, 64, q))
    small = wire.expand_seed(b"\3" * 32, 1, 4096, 2 ** 20 + 7)  # ~50% rejections
    assert np.all(small < 2 ** 20 + 7) and small.max() > 2 ** 19
