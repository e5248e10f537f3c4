"""Slot encodings of a weighted update (pure numpy, no HE).

Float mode (``cfg.pack_bits == 0``)
    slots = ``[w*x_0, ..., w*x_{n-1}, w]``; CKKS carries them as fixed point.

Packed mode (BatchCrypt-style, ``cfg.pack_bits > 0``)
    1. quantise ``x`` in ``[-c, c]`` to codes ``u = round((x + c) / step)`` in
       ``[0, 2**quant_bits - 1]`` with ``step = 2c / (2**quant_bits - 1)``
       (nearest or stochastic rounding -- stochastic is unbiased);
    2. multiply the codes by the *integer* weight ``w`` (exact);
    3. pack ``k = cfg.values_per_slot`` weighted codes per slot,
       ``slot = sum_j u_j * 2**(j*pack_bits)``; the last slot is ``w``.
    Each lane has ``pack_bits >= bitlen(max_summands*max_weight*(2**quant_bits-1))``
    bits, so the sum of ``max_summands`` updates never carries into the next lane.
    After decryption: ``mean_x = (sum_d w_d u_d) / (sum_d w_d) * step - c``.

Out-of-range input is never clipped silently: :class:`EncodingRangeError`.
"""

from __future__ import annotations

import numpy as np

from .he_config import EncodingRangeError, HEConfig


def check_weight(weight: float, cfg: HEConfig) -> float:
    """Validate a device weight (number of examples) against the encoding."""
    if isinstance(weight, bool) or not np.isscalar(weight) or not np.isfinite(weight):
        raise EncodingRangeError(f"weight must be a finite number, got {weight!r}")
    if not 0 < weight <= cfg.max_weight:
        raise EncodingRangeError(f"weight {weight} outside (0, max_weight={cfg.max_weight}]")
    if cfg.packed and float(weight) != int(weight):
        raise EncodingRangeError(f"packed mode needs an integer weight, got {weight}")
    return float(weight)


def check_values(x: np.ndarray, cfg: HEConfig) -> np.ndarray:
    """Return ``x`` as float64 1-D, raising if any entry is non-finite or > clip_range."""
    v = np.asarray(x, dtype=np.float64).ravel()
    if v.size and not np.isfinite(v).all():
        raise EncodingRangeError("update contains NaN or inf")
    if v.size and np.abs(v).max() > cfg.clip_range:
        # neither the coordinate nor its value: the message reaches the server in the device's error reply, and
        # under DP both depend on the device's data (an item index of the popularity prior, for one)
        raise EncodingRangeError(f"an entry of {v.size} exceeds clip_range={cfg.clip_range} (which one and its "
                                 "value stay on the device)")
    return v


def quantize(x: np.ndarray, *, clip_range: float, quant_bits: int,
             rounding: str = "nearest", rng: np.random.Generator | None = None) -> np.ndarray:
    """Map ``x`` in ``[-clip_range, clip_range]`` to int64 codes in ``[0, 2**quant_bits-1]``."""
    levels = 2 ** quant_bits - 1
    v = np.asarray(x, dtype=np.float64)
    if v.size and (not np.isfinite(v).all() or np.abs(v).max() > clip_range):
        raise EncodingRangeError(f"values must be finite and within +-{clip_range}")
    t = (v + clip_range) * (levels / (2.0 * clip_range))
    if rounding == "nearest":
        codes = np.rint(t)
    elif rounding == "stochastic":
        gen = rng if rng is not None else np.random.default_rng()
        codes = np.floor(t + gen.random(t.shape))
    else:
        raise ValueError(f"unknown rounding {rounding!r}")
    return np.clip(codes, 0, levels).astype(np.int64)


def dequantize_mean(code_sums: np.ndarray, total_weight: float, *, clip_range: float,
                    quant_bits: int) -> np.ndarray:
    """Weighted mean of parameters from summed weighted codes."""
    step = 2.0 * clip_range / (2 ** quant_bits - 1)
    return np.asarray(code_sums, dtype=np.float64) / total_weight * step - clip_range


def pack_lanes(values: np.ndarray, *, pack_bits: int, per_slot: int) -> np.ndarray:
    """Pack non-negative ints (< 2**pack_bits) ``per_slot`` at a time into float64 slots."""
    v = np.asarray(values, dtype=np.int64).ravel()
    if per_slot * pack_bits > 53:
        raise ValueError("per_slot*pack_bits must be <= 53 to be exact in float64")
    if v.size and (v.min() < 0 or int(v.max()) >> pack_bits):
        raise EncodingRangeError(f"lane value outside [0, 2**{pack_bits})")
    n_slots = -(-v.size // per_slot)
    lanes = np.zeros(n_slots * per_slot, dtype=np.int64)
    lanes[: v.size] = v
    lanes = lanes.reshape(n_slots, per_slot)
    shifts = np.arange(per_slot, dtype=np.int64) * pack_bits
    return (lanes << shifts).sum(axis=1).astype(np.float64)


def unpack_lanes(slots: np.ndarray, *, pack_bits: int, per_slot: int, count: int) -> np.ndarray:
    """Round decrypted slots to integers and split them into ``count`` lane values."""
    ints = np.rint(np.asarray(slots, dtype=np.float64))
    if ints.size and (ints.min() < 0 or ints.max() >= 2.0 ** (per_slot * pack_bits)):
        raise EncodingRangeError("decoded slot outside the packed range (noise or overflow)")
    ints = ints.astype(np.int64)
    shifts = np.arange(per_slot, dtype=np.int64) * pack_bits
    lanes = (ints[:, None] >> shifts) & ((1 << pack_bits) - 1)
    if lanes.size < count:
        raise ValueError(f"need {count} lanes, slots hold only {lanes.size}")
    return lanes.ravel()[:count]


def encode_slots(x: np.ndarray, weight: float, cfg: HEConfig,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Device side: slots (float64) carrying ``weight * x`` and ``weight``."""
    w = check_weight(weight, cfg)
    v = check_values(x, cfg)
    if not cfg.packed:
        return np.concatenate([v * w, [w]])
    codes = quantize(v, clip_range=cfg.clip_range, quant_bits=cfg.quant_bits,
                     rounding=cfg.rounding, rng=rng) * int(w)
    packed = pack_lanes(codes, pack_bits=cfg.pack_bits, per_slot=cfg.values_per_slot)
    return np.concatenate([packed, [w]])


def decode_mean(slots: np.ndarray, n_params: int, cfg: HEConfig) -> tuple[np.ndarray, float]:
    """Decrypted slots of a sum -> (weighted mean vector, total weight)."""
    n_data = cfg.n_slots(n_params) - 1
    total = float(slots[n_data])
    if cfg.packed:
        total = float(np.rint(total))
    if not total > 0:
        raise EncodingRangeError(f"decrypted total weight {total} is not positive")
    if not cfg.packed:
        return np.asarray(slots[:n_params], dtype=np.float64) / total, total
    sums = unpack_lanes(slots[:n_data], pack_bits=cfg.pack_bits,
                        per_slot=cfg.values_per_slot, count=n_params)
    mean = dequantize_mean(sums, total, clip_range=cfg.clip_range, quant_bits=cfg.quant_bits)
    return mean, total
