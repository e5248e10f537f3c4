"""Sealed boxes, PEM files and Ed25519 update signatures."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared_models.crypto import (
    SealedBoxError, generate_signing_key, generate_x25519_key, load_private_key, load_public_key,
    open_sealed, payload_sha256, save_private_key, save_public_key, seal_secret, sign_aggregate,
    sign_update, verify_aggregate, verify_update)

DIGEST = payload_sha256(b"encrypted update bytes")


def test_sealed_secret_opens_only_with_the_right_key() -> None:
    alice, bob = generate_x25519_key(), generate_x25519_key()
    blob = seal_secret(b"ckks secret context", alice.public_key(), associated_data=b"dev-1")
    assert open_sealed(blob, alice, associated_data=b"dev-1") == b"ckks secret context"
    with pytest.raises(SealedBoxError, match="wrong key"):
        open_sealed(blob, bob, associated_data=b"dev-1")
    with pytest.raises(SealedBoxError):
        open_sealed(blob, alice, associated_data=b"dev-2")
    assert seal_secret(b"x", alice.public_key()) != seal_secret(b"x", alice.public_key())


@pytest.mark.parametrize("position", [0, 4, 5, 40, 60, -1])
def test_sealed_secret_detects_tampering(position: int) -> None:
    key = generate_x25519_key()
    blob = bytearray(seal_secret(b"secret" * 10, key.public_key()))
    blob[position] ^= 0x01
    with pytest.raises(SealedBoxError):
        open_sealed(bytes(blob), key)


def test_sealed_secret_rejects_truncation() -> None:
    key = generate_x25519_key()
    blob = seal_secret(b"secret", key.public_key())
    for cut in (0, 10, len(blob) - 1):
        with pytest.raises(SealedBoxError):
            open_sealed(blob[:cut], key)


def test_pem_files_and_modes(tmp_path) -> None:
    sk = generate_signing_key()
    save_private_key(sk, tmp_path / "sk.pem")
    save_public_key(sk.public_key(), tmp_path / "pk.pem")
    assert stat.S_IMODE(os.stat(tmp_path / "sk.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "pk.pem").st_mode) == 0o644
    loaded = load_private_key(tmp_path / "sk.pem", Ed25519PrivateKey)
    assert loaded.public_key().public_bytes_raw() == sk.public_key().public_bytes_raw()
    load_public_key(tmp_path / "pk.pem", Ed25519PublicKey)
    with pytest.raises(TypeError):
        load_private_key(tmp_path / "sk.pem", X25519PrivateKey)
    save_private_key(sk, tmp_path / "enc.pem", password=b"pw")
    load_private_key(tmp_path / "enc.pem", Ed25519PrivateKey, password=b"pw")


def test_private_key_file_mode_is_enforced_on_overwrite(tmp_path) -> None:
    path = tmp_path / "sk.pem"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    save_private_key(generate_x25519_key(), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_update_signature_verifies_and_binds_every_field() -> None:
    sk = generate_signing_key()
    pk = sk.public_key()
    sig = sign_update(sk, round_id=3, device_id="dev-1", payload_sha256=DIGEST)
    assert verify_update(pk, sig, round_id=3, device_id="dev-1", payload_sha256=DIGEST)
    assert not verify_update(pk, sig, round_id=4, device_id="dev-1", payload_sha256=DIGEST)
    assert not verify_update(pk, sig, round_id=3, device_id="dev-2", payload_sha256=DIGEST)
    assert not verify_update(pk, sig, round_id=3, device_id="dev-1",
                             payload_sha256=payload_sha256(b"other"))
    other = generate_signing_key().public_key()
    assert not verify_update(other, sig, round_id=3, device_id="dev-1", payload_sha256=DIGEST)
    assert not verify_update(pk, sig[:-1], round_id=3, device_id="dev-1", payload_sha256=DIGEST)
    assert not verify_update(pk, bytes(64), round_id=3, device_id="dev-1", payload_sha256=DIGEST)


def test_signatures_are_domain_separated() -> None:
    sk = generate_signing_key()
    agg_sig = sign_aggregate(sk, round_id=3, payload_sha256=DIGEST)
    assert verify_aggregate(sk.public_key(), agg_sig, round_id=3, payload_sha256=DIGEST)
    assert not verify_aggregate(sk.public_key(), agg_sig, round_id=2, payload_sha256=DIGEST)
    upd_sig = sign_update(sk, round_id=3, device_id="d", payload_sha256=DIGEST)
    assert not verify_aggregate(sk.public_key(), upd_sig, round_id=3, payload_sha256=DIGEST)


@pytest.mark.parametrize("kwargs", [
    {"round_id": -1, "device_id": "d", "payload_sha256": DIGEST},
    {"round_id": True, "device_id": "d", "payload_sha256": DIGEST},
    {"round_id": 1, "device_id": "", "payload_sha256": DIGEST},
    {"round_id": 1, "device_id": "d", "payload_sha256": DIGEST[:31]},
])
def test_sign_rejects_malformed_fields(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        sign_update(generate_signing_key(), **kwargs)
