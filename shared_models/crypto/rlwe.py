"""Pure numpy pieces of a fresh symmetric CKKS encryption (no SEAL, no TenSEAL).

A symmetric RLWE encryption of a message polynomial ``m`` under secret ``s`` is ``(c0, c1) = (m + e - a*s, a)``
with ``a`` uniform mod ``q`` and ``e`` small noise. SEAL's own ``encrypt_symmetric`` spends half its time in its
software Blake2xb generator; here the device computes the two parts that need no secret in bulk:

* ``encode_coefficients``: the CKKS encoding of real slot values as integer polynomial coefficients (the
  inverse canonical embedding, scaled by ``scale`` and rounded), all ciphertexts in one FFT;
* ``cbd_noise``: centred binomial noise with 21 + 21 bits per coefficient (the distribution SEAL samples,
  standard deviation sqrt(21/2) ~ 3.24), from an AES-256-CTR stream keyed with 32 bytes of ``os.urandom``.

``ckks.py`` adds them, lets SEAL bring ``m + e`` into NTT form and subtract ``a*s`` (by decrypting
``(m + e, -a)``), which is the only step that touches the secret.
"""

from __future__ import annotations

import functools

import numpy as np

GENERATOR = 3  # SEAL's CKKS slot order: slot i holds m(zeta ** (3 ** i mod 2N)), zeta = exp(i pi / N)
CBD_BITS = 21  # SEAL's noise: popcount(21 random bits) - popcount(21 random bits)
CBD_BYTES = 8  # 2 * 21 bits, taken from one little-endian 64-bit word per sample


@functools.lru_cache(maxsize=4)
def slot_positions(degree: int) -> np.ndarray:
    """Index ``t`` (root ``zeta ** (2t + 1)``) of each slot, then of each slot's conjugate; shape (degree,)."""
    half = degree // 2
    powers = np.empty(half, dtype=np.int64)
    k = 1
    for i in range(half):
        powers[i] = k
        k = k * GENERATOR % (2 * degree)
    conj = 2 * degree - powers
    out = np.concatenate([(powers - 1) // 2, (conj - 1) // 2])
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def _untwist(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of pi j / N: Re(F_j zeta ** -j) = Re F_j cos + Im F_j sin."""
    angle = np.pi * np.arange(degree) / degree
    cos, sin = np.cos(angle), np.sin(angle)
    cos.setflags(write=False)
    sin.setflags(write=False)
    return cos, sin


def encode_coefficients(slots: np.ndarray, *, degree: int, scale: float) -> np.ndarray:
    """Round(scale * inverse canonical embedding) of real ``slots`` of shape (n_ct, degree // 2): int64 (n_ct, N).

    The polynomial ``m`` satisfies ``m(zeta ** (2t + 1)) = scale * value`` at the slot's root (and the
    conjugate at the conjugate root), so SEAL's decoder returns ``value`` up to rounding and noise."""
    slots = np.asarray(slots, dtype=np.float64)
    n_ct, half = slots.shape
    if half * 2 != degree:
        raise ValueError(f"slots of shape {slots.shape}: need degree // 2 = {degree // 2} per ciphertext")
    evaluations = np.empty((n_ct, degree))  # m at zeta ** (2t + 1), t = 0 .. N-1; real slots: real values
    evaluations[:, slot_positions(degree)] = np.concatenate([slots, slots], axis=1) * scale
    # m(zeta ** (2t + 1)) = sum_j (m_j zeta ** j) w ** (t j), w = exp(2 pi i / N), so m_j zeta ** j is the
    # inverse DFT, sum_t v_t w ** (-t j) / N = F_j / N for numpy's forward FFT F; v real: F_(N-j) = conj F_j
    half_spectrum = np.fft.rfft(evaluations, axis=1) / degree  # (n_ct, N/2 + 1)
    mirror = half_spectrum[:, half - 1:0:-1]
    real = np.concatenate([half_spectrum.real, mirror.real], axis=1)
    imag = np.concatenate([half_spectrum.imag, -mirror.imag], axis=1)
    cos, sin = _untwist(degree)
    coeffs = real * cos + imag * sin  # Re(F_j zeta ** -j) / N
    if not np.all(np.abs(coeffs) < 2.0 ** 62):
        raise ValueError("encoded coefficients exceed 62 bits: scale too large for these values")
    return np.rint(coeffs).astype(np.int64)


def cbd_noise(n: int, random_bytes: bytes) -> np.ndarray:
    """``n`` centred binomial samples (popcount of 21 bits minus popcount of the next 21) from 8 bytes each."""
    if len(random_bytes) != CBD_BYTES * n:
        raise ValueError(f"need {CBD_BYTES * n} random bytes for {n} samples, got {len(random_bytes)}")
    words = np.frombuffer(random_bytes, dtype="<u8")
    mask = np.uint64((1 << CBD_BITS) - 1)
    plus = np.bitwise_count(words & mask).astype(np.int64)
    minus = np.bitwise_count((words >> np.uint64(CBD_BITS)) & mask).astype(np.int64)
    return plus - minus


def to_residues(values: np.ndarray, modulus: int) -> np.ndarray:
    """Signed integers (|v| < modulus) as residues in [0, modulus), uint64."""
    v = np.asarray(values, dtype=np.int64)
    if v.size and int(np.abs(v).max()) >= modulus:
        raise ValueError("value outside (-modulus, modulus)")
    return np.where(v < 0, v + np.int64(modulus), v).astype(np.uint64)
