"""Wire codec of the masking exchanges (``server/masks.py`` <-> ``client/masks.py``), both directions.

Every message is compact JSON with byte strings in base64; every decoder validates types, id ranges and byte
lengths and raises :class:`MaskWireError` naming the field, so a hostile message is one rejected reply (server)
or one refused request (device), never a crash.

Stages (``STAGES``): ``mask-keys`` (a device advertises its round keys, signed), ``mask-shares`` (it seals a
share pair for each neighbour), ``mask-receive`` (it opens the pairs sent to it and learns whom it masks with),
``mask-unmask`` (it reveals, per owner, one share: the self-seed share of an owner in the sum or the mask-key
share of one that dropped).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .mask_round import PublicKeys

STAGE_KEYS = "mask-keys"
STAGE_SHARES = "mask-shares"
STAGE_RECEIVE = "mask-receive"
STAGE_UNMASK = "mask-unmask"
STAGES = (STAGE_KEYS, STAGE_SHARES, STAGE_RECEIVE, STAGE_UNMASK)
MAX_MESSAGE_BYTES = 4 << 20  # a round's largest request (the unmask lists of 10^5 devices) stays far below
MAX_ID = 2 ** 32 - 1
MAX_TOKEN_BYTES = 512  # a sealed share pair is ~ 200 bytes
MAX_SHARE_BYTES = 64
KEY_BYTES = 32
SIGNATURE_BYTES = 64
COMMIT_BYTES = 32
_CONTEXT_LABEL = b"fedinterest/mask-round/v1\0"


class MaskWireError(ValueError):
    """A masking message that does not parse or validate; the message names the field."""


ATTEMPT_BYTES = 16


def round_context(run_id: str, round_id: int, attempt: bytes) -> bytes:
    """What binds pair seeds, share channels and the neighbour graph to one attempt at one round of one run
    (a resumed run asks a round again with a fresh ``attempt``; the earlier attempt's secrets are then erased)."""
    run = run_id.encode("utf-8")
    return _CONTEXT_LABEL + struct.pack("<QI", round_id, len(run)) + run + bytes(attempt)


# ---- primitives -------------------------------------------------------------------------------------------

def encode(obj: Mapping[str, Any]) -> bytes:
    def conv(v):
        if isinstance(v, (bytes, bytearray)):
            return base64.b64encode(bytes(v)).decode("ascii")
        if isinstance(v, PublicKeys):
            return [conv(v.channel), conv(v.mask)]
        if isinstance(v, Mapping):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, set, frozenset)):
            return [conv(x) for x in (sorted(v) if isinstance(v, (set, frozenset)) else v)]
        return v
    return json.dumps(conv(obj), separators=(",", ":")).encode("utf-8")


def decode(data: bytes, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, (bytes, bytearray)):
        raise MaskWireError(f"message is {type(data).__name__}, expected bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MaskWireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MaskWireError(f"message is not JSON: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != set(fields):
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise MaskWireError(f"message fields {got}, expected {sorted(fields)}")
    return obj


def _bytes(v: Any, field: str, *, size: int | None = None, max_size: int = MAX_TOKEN_BYTES) -> bytes:
    if not isinstance(v, str) or len(v) > 2 * max_size:
        raise MaskWireError(f"field {field!r}: expected a base64 string")
    try:
        out = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise MaskWireError(f"field {field!r}: not base64") from None
    if (size is not None and len(out) != size) or len(out) > max_size:
        raise MaskWireError(f"field {field!r}: {len(out)} bytes, expected {size or f'<= {max_size}'}")
    return out


def _id(v: Any, field: str) -> int:
    if isinstance(v, str) and v.isdigit() and len(v) <= 10:
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_ID:
        raise MaskWireError(f"field {field!r}: {v!r:.40} is not a device index in [0, {MAX_ID}]")
    return v


def _ids(v: Any, field: str) -> set[int]:
    if not isinstance(v, list):
        raise MaskWireError(f"field {field!r}: expected a list of device indices")
    out = {_id(x, field) for x in v}
    if len(out) != len(v):
        raise MaskWireError(f"field {field!r}: repeated device index")
    return out


def _map(v: Any, field: str, value) -> dict[int, Any]:
    if not isinstance(v, dict):
        raise MaskWireError(f"field {field!r}: expected an object keyed by device index")
    return {_id(k, field): value(x, f"{field}[{k}]") for k, x in v.items()}


def _keys(v: Any, field: str) -> PublicKeys:
    if not isinstance(v, list) or len(v) != 2:
        raise MaskWireError(f"field {field!r}: expected [channel key, mask key]")
    return PublicKeys(_bytes(v[0], field, size=KEY_BYTES), _bytes(v[1], field, size=KEY_BYTES))


def _int(v: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise MaskWireError(f"field {field!r}: {v!r:.40} outside [{lo}, {hi}]")
    return v


# ---- the four exchanges -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeysRequest:
    own_id: int  # the index this device has in the round's graph and share headers
    attempt: bytes  # the server's fresh nonce for this attempt at the round

    def encode(self) -> bytes:
        return encode({"id": self.own_id, "attempt": self.attempt})

    @classmethod
    def decode(cls, data: bytes) -> "KeysRequest":
        obj = decode(data, ("id", "attempt"))
        return cls(_id(obj["id"], "id"), _bytes(obj["attempt"], "attempt", size=ATTEMPT_BYTES))


@dataclass(frozen=True)
class KeysReply:
    device_id: str
    keys: PublicKeys
    seed_commit: bytes  # masking.seed_commitment of the self seed: lets the server reject a corrupted rebuild
    signature: bytes  # Ed25519 over the round context, device id, both keys and the commitment

    def encode(self) -> bytes:
        return encode({"device": self.device_id, "keys": self.keys, "commit": self.seed_commit,
                       "signature": self.signature})

    @classmethod
    def decode(cls, data: bytes) -> "KeysReply":
        obj = decode(data, ("device", "keys", "commit", "signature"))
        if not isinstance(obj["device"], str) or not 0 < len(obj["device"]) <= 256:
            raise MaskWireError("field 'device': expected a device id string")
        return cls(obj["device"], _keys(obj["keys"], "keys"), _bytes(obj["commit"], "commit", size=COMMIT_BYTES),
                   _bytes(obj["signature"], "signature", size=SIGNATURE_BYTES))


@dataclass(frozen=True)
class SharesRequest:
    threshold: int
    neighbours: dict[int, PublicKeys]  # this device included

    def encode(self) -> bytes:
        return encode({"threshold": self.threshold, "neighbours": self.neighbours})

    @classmethod
    def decode(cls, data: bytes) -> "SharesRequest":
        obj = decode(data, ("threshold", "neighbours"))
        return cls(_int(obj["threshold"], "threshold", 2, 1 << 16), _map(obj["neighbours"], "neighbours", _keys))


@dataclass(frozen=True)
class TokensMessage:
    """``mask-shares`` reply (tokens by recipient) and ``mask-receive`` request (tokens by sender, with the
    senders' keys: the peers this device masks with, itself included)."""

    tokens: dict[int, bytes]
    senders: dict[int, PublicKeys]

    def encode(self) -> bytes:
        return encode({"tokens": self.tokens, "senders": self.senders})

    @classmethod
    def decode(cls, data: bytes) -> "TokensMessage":
        obj = decode(data, ("tokens", "senders"))
        return cls(_map(obj["tokens"], "tokens", _bytes), _map(obj["senders"], "senders", _keys))


@dataclass(frozen=True)
class UnmaskRequest:
    in_sum: set[int]
    dropped: set[int]

    def encode(self) -> bytes:
        return encode({"in_sum": self.in_sum, "dropped": self.dropped})

    @classmethod
    def decode(cls, data: bytes) -> "UnmaskRequest":
        obj = decode(data, ("in_sum", "dropped"))
        return cls(_ids(obj["in_sum"], "in_sum"), _ids(obj["dropped"], "dropped"))


@dataclass(frozen=True)
class SharesReply:
    """``mask-unmask`` reply: one share per owner."""

    shares: dict[int, bytes]

    def encode(self) -> bytes:
        return encode({"shares": self.shares})

    @classmethod
    def decode(cls, data: bytes) -> "SharesReply":
        obj = decode(data, ("shares",))
        return cls(_map(obj["shares"], "shares", lambda v, f: _bytes(v, f, max_size=MAX_SHARE_BYTES)))


ACK = b'{"ok":1}'
