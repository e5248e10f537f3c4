"""Pairwise masks on the ``c0`` polynomials of CKKS updates (pure numpy + ``cryptography``).

All devices share one CKKS secret key, so a device that decrypts another device's ciphertext reads its
update.  Masking closes that: device ``u`` adds to its ``c0`` (NTT form, mod the data prime ``q``)

    mask_u = PRG(b_u) + sum_{v in N(u)} sign(u, v) * PRG(s_uv)      (mod q),  sign(u, v) = +1 if u < v else -1

where ``s_uv = s_vu`` is a pair seed (X25519 agreement of u's and v's mask keys, then HKDF-SHA256 bound to
the round and the pair) and ``b_u`` a fresh self seed.  The NTT is a linear bijection of ``Z_q^N``, so a
uniform mask in NTT form is a uniform ring element: a key holder who decrypts ``(c0 + mask_u, a)`` gets
``m + e + mask_u``, uniform noise.  In the sum over devices the pair terms cancel exactly (``+`` at the
smaller id, ``-`` at the larger); what is left, the survivors' self masks and the pair terms that survivors
share with devices that dropped before their update was counted, is :func:`residual_mask`, which the server
removes once it has reconstructed those seeds (see ``seed_sharing.py``).  Homomorphic addition of CKKS
ciphertexts is coefficient-wise addition mod ``q``, so the unmasked sum is bit-identical to the sum of the
unmasked updates.

PRG: ``payload.uniform_mod`` (AES-256-CTR, rejection sampling to ``[0, q)``) keyed by HKDF-SHA256 of the
seed with a label naming the ring, so a seed never yields the same stream as a CKKS ``a`` polynomial.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .payload import uniform_mod

SEED_BYTES = 32
SELF_SEED_BYTES = 16  # Shamir-shared: one 16-byte block
_PAIR_LABEL = b"fedinterest/mask-pair-seed/v1\0"
_PRG_LABEL = b"fedinterest/mask-prg/v1\0"
_COMMIT_LABEL = b"fedinterest/self-seed-commitment/v1\0"


def seed_commitment(self_seed: bytes) -> bytes:
    """SHA-256 commitment to a self seed, advertised (signed) with the round keys, so the server can tell a
    self seed rebuilt from honest shares from one a lying holder's share corrupted (a 16-byte uniform seed:
    the hash reveals nothing usable about it)."""
    return hashlib.sha256(_COMMIT_LABEL + self_seed).digest()


def pair_sign(own_id: int, peer_id: int) -> int:
    """+1 if ``own_id < peer_id``, -1 if larger; the two ends of a pair always get opposite signs."""
    if own_id == peer_id:
        raise ValueError("a device has no pair mask with itself")
    return 1 if own_id < peer_id else -1


def pair_seed(private_key: X25519PrivateKey, peer_public_key: X25519PublicKey, *, context: bytes,
              own_id: int, peer_id: int) -> bytes:
    """32-byte seed shared by ``own_id`` and ``peer_id``: HKDF-SHA256 over their X25519 agreement, bound to
    ``context`` (run + round) and the unordered pair, so both ends derive the same seed."""
    if own_id == peer_id:
        raise ValueError("a device has no pair seed with itself")
    lo, hi = sorted((own_id, peer_id))
    shared = private_key.exchange(peer_public_key)
    info = _PAIR_LABEL + struct.pack("<QQI", lo, hi, len(context)) + context
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(shared)


def expand_mask(seed: bytes, *, n_ciphertexts: int, degree: int, modulus: int) -> np.ndarray:
    """Uniform polynomials mod ``modulus`` of shape (n_ciphertexts, degree), uint64, from a pair seed
    (32 bytes) or a self seed (16 bytes)."""
    if len(seed) not in (SEED_BYTES, SELF_SEED_BYTES):
        raise ValueError(f"seed must be {SEED_BYTES} or {SELF_SEED_BYTES} bytes")
    info = _PRG_LABEL + struct.pack("<QII", modulus, degree, n_ciphertexts)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(seed)
    return uniform_mod(key, n_ciphertexts, degree, modulus)


class _ModAccumulator:
    """Signed sum of polynomials mod q with lazy reduction (entries < q < 2**62; ``2**64 // q - 1`` terms)."""

    def __init__(self, shape: tuple[int, int], modulus: int) -> None:
        if modulus >= 2 ** 62:
            raise ValueError("modulus must be below 2**62")
        self.q = np.uint64(modulus)
        self.acc = np.zeros(shape, dtype=np.uint64)
        self._terms = 0
        self._max_terms = (2 ** 64 - 1) // modulus - 1

    def add(self, poly: np.ndarray, sign: int) -> None:
        if self._terms >= self._max_terms:
            np.remainder(self.acc, self.q, out=self.acc)
            self._terms = 1
        if sign > 0:
            self.acc += poly
        else:
            self.acc += self.q  # then - poly (< q): no wrap, no temporary
            self.acc -= poly
        self._terms += 1

    def result(self) -> np.ndarray:
        return np.remainder(self.acc, self.q, out=self.acc)


def device_mask(*, own_id: int, self_seed: bytes, pair_seeds: Mapping[int, bytes], n_ciphertexts: int,
                degree: int, modulus: int) -> np.ndarray:
    """``mask_u = PRG(b_u) + sum_v sign(u, v) PRG(s_uv) mod q`` for device ``own_id``; ``pair_seeds`` maps
    each neighbour id that completed the key-sharing stage to the pair seed."""
    shape = (n_ciphertexts, degree)
    acc = _ModAccumulator(shape, modulus)
    acc.add(expand_mask(self_seed, n_ciphertexts=n_ciphertexts, degree=degree, modulus=modulus), 1)
    for peer, seed in pair_seeds.items():
        acc.add(expand_mask(seed, n_ciphertexts=n_ciphertexts, degree=degree, modulus=modulus),
                pair_sign(own_id, peer))
    return acc.result()


def apply_mask(c0: np.ndarray, mask: np.ndarray, *, modulus: int) -> np.ndarray:
    """``(c0 + mask) mod q`` (both with entries in ``[0, q)``)."""
    if c0.shape != mask.shape:
        raise ValueError(f"mask of shape {mask.shape} for c0 of shape {c0.shape}")
    return np.remainder(c0.astype(np.uint64) + mask, np.uint64(modulus))


def remove_mask(c0: np.ndarray, mask: np.ndarray, *, modulus: int) -> np.ndarray:
    """``(c0 - mask) mod q``: the inverse of :func:`apply_mask`."""
    if c0.shape != mask.shape:
        raise ValueError(f"mask of shape {mask.shape} for c0 of shape {c0.shape}")
    q = np.uint64(modulus)
    return np.remainder(c0.astype(np.uint64) + (q - mask), q)


def residual_mask(*, survivor_self_seeds: Mapping[int, bytes],
                  dropped_pair_seeds: Iterable[tuple[int, int, bytes]], n_ciphertexts: int, degree: int,
                  modulus: int) -> np.ndarray:
    """What is left of the masks in the sum of the survivors' masked ``c0``.

    ``survivor_self_seeds``: ``b_u`` of every device whose update is in the sum; ``dropped_pair_seeds``:
    ``(survivor u, dropped d, s_ud)`` for each survivor u that masked with a neighbour d whose update is not
    in the sum.  Pair terms between two survivors cancel and are not needed."""
    acc = _ModAccumulator((n_ciphertexts, degree), modulus)
    for seed in survivor_self_seeds.values():
        acc.add(expand_mask(seed, n_ciphertexts=n_ciphertexts, degree=degree, modulus=modulus), 1)
    for survivor, dropped, seed in dropped_pair_seeds:
        if survivor in survivor_self_seeds and dropped in survivor_self_seeds:
            raise ValueError(f"pair ({survivor}, {dropped}): both survived, their masks cancel")
        acc.add(expand_mask(seed, n_ciphertexts=n_ciphertexts, degree=degree, modulus=modulus),
                pair_sign(survivor, dropped))
    return acc.result()
