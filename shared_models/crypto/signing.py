"""Ed25519 signatures over a canonical, domain-separated encoding of an update.

Signed message (all integers big endian)::

    domain tag (NUL-terminated ASCII) | [len(run_id utf-8) u16 | run_id utf-8] |
    round_id u64 | len(device_id utf-8) u16 | device_id utf-8 | payload SHA-256 (32 bytes)

Device updates use ``fedinterest/update-signature/v2``, which carries the run id
(the nonce the server sends in every instruction, ``server/run_id.py``); the
server's aggregate uses ``fedinterest/aggregate-signature/v1`` (no run id) with
device_id ``""``. So a signature can never be replayed across roles, rounds,
devices, payloads or, for updates, runs that share the same keys.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

UPDATE_DOMAIN = b"fedinterest/update-signature/v2\0"
AGGREGATE_DOMAIN = b"fedinterest/aggregate-signature/v1\0"


def payload_sha256(payload: bytes) -> bytes:
    """SHA-256 digest of a payload (what the signatures cover)."""
    return hashlib.sha256(payload).digest()


def signed_message(domain: bytes, *, round_id: int, device_id: str, payload_sha256: bytes,
                   run_id: str | None = None) -> bytes:
    """Canonical bytes that are signed (``run_id`` None: no run segment); ValueError on malformed arguments."""
    if isinstance(round_id, bool) or not isinstance(round_id, int) or not 0 <= round_id < 2 ** 64:
        raise ValueError(f"round_id must be an int in [0, 2**64), got {round_id!r}")
    if not isinstance(device_id, str):
        raise ValueError(f"device_id must be a str, got {device_id!r}")
    dev = device_id.encode("utf-8")
    if len(dev) > 0xFFFF:
        raise ValueError("device_id too long")
    if not isinstance(payload_sha256, (bytes, bytearray)) or len(payload_sha256) != 32:
        raise ValueError("payload_sha256 must be 32 bytes")
    run = b""
    if run_id is not None:
        if not isinstance(run_id, str) or len(run_id.encode("utf-8")) > 0xFFFF:
            raise ValueError(f"run_id must be a str of at most 65535 bytes, got {run_id!r:.80}")
        run = struct.pack(">H", len(run_id.encode("utf-8"))) + run_id.encode("utf-8")
    return domain + run + struct.pack(">QH", round_id, len(dev)) + dev + bytes(payload_sha256)


def _verify(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != 64:
        return False
    try:
        public_key.verify(bytes(signature), message)
    except InvalidSignature:
        return False
    return True


def sign_update(private_key: Ed25519PrivateKey, *, round_id: int, device_id: str,
                payload_sha256: bytes, run_id: str = "") -> bytes:
    """Device signature of its encrypted update for one round of run ``run_id``."""
    if not device_id:
        raise ValueError("device_id must be non-empty")
    return private_key.sign(signed_message(UPDATE_DOMAIN, round_id=round_id, device_id=device_id,
                                           payload_sha256=payload_sha256, run_id=run_id))


def verify_update(public_key: Ed25519PublicKey, signature: bytes, *, round_id: int,
                  device_id: str, payload_sha256: bytes, run_id: str = "") -> bool:
    """True iff ``signature`` is the device's signature of exactly these fields (run id included)."""
    msg = signed_message(UPDATE_DOMAIN, round_id=round_id, device_id=device_id,
                         payload_sha256=payload_sha256, run_id=run_id)
    return _verify(public_key, signature, msg)


def sign_aggregate(private_key: Ed25519PrivateKey, *, round_id: int, payload_sha256: bytes) -> bytes:
    """Server signature of the aggregate it sends back for one round."""
    return private_key.sign(signed_message(AGGREGATE_DOMAIN, round_id=round_id, device_id="",
                                           payload_sha256=payload_sha256))


def verify_aggregate(public_key: Ed25519PublicKey, signature: bytes, *, round_id: int,
                     payload_sha256: bytes) -> bool:
    """True iff ``signature`` is the server's signature of this round's aggregate."""
    msg = signed_message(AGGREGATE_DOMAIN, round_id=round_id, device_id="",
                         payload_sha256=payload_sha256)
    return _verify(public_key, signature, msg)


MASK_KEYS_DOMAIN = b"fedinterest/mask-keys-signature/v1\0"


def _mask_keys_digest(context: bytes, channel: bytes, mask: bytes, commit: bytes) -> bytes:
    return hashlib.sha256(struct.pack("<I", len(context)) + context + channel + mask + commit).digest()


def sign_mask_keys(private_key: Ed25519PrivateKey, *, run_id: str, round_id: int, device_id: str, context: bytes,
                   channel: bytes, mask: bytes, commit: bytes) -> bytes:
    """Device signature of the round keys and self-seed commitment it advertises for pairwise masking
    (``mask_wire.KeysReply``)."""
    if not device_id:
        raise ValueError("device_id must be non-empty")
    return private_key.sign(signed_message(MASK_KEYS_DOMAIN, round_id=round_id, device_id=device_id, run_id=run_id,
                                           payload_sha256=_mask_keys_digest(context, channel, mask, commit)))


def verify_mask_keys(public_key: Ed25519PublicKey, signature: bytes, *, run_id: str, round_id: int,
                     device_id: str, context: bytes, channel: bytes, mask: bytes, commit: bytes) -> bool:
    """True iff ``signature`` is the device's signature of exactly these round keys and commitment."""
    msg = signed_message(MASK_KEYS_DOMAIN, round_id=round_id, device_id=device_id, run_id=run_id,
                         payload_sha256=_mask_keys_digest(context, channel, mask, commit))
    return _verify(public_key, signature, msg)
