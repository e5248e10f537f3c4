"""Wire format of encrypted updates and aggregates, and seed expansion.

A device update is a *seeded* symmetric CKKS ciphertext batch: each RLWE
ciphertext ``(c0, c1)`` has ``c1 = a`` drawn uniformly mod ``q`` from a public
32-byte seed, so only ``c0`` travels (half the size; the trick SEAL uses for its
own seeded ciphertexts).  Coefficients are bit-packed at ``P = bitlen(q)`` bits.

Layout (little endian)::

    header (48 bytes)  magic b"FIHE" | version u8 | kind u8 | reserved u16 |
                       context fingerprint 16s | config fingerprint 8s |
                       n_params u32 | n_ciphertexts u32 | n_summands u32 |
                       coeff_bits u8 | 3 zero bytes
    kind 1 (update)    seed (32 bytes) | packed c0 (n_ct * N coefficients)
    kind 2 (aggregate) packed c0 | packed c1

``a`` = the first ``n_ct*N`` values ``< q`` among the P-bit-masked little-endian
64-bit words of AES-256-CTR(key = SHA-256(label | seed | q | N), iv = 0).
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .bitpack import pack_uint, packed_size, unpack_uint

MAGIC = b"FIHE"
VERSION = 1
KIND_UPDATE = 1
KIND_AGGREGATE = 2
SEED_BYTES = 32
_HEADER = struct.Struct("<4sBBH16s8sIIIB3x")
HEADER_BYTES = _HEADER.size
_PRG_LABEL = b"fedinterest/ckks-seeded-a/v1\0"


class PayloadError(ValueError):
    """A received payload is unusable; ``reason`` is a short machine-readable tag:
    bad_magic, truncated, unsupported_version, wrong_kind, context_mismatch,
    config_mismatch, count_mismatch, shape_mismatch, length_mismatch,
    coefficient_out_of_range, malformed, duplicate, too_many_summands."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Header:
    kind: int
    context_fp: bytes
    config_fp: bytes
    n_params: int
    n_ciphertexts: int
    n_summands: int
    coeff_bits: int

    def to_bytes(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, self.kind, 0, self.context_fp, self.config_fp,
                            self.n_params, self.n_ciphertexts, self.n_summands, self.coeff_bits)


def parse_header(data: bytes) -> Header:
    """Parse and sanity-check the fixed header (no context knowledge needed)."""
    if len(data) < len(MAGIC) or bytes(data[:4]) != MAGIC:
        raise PayloadError("bad_magic", "not a fedinterest HE payload")
    if len(data) < HEADER_BYTES:
        raise PayloadError("truncated", f"{len(data)} bytes, header needs {HEADER_BYTES}")
    _, version, kind, reserved, ctx_fp, cfg_fp, n_params, n_ct, n_sum, bits = _HEADER.unpack_from(data)
    if version != VERSION:
        raise PayloadError("unsupported_version", f"payload version {version}, expected {VERSION}")
    if kind not in (KIND_UPDATE, KIND_AGGREGATE) or reserved:
        raise PayloadError("malformed", f"bad kind {kind} / reserved field")
    if not 1 <= bits <= 60 or n_ct < 1 or n_sum < 1 or (kind == KIND_UPDATE and n_sum != 1):
        raise PayloadError("malformed", f"bad coeff_bits {bits}, n_ciphertexts {n_ct} or n_summands {n_sum}")
    return Header(kind, ctx_fp, cfg_fp, n_params, n_ct, n_sum, bits)


def body_size(header: Header, degree: int) -> int:
    """Expected body length (bytes after the header)."""
    poly = packed_size(header.n_ciphertexts * degree, header.coeff_bits)
    return SEED_BYTES + poly if header.kind == KIND_UPDATE else 2 * poly


def encode(header: Header, polys: list[np.ndarray], seed: bytes = b"") -> bytes:
    """Header + optional seed + each (n_ct, N) poly array bit-packed."""
    parts = [header.to_bytes(), seed]
    parts += [pack_uint(p.ravel(), header.coeff_bits) for p in polys]
    return b"".join(parts)


def decode_polys(data: bytes, header: Header, degree: int, modulus: int) -> tuple[bytes, list[np.ndarray]]:
    """Split the body into (seed, [poly arrays]); checks length and range ``< q``."""
    expected = HEADER_BYTES + body_size(header, degree)
    if len(data) < expected:
        raise PayloadError("truncated", f"{len(data)} bytes, expected {expected}")
    if len(data) > expected:
        raise PayloadError("length_mismatch", f"{len(data) - expected} trailing bytes")
    view = memoryview(data)[HEADER_BYTES:]
    seed = b""
    if header.kind == KIND_UPDATE:
        seed, view = bytes(view[:SEED_BYTES]), view[SEED_BYTES:]
    count = header.n_ciphertexts * degree
    size = packed_size(count, header.coeff_bits)
    polys = []
    for start in range(0, len(view) - size + 1, size):
        try:
            values = unpack_uint(view[start:start + size], header.coeff_bits, count)
        except ValueError as exc:
            raise PayloadError("malformed", str(exc)) from None
        if count and int(values.max()) >= modulus:
            raise PayloadError("coefficient_out_of_range", "ciphertext coefficient >= q")
        polys.append(values.reshape(header.n_ciphertexts, degree))
    return seed, polys


def expand_seed(seed: bytes, n_ciphertexts: int, degree: int, modulus: int) -> np.ndarray:
    """Deterministic uniform polynomials mod ``modulus`` (rejection sampling)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes")
    key = hashlib.sha256(_PRG_LABEL + seed + struct.pack("<QI", modulus, degree)).digest()
    return uniform_mod(key, n_ciphertexts, degree, modulus)


def uniform_mod(key: bytes, n_ciphertexts: int, degree: int, modulus: int) -> np.ndarray:
    """Polynomials uniform mod ``modulus``: the first ``n_ciphertexts * degree`` values ``< modulus`` among the
    ``bitlen(modulus)``-bit-masked little-endian 64-bit words of AES-256-CTR(``key``, iv = 0).

    Fast path: when no word of the first draw is rejected (probability ``(modulus / 2**P)**count``, near 1 for
    the data primes SEAL picks just below ``2**P``) the masked words are the answer, without a copy."""
    if len(key) != 32:
        raise ValueError("key must be 32 bytes")
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    mask = np.uint64((1 << modulus.bit_length()) - 1)
    bound = np.uint64(modulus)
    total = n_ciphertexts * degree
    out = np.empty(total, dtype=np.uint64)
    filled = 0
    while filled < total:
        need = total - filled
        buf = bytearray(8 * need + 15)  # update_into wants room for one extra block
        stream.update_into(bytes(8 * need), buf)
        words = np.frombuffer(buf, dtype="<u8", count=need)
        words &= mask
        if filled == 0 and not (words >= bound).any():
            return words.reshape(n_ciphertexts, degree)
        accepted = words[words < bound]
        out[filled:filled + accepted.size] = accepted
        filled += accepted.size
    return out.reshape(n_ciphertexts, degree)
