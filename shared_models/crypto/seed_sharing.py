"""Seed sharing for mask recovery (SecAgg+-style, Bonawitz et al. 2017 / Bell et al. 2020).

Each device has, per round, two X25519 key pairs: a *channel* pair (encrypts the shares it sends to its
neighbours) and a *mask* pair (agrees the pair seeds of ``masking.py``).  It splits two secrets among its
neighbours with threshold ``t`` (pycryptodome's ``Crypto.Protocol.SecretSharing.Shamir`` over GF(2**128),
the primitive under Flower's ``secure_aggregation.crypto.shamir``, called per 16-byte chunk: Flower's
wrapper pads a 32-byte secret to three chunks and starts a thread pool per call, 7.3 ms instead of 4.6 ms
of CPU to combine 8 shares): the raw mask private key (two chunks) and its 16-byte self seed ``b_u``.  At unmasking a
neighbour reveals, for each device it holds shares of, the ``b_u`` share if that device's update is in the
sum and the mask-key share if it is not -- never both for one device, so the server never learns both the
self mask and the pair masks of an update it holds.  Fewer than ``t`` shares carry no information about a
secret (Shamir's threshold property).

Neighbours: the SecAgg+ sparse graph, a ring over a permutation of the sampled ids drawn from a public
``graph_seed``; each device is its own neighbour (it keeps one share, as in Flower) plus
``num_shares // 2`` on each side.  Shares travel through the server encrypted with Fernet (Flower's
``symmetric_encryption``) under HKDF-SHA256 of the two devices' channel-key agreement, bound to the round
``context``; the plaintext names sender and recipient so a share cannot be replayed to another pair.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import struct
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from Crypto.Protocol.SecretSharing import Shamir
from flwr.common.secure_aggregation.crypto import symmetric_encryption

_CHANNEL_LABEL = b"fedinterest/mask-share-channel/v1\0"
_SHARE_HEADER = struct.Struct("<QQHH")  # sender, recipient, len(key share), len(seed share)
_CHUNK = 16  # Shamir shares 16-byte blocks; a share is index (u16) + one 16-byte share per block


@dataclasses.dataclass(frozen=True)
class SharePair:
    """What a holder keeps for one owner: a share of its mask private key and a share of its self seed."""

    key_share: bytes
    seed_share: bytes


def raw_private(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of an X25519 private key."""
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def raw_public(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    """The 32 raw bytes of an X25519 public key (of a private key's public half)."""
    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def neighbour_graph(node_ids: Sequence[int], *, num_shares: int, graph_seed: bytes) -> dict[int, frozenset[int]]:
    """Each id -> its ``num_shares`` neighbours (itself included): a ring over a ``graph_seed``-permutation."""
    ids = sorted(set(int(i) for i in node_ids))
    if len(ids) != len(node_ids):
        raise ValueError("node ids must be distinct")
    if num_shares < 3 or num_shares % 2 == 0:
        raise ValueError(f"num_shares must be odd and >= 3, got {num_shares}")
    n = len(ids)
    if num_shares > n:
        raise ValueError(f"num_shares {num_shares} exceeds the {n} devices")
    rng = np.random.default_rng(np.frombuffer(hashlib.sha256(graph_seed).digest(), dtype="<u4"))
    order = [ids[i] for i in rng.permutation(n)]
    half = num_shares // 2
    return {order[p]: frozenset(order[(p + k) % n] for k in range(-half, half + 1)) for p in range(n)}


def split_secret(secret: bytes, *, threshold: int, n_shares: int) -> list[bytes]:
    """Shamir shares of ``secret`` (a multiple of 16 bytes): share i = index i (u16) | one share per block."""
    if not secret or len(secret) % _CHUNK:
        raise ValueError(f"secret of {len(secret)} bytes: need a positive multiple of {_CHUNK}")
    if not 2 <= threshold <= n_shares:
        raise ValueError(f"threshold {threshold} outside [2, {n_shares} shares]")
    blocks = [Shamir.split(threshold, n_shares, secret[i:i + _CHUNK], ssss=False)
              for i in range(0, len(secret), _CHUNK)]
    return [struct.pack("<H", blocks[0][j][0]) + b"".join(b[j][1] for b in blocks) for j in range(n_shares)]


def make_shares(*, mask_key: X25519PrivateKey, self_seed: bytes, threshold: int,
                holders: Sequence[int]) -> dict[int, SharePair]:
    """Split the mask private key and the self seed, threshold ``threshold``, one share pair per holder."""
    holders = sorted(holders)
    key_shares = split_secret(raw_private(mask_key), threshold=threshold, n_shares=len(holders))
    seed_shares = split_secret(self_seed, threshold=threshold, n_shares=len(holders))
    return {h: SharePair(k, s) for h, k, s in zip(holders, key_shares, seed_shares)}


def _channel(own: X25519PrivateKey, peer_public: bytes, *, context: bytes, a: int, b: int) -> bytes:
    lo, hi = sorted((a, b))
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    info = _CHANNEL_LABEL + struct.pack("<QQI", lo, hi, len(context)) + context
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    return base64.urlsafe_b64encode(key)


def seal_share(share: SharePair, *, channel_key: X25519PrivateKey, recipient_public: bytes, context: bytes,
               sender: int, recipient: int) -> bytes:
    """Encrypt one share pair for ``recipient`` (Fernet under the pair's channel key)."""
    body = (_SHARE_HEADER.pack(sender, recipient, len(share.key_share), len(share.seed_share))
            + share.key_share + share.seed_share)
    key = _channel(channel_key, recipient_public, context=context, a=sender, b=recipient)
    return symmetric_encryption.encrypt(key, body)


def open_share(token: bytes, *, channel_key: X25519PrivateKey, sender_public: bytes, context: bytes,
               sender: int, recipient: int) -> SharePair:
    """Decrypt a share pair sent by ``sender`` to ``recipient``; ValueError if it was made for another pair."""
    key = _channel(channel_key, sender_public, context=context, a=sender, b=recipient)
    try:
        body = symmetric_encryption.decrypt(key, token)
    except Exception as exc:  # Fernet raises InvalidToken
        raise ValueError(f"share from {sender} does not open: {type(exc).__name__}") from None
    s, r, n_key, n_seed = _SHARE_HEADER.unpack_from(body)
    if (s, r) != (sender, recipient) or len(body) != _SHARE_HEADER.size + n_key + n_seed:
        raise ValueError(f"share names ({s} -> {r}), expected ({sender} -> {recipient})")
    start = _SHARE_HEADER.size
    return SharePair(body[start:start + n_key], body[start + n_key:])


def reveal(held: Mapping[int, SharePair], *, in_sum: set[int], dropped: set[int]) -> dict[int, bytes]:
    """A holder's unmasking reply: the seed share of each owner in the sum, the key share of each dropped
    owner; never both for one owner (ValueError if the server lists an owner in both sets)."""
    both = in_sum & dropped
    if both:
        raise ValueError(f"devices {sorted(both)} listed both in the sum and dropped")
    out = {owner: pair.seed_share for owner, pair in held.items() if owner in in_sum}
    out.update({owner: pair.key_share for owner, pair in held.items() if owner in dropped})
    return out


def combine(shares: Sequence[bytes], *, threshold: int) -> bytes:
    """The secret behind ``shares`` (ValueError with fewer than ``threshold`` distinct ones)."""
    distinct = list({s[:2]: s for s in shares}.values())[:threshold]  # the first 2 bytes index the share
    if len(distinct) < threshold:
        raise ValueError(f"{len(distinct)} shares, threshold {threshold}")
    size = len(distinct[0]) - 2
    if size <= 0 or size % _CHUNK or any(len(s) != size + 2 for s in distinct):
        raise ValueError("malformed shares")
    index = [struct.unpack_from("<H", s)[0] for s in distinct]
    return b"".join(Shamir.combine([(i, s[2 + k:2 + k + _CHUNK]) for i, s in zip(index, distinct)], ssss=False)
                    for k in range(0, size, _CHUNK))


MAX_SUBSETS = 64  # t-subsets tried when the first t shares rebuild a secret that fails its check


def combine_checked(shares: Sequence[bytes], *, threshold: int, valid: Callable[[bytes], bool]) -> bytes:
    """The secret behind ``shares`` that passes ``valid`` (its commitment or public key), tolerating wrong or
    malformed shares from some holders: the first ``threshold`` distinct shares, then other ``threshold``-subsets
    (at most ``MAX_SUBSETS``). ValueError when none passes."""
    distinct = list({s[:2]: s for s in shares if len(s) > 2}.values())
    if len(distinct) < threshold:
        raise ValueError(f"{len(distinct)} shares, threshold {threshold}")
    size = max({len(s) for s in distinct}, key=[len(s) for s in distinct].count)  # what most holders sent
    distinct = [s for s in distinct if len(s) == size]
    for subset in itertools.islice(itertools.combinations(distinct, threshold), MAX_SUBSETS):
        try:
            secret = combine(list(subset), threshold=threshold)
        except ValueError:
            continue
        if valid(secret):
            return secret
    raise ValueError(f"no {threshold} of {len(distinct)} shares rebuild a secret that matches its commitment")
