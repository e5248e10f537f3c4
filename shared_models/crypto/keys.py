"""Asymmetric keys (``cryptography``): Ed25519 signing, X25519 sealed boxes, PEM I/O.

Sealed box (``seal_secret`` / ``open_sealed``), versioned layout::

    b"FISB" | version u8 (=1) | ephemeral X25519 public key (32) | nonce (12) |
    AES-256-GCM ciphertext + tag (16)

key = HKDF-SHA256(ikm = X25519(ephemeral, recipient), salt = none,
info = label | ephemeral_pub | recipient_pub), AAD = the header bytes |
recipient_pub | caller's ``associated_data``.  Any wrong key, truncation or
bit flip raises :class:`SealedBoxError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED_MAGIC = b"FISB"
SEALED_VERSION = 1
_HKDF_INFO = b"fedinterest/sealed-box/v1\0"
_HEADER_LEN = len(SEALED_MAGIC) + 1 + 32 + 12
_TAG_LEN = 16
K = TypeVar("K")


class SealedBoxError(ValueError):
    """Sealed blob is malformed, tampered with, or not for this key."""


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def generate_x25519_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def raw_public_bytes(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _derive_key(shared: bytes, eph_pub: bytes, recipient_pub: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_HKDF_INFO + eph_pub + recipient_pub)
    return hkdf.derive(shared)


def seal_secret(data: bytes, recipient_public: X25519PublicKey | bytes, *,
                associated_data: bytes = b"") -> bytes:
    """Encrypt ``data`` so that only the holder of the X25519 private key opens it."""
    if isinstance(recipient_public, (bytes, bytearray)):
        recipient_public = X25519PublicKey.from_public_bytes(bytes(recipient_public))
    recipient_raw = raw_public_bytes(recipient_public)
    ephemeral = X25519PrivateKey.generate()
    eph_raw = raw_public_bytes(ephemeral.public_key())
    key = _derive_key(ephemeral.exchange(recipient_public), eph_raw, recipient_raw)
    nonce = os.urandom(12)
    header = SEALED_MAGIC + bytes([SEALED_VERSION]) + eph_raw + nonce
    body = AESGCM(key).encrypt(nonce, bytes(data), header + recipient_raw + associated_data)
    return header + body


def open_sealed(blob: bytes, recipient_private: X25519PrivateKey, *,
                associated_data: bytes = b"") -> bytes:
    """Decrypt a :func:`seal_secret` blob; raises SealedBoxError on any problem."""
    blob = bytes(blob)
    if len(blob) < _HEADER_LEN + _TAG_LEN or not blob.startswith(SEALED_MAGIC):
        raise SealedBoxError("not a sealed box (bad magic or truncated)")
    if blob[len(SEALED_MAGIC)] != SEALED_VERSION:
        raise SealedBoxError(f"unsupported sealed-box version {blob[len(SEALED_MAGIC)]}")
    eph_raw = blob[5:37]
    nonce = blob[37:_HEADER_LEN]
    recipient_raw = raw_public_bytes(recipient_private.public_key())
    try:
        shared = recipient_private.exchange(X25519PublicKey.from_public_bytes(eph_raw))
    except ValueError as exc:
        raise SealedBoxError(f"bad ephemeral key: {exc}") from None
    key = _derive_key(shared, eph_raw, recipient_raw)
    try:
        return AESGCM(key).decrypt(nonce, blob[_HEADER_LEN:],
                                   blob[:_HEADER_LEN] + recipient_raw + associated_data)
    except InvalidTag:
        raise SealedBoxError("authentication failed: wrong key or tampered blob") from None


# ----------------------------------------------------------------- file I/O
def write_private_file(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 (also when the file existed)."""
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
    finally:
        os.close(fd)


def write_public_file(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0644."""
    Path(path).write_bytes(data)
    os.chmod(path, 0o644)


def save_private_key(key: Ed25519PrivateKey | X25519PrivateKey, path: str | os.PathLike, *,
                     password: bytes | None = None) -> None:
    """PKCS#8 PEM, mode 0600; encrypted when ``password`` is given."""
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    write_private_file(path, pem)


def save_public_key(key: Ed25519PublicKey | X25519PublicKey, path: str | os.PathLike) -> None:
    """SubjectPublicKeyInfo PEM, mode 0644."""
    write_public_file(path, key.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo))


def load_private_key(path: str | os.PathLike, expected: type[K], *,
                     password: bytes | None = None) -> K:
    """Load a PEM private key and check its type (e.g. ``Ed25519PrivateKey``)."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=password)
    if not isinstance(key, expected):
        raise TypeError(f"{path}: expected {expected.__name__}, got {type(key).__name__}")
    return key


def load_public_key(path: str | os.PathLike, expected: type[K]) -> K:
    """Load a PEM public key and check its type (e.g. ``Ed25519PublicKey``)."""
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, expected):
        raise TypeError(f"{path}: expected {expected.__name__}, got {type(key).__name__}")
    return key
