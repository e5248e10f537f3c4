"""Pure-numpy encodings: bit packing, quantisation, lane packing (no HE)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_models.crypto import EncodingRangeError, HEConfig
from shared_models.crypto.bitpack import pack_uint, packed_size, unpack_uint
from shared_models.crypto.packing import (
    decode_mean, dequantize_mean, encode_slots, pack_lanes, quantize, unpack_lanes)

PACKED = HEConfig(coeff_mod_bit_sizes=(60, 20), scale_bits=17, pack_bits=15, quant_bits=8,
                  max_summands=8, max_weight=16)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 64), count=st.integers(0, 300), seed=st.integers(0, 2 ** 32 - 1))
def test_bitpack_round_trip(bits: int, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2 ** min(bits, 63), size=count, dtype=np.uint64)
    if bits == 64 and count:
        values[0] = np.uint64(2 ** 64 - 1)
    data = pack_uint(values, bits)
    assert len(data) == packed_size(count, bits)
    np.testing.assert_array_equal(unpack_uint(data, bits, count), values)


def test_bitpack_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        pack_uint(np.array([8], dtype=np.uint64), 3)
    data = pack_uint(np.array([1, 2, 3], dtype=np.uint64), 5)  # 15 bits -> 1 pad bit
    with pytest.raises(ValueError, match="expected"):
        unpack_uint(data[:-1], 5, 3)
    with pytest.raises(ValueError, match="padding"):
        unpack_uint(data[:-1] + bytes([data[-1] | 0x80]), 5, 3)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 500), bits=st.integers(1, 20), seed=st.integers(0, 2 ** 32 - 1))
def test_quantize_error_is_half_a_step(n: int, bits: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3.0, 3.0, n)
    codes = quantize(x, clip_range=3.0, quant_bits=bits)
    assert codes.min(initial=0) >= 0 and codes.max(initial=0) <= 2 ** bits - 1
    back = dequantize_mean(codes, 1.0, clip_range=3.0, quant_bits=bits)
    step = 6.0 / (2 ** bits - 1)
    assert np.all(np.abs(back - x) <= step / 2 + 1e-12)


def test_stochastic_rounding_is_unbiased() -> None:
    x = np.full(200_000, 0.3337)
    codes = quantize(x, clip_range=1.0, quant_bits=4, rounding="stochastic",
                     rng=np.random.default_rng(0))
    mean = dequantize_mean(codes, 1.0, clip_range=1.0, quant_bits=4).mean()
    assert abs(mean - 0.3337) < 2e-3


@settings(max_examples=40, deadline=None)
@given(count=st.integers(0, 400), seed=st.integers(0, 2 ** 32 - 1))
def test_lane_packing_sum_of_max_summands_never_overflows(count: int, seed: int) -> None:
    """max_summands updates with the largest weight and extreme codes: lanes stay exact."""
    rng = np.random.default_rng(seed)
    k, bits, top = PACKED.values_per_slot, PACKED.pack_bits, 2 ** PACKED.quant_bits - 1
    updates = [rng.choice([0, top], size=count) * PACKED.max_weight
               for _ in range(PACKED.max_summands)]
    slot_sum = sum(pack_lanes(u, pack_bits=bits, per_slot=k) for u in updates)
    assert np.all(slot_sum < 2.0 ** 53)
    lanes = unpack_lanes(slot_sum, pack_bits=bits, per_slot=k, count=count)
    np.testing.assert_array_equal(lanes, np.sum(updates, axis=0))


def test_encode_decode_mean_without_he() -> None:
    rng = np.random.default_rng(1)
    xs = [rng.uniform(-PACKED.clip_range, PACKED.clip_range, 11) for _ in range(3)]
    ws = [3, 16, 1]
    slots = sum(encode_slots(x, w, PACKED) for x, w in zip(xs, ws))
    mean, total = decode_mean(slots, 11, PACKED)
    expected = sum(w * x for x, w in zip(xs, ws)) / sum(ws)
    step = 2 * PACKED.clip_range / (2 ** PACKED.quant_bits - 1)
    assert total == 20 and np.all(np.abs(mean - expected) <= step / 2)


@pytest.mark.parametrize("cfg", [HEConfig(), PACKED])
def test_out_of_range_inputs_raise(cfg: HEConfig) -> None:
    ok = np.zeros(4)
    with pytest.raises(EncodingRangeError, match="clip_range") as err:
        encode_slots(np.array([0.0, cfg.clip_range * 1.01]), 1, cfg)
    # the message goes to the server in an error reply: neither the index nor the value is in it
    assert "[1]" not in str(err.value) and f"{cfg.clip_range * 1.01:.6g}" not in str(err.value)
    with pytest.raises(EncodingRangeError, match="NaN"):
        encode_slots(np.array([np.nan]), 1, cfg)
    for bad in (0, -1, cfg.max_weight + 1, float("nan")):
        with pytest.raises(EncodingRangeError, match="weight"):
            encode_slots(ok, bad, cfg)
    assert isinstance(EncodingRangeError("x"), ValueError)


def test_packed_mode_needs_integer_weight() -> None:
    with pytest.raises(EncodingRangeError, match="integer"):
        encode_slots(np.zeros(3), 2.5, PACKED)
    encode_slots(np.zeros(3), 2.5, HEConfig())  # float mode accepts fractional weights


def test_unpack_detects_noise_overflow() -> None:
    with pytest.raises(EncodingRangeError):
        unpack_lanes(np.array([-3.0]), pack_bits=15, per_slot=2, count=2)
