"""Fixed-width bit packing of unsigned integers (pure numpy).

Ciphertext coefficients live in ``[0, q)`` with ``q`` a ``P``-bit prime; SEAL
stores them in 64-bit words and its zstd compression recovers only part of the
unused high bits.  We store exactly ``P`` bits per coefficient: value ``i``
occupies bits ``[i*P, (i+1)*P)`` of a little-endian bit stream, padded with zero
bits to a whole byte.  Work is vectorised over blocks of 64 values (a block is
exactly ``P`` 64-bit words), so packing costs ~2*64 numpy operations per call.
"""

from __future__ import annotations

import numpy as np

_LANES = 64


def packed_size(count: int, bits: int) -> int:
    """Number of bytes used by ``count`` values of ``bits`` bits."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in [1, 64], got {bits}")


def pack_uint(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers ``< 2**bits`` into ``packed_size(len, bits)`` bytes."""
    _check_bits(bits)
    v = np.ascontiguousarray(values, dtype=np.uint64).ravel()
    if bits < 64 and v.size and int(v.max()) >> bits:
        raise ValueError(f"value does not fit in {bits} bits")
    n_blocks = -(-v.size // _LANES)
    lanes = np.zeros((n_blocks * _LANES,), dtype=np.uint64)
    lanes[: v.size] = v
    lanes = np.ascontiguousarray(lanes.reshape(n_blocks, _LANES).T)  # (64, n_blocks)
    words = np.zeros((bits, n_blocks), dtype=np.uint64)
    for lane in range(_LANES):
        word, shift = divmod(lane * bits, 64)
        words[word] |= lanes[lane] << np.uint64(shift)
        if shift + bits > 64:
            words[word + 1] |= lanes[lane] >> np.uint64(64 - shift)
    stream = np.ascontiguousarray(words.T).astype("<u8", copy=False).tobytes()
    return stream[: packed_size(v.size, bits)]


def unpack_uint(data: bytes | memoryview, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`; raises ValueError on a wrong length or
    non-zero padding bits (so every value list has exactly one encoding)."""
    _check_bits(bits)
    expected = packed_size(count, bits)
    if len(data) != expected:
        raise ValueError(f"expected {expected} bytes for {count} x {bits}-bit values, got {len(data)}")
    pad_bits = expected * 8 - count * bits
    if pad_bits and data[-1] >> (8 - pad_bits):
        raise ValueError("non-zero padding bits")
    n_blocks = -(-count // _LANES)
    raw = np.zeros(n_blocks * bits * 8, dtype=np.uint8)
    raw[:expected] = np.frombuffer(data, dtype=np.uint8)
    words = np.ascontiguousarray(raw.view("<u8").reshape(n_blocks, bits).T)  # (bits, n_blocks)
    lanes = np.empty((_LANES, n_blocks), dtype=np.uint64)
    mask = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    for lane in range(_LANES):
        word, shift = divmod(lane * bits, 64)
        x = words[word] >> np.uint64(shift)
        if shift + bits > 64:
            x |= words[word + 1] << np.uint64(64 - shift)
        lanes[lane] = x & mask
    return np.ascontiguousarray(lanes.T).ravel()[:count]
