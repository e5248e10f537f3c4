"""The numpy half of a fresh CKKS encryption (shared_models/crypto/rlwe.py) and its equivalence with SEAL's.

Known values and properties of the noise sampler and the encoder, then the whole encryption against the
reference path through SEAL's own ``encrypt_symmetric``: both decrypt to the input, with the same noise.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from shared_models.crypto import HEConfig, decrypt_average, load_context, make_secret_context, \
    public_context_bytes, sum_ciphertexts
from shared_models.crypto import ckks, rlwe

CFG = HEConfig()
SIGMA = 3.3 * np.sqrt(CFG.poly_modulus_degree) / 2 ** CFG.scale_bits  # documented per-slot error std, one update


@pytest.fixture(scope="module")
def keys():
    ctx = make_secret_context(CFG, n_threads=1)
    return ctx, load_context(public_context_bytes(ctx), n_threads=1)


def test_cbd_noise_known_values() -> None:
    words = np.array([0, (1 << 21) - 1, ((1 << 21) - 1) << 21, (1 << 64) - 1, 0b1011 | (0b1 << 21)],
                     dtype="<u8")
    np.testing.assert_array_equal(rlwe.cbd_noise(5, words.tobytes()), [0, 21, -21, 0, 2])
    with pytest.raises(ValueError, match="random bytes"):
        rlwe.cbd_noise(2, bytes(15))


def test_cbd_noise_has_seals_distribution() -> None:
    """Mean 0, variance 21/2, support [-21, 21], from fresh random bytes: what SEAL's sampler draws."""
    n = 400_000
    e = rlwe.cbd_noise(n, os.urandom(rlwe.CBD_BYTES * n))
    assert abs(e.mean()) < 5 * np.sqrt(10.5 / n)
    assert abs(e.var() - 10.5) < 0.1
    assert e.min() >= -21 and e.max() <= 21


@pytest.mark.parametrize("degree", [1024, 4096])
def test_encoding_evaluates_to_the_scaled_slots_at_the_slot_roots(degree: int) -> None:
    """m(zeta ** (3 ** i)) = scale * slot_i for a real polynomial m with integer coefficients."""
    rng = np.random.default_rng(0)
    slots = rng.normal(0, 4, (2, degree // 2))
    scale = 2.0 ** 24
    coeffs = rlwe.encode_coefficients(slots, degree=degree, scale=scale)
    assert coeffs.dtype == np.int64 and coeffs.shape == (2, degree)
    roots = np.exp(1j * np.pi * (2 * rlwe.slot_positions(degree)[: degree // 2] + 1) / degree)
    powers = roots[:, None] ** np.arange(degree)[None, :]  # (N/2, N)
    values = coeffs.astype(np.float64) @ powers.T / scale  # (2, N/2)
    np.testing.assert_allclose(values.real, slots, atol=degree / scale)  # rounding: at most N/2 per value
    np.testing.assert_allclose(values.imag, 0, atol=degree / scale)


def test_encoding_refuses_wrong_shapes_and_overflow() -> None:
    with pytest.raises(ValueError, match="degree // 2"):
        rlwe.encode_coefficients(np.zeros((1, 10)), degree=64, scale=2.0)
    with pytest.raises(ValueError, match="62 bits"):
        rlwe.encode_coefficients(np.full((1, 32), 1e10), degree=64, scale=2.0 ** 40)


def test_residues() -> None:
    np.testing.assert_array_equal(rlwe.to_residues(np.array([0, 5, -1, -96]), 97), [0, 5, 96, 1])
    with pytest.raises(ValueError):
        rlwe.to_residues(np.array([97]), 97)


def _decryption_error(keys, x: np.ndarray, seeded_c0, monkeypatch) -> np.ndarray:
    ctx, pub = keys
    monkeypatch.setattr(ckks, "_seeded_c0", seeded_c0)
    payload = ckks.encrypt_update(ctx, x, weight=1.0, cfg=CFG)
    summed = sum_ciphertexts(pub, [payload], expected_count=CFG.n_ciphertexts(x.size), cfg=CFG)
    average, total = decrypt_average(ctx, summed, cfg=CFG)
    assert abs(total - 1.0) < 8 * SIGMA
    return average * total - x  # the decrypted sum's error per slot (the average shares the total's error)


def test_encryption_equals_seals_encrypt_symmetric_in_distribution(keys, monkeypatch) -> None:
    """Same plaintext, same noise level (and not less: a missing ``e`` would be an insecure encryption)."""
    x = np.random.default_rng(1).uniform(-CFG.clip_range, CFG.clip_range, 5 * CFG.poly_modulus_degree // 2 - 7)
    fast = ckks._seeded_c0
    ours = _decryption_error(keys, x, fast, monkeypatch)
    seal = _decryption_error(keys, x, ckks._seeded_c0_reference, monkeypatch)
    sigma = SIGMA
    assert np.abs(ours).max() < 8 * sigma and np.abs(seal).max() < 8 * sigma
    assert 0.8 < ours.std() / seal.std() < 1.25
    assert ours.std() > 0.3 * sigma
    # the same check sees an encryption without noise: the error is then only rounding, ~10x smaller
    monkeypatch.setattr(rlwe, "cbd_noise", lambda n, _: np.zeros(n, dtype=np.int64))
    noiseless = _decryption_error(keys, x, fast, monkeypatch)
    assert noiseless.std() < 0.3 * sigma


def test_fresh_encryptions_of_one_vector_have_independent_noise(keys, monkeypatch) -> None:
    x = np.linspace(-1, 1, 3000)
    a, b = (_decryption_error(keys, x, ckks._seeded_c0, monkeypatch) for _ in range(2))
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1
