"""One masked aggregation round, both roles, as pure functions over the messages (no transport).

Stages (devices ``u``, neighbours ``N(u)`` from ``seed_sharing.neighbour_graph``, threshold ``t``):

0. advertise  device: ``MaskDevice.start(u)`` -> public channel and mask keys (2 x 32 bytes) to the server.
1. share      device: ``share_tokens`` -> one encrypted share pair per neighbour (via the server).
2. upload     device: ``upload_mask`` -> the mask for its c0 (``encrypt_update(..., c0_mask=...)``),
              pairing with the neighbours whose tokens it received; the server adds the masked updates
              (``Aggregator``, unchanged).
3. unmask     the server tells each holder which owners' updates are in the sum and which neighbours dropped;
              the holder answers with ``unmask_reply``; the server ``residual_from_shares`` (>= t shares per
              owner) and ``unmask_aggregate`` subtracts the residual mask from the encrypted sum.

A device that drops after stage 1 has its pair masks removed from its neighbours' updates (its mask key is
reconstructed); one that drops after its upload is in the sum with its self mask reconstructed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from . import masking
from . import payload as wire
from . import seed_sharing as sharing
from .ckks import parse_payload
from .context import check_matches, context_params
from .he_config import HEConfig


@dataclasses.dataclass(frozen=True)
class PublicKeys:
    """A device's round keys as advertised: channel and mask X25519 public keys, 32 raw bytes each."""

    channel: bytes
    mask: bytes


@dataclasses.dataclass
class MaskDevice:
    """A device's secrets for one round (never sent, except as shares)."""

    own_id: int
    channel_key: X25519PrivateKey
    mask_key: X25519PrivateKey
    self_seed: bytes
    held: dict[int, sharing.SharePair] = dataclasses.field(default_factory=dict)

    @classmethod
    def start(cls, own_id: int) -> "MaskDevice":
        return cls(own_id, X25519PrivateKey.generate(), X25519PrivateKey.generate(),
                   os.urandom(masking.SELF_SEED_BYTES))

    @property
    def public(self) -> PublicKeys:
        return PublicKeys(sharing.raw_public(self.channel_key), sharing.raw_public(self.mask_key))

    def share_tokens(self, neighbours: Mapping[int, PublicKeys], *, threshold: int,
                     context: bytes) -> dict[int, bytes]:
        """Stage 1: encrypted share pairs for every neighbour (``neighbours`` includes this device)."""
        shares = sharing.make_shares(mask_key=self.mask_key, self_seed=self.self_seed, threshold=threshold,
                                     holders=list(neighbours))
        return {v: sharing.seal_share(shares[v], channel_key=self.channel_key,
                                      recipient_public=neighbours[v].channel, context=context,
                                      sender=self.own_id, recipient=v)
                for v in neighbours}

    def receive_tokens(self, tokens: Mapping[int, bytes], senders: Mapping[int, PublicKeys], *,
                       context: bytes) -> None:
        """Stage 1 (receiving end): open and keep the share pairs sent to this device."""
        for sender, token in tokens.items():
            self.held[sender] = sharing.open_share(token, channel_key=self.channel_key,
                                                   sender_public=senders[sender].channel, context=context,
                                                   sender=sender, recipient=self.own_id)

    def upload_mask(self, neighbours: Mapping[int, PublicKeys], *, context: bytes, n_ciphertexts: int,
                    degree: int, modulus: int) -> np.ndarray:
        """Stage 2: the c0 mask, pairing with every other neighbour that completed stage 1."""
        seeds = {v: masking.pair_seed(self.mask_key, X25519PublicKey.from_public_bytes(keys.mask),
                                      context=context, own_id=self.own_id, peer_id=v)
                 for v, keys in neighbours.items() if v != self.own_id}
        return masking.device_mask(own_id=self.own_id, self_seed=self.self_seed, pair_seeds=seeds,
                                   n_ciphertexts=n_ciphertexts, degree=degree, modulus=modulus)

    def unmask_reply(self, *, in_sum: set[int], dropped: set[int]) -> dict[int, bytes]:
        """Stage 3: seed shares of owners in the sum, key shares of dropped owners (never both)."""
        return sharing.reveal(self.held, in_sum=in_sum, dropped=dropped)


def residual_from_shares(replies: Mapping[int, Mapping[int, bytes]], *, graph: Mapping[int, frozenset[int]],
                         keys: Mapping[int, PublicKeys], in_sum: set[int], dropped: set[int], threshold: int,
                         context: bytes, n_ciphertexts: int, degree: int, modulus: int,
                         seed_commits: Mapping[int, bytes] | None = None) -> np.ndarray:
    """Server, stage 3: the mask left in the sum of the ``in_sum`` updates, from the holders' ``replies``.

    ``dropped``: devices that completed stage 1 (their neighbours masked with them) but whose update is not
    in the sum. A rebuilt mask key must match the advertised public key and, with ``seed_commits``, a rebuilt
    self seed its commitment; other subsets of the shares are tried when some holders sent wrong ones.
    ValueError when an owner has fewer than ``threshold`` shares or no subset rebuilds a matching secret."""
    by_owner: dict[int, list[bytes]] = {}
    for reply in replies.values():
        for owner, share in reply.items():
            by_owner.setdefault(owner, []).append(share)

    def seed_ok(u: int):
        return lambda seed: seed_commits is None or masking.seed_commitment(seed) == seed_commits.get(u)

    def key_ok(d: int):
        def ok(raw: bytes) -> bool:
            try:
                return sharing.raw_public(X25519PrivateKey.from_private_bytes(raw)) == keys[d].mask
            except ValueError:
                return False
        return ok

    self_seeds = {u: sharing.combine_checked(by_owner.get(u, []), threshold=threshold, valid=seed_ok(u))
                  for u in in_sum}
    pairs: list[tuple[int, int, bytes]] = []
    for d in sorted(dropped):
        try:
            raw = sharing.combine_checked(by_owner.get(d, []), threshold=threshold, valid=key_ok(d))
        except ValueError as exc:
            raise ValueError(f"shares of device {d} rebuild no key matching its advertised one ({exc})") from None
        mask_key = X25519PrivateKey.from_private_bytes(raw)
        for u in sorted(graph[d] & in_sum):
            seed = masking.pair_seed(mask_key, X25519PublicKey.from_public_bytes(keys[u].mask),
                                     context=context, own_id=d, peer_id=u)
            pairs.append((u, d, seed))
    return masking.residual_mask(survivor_self_seeds=self_seeds, dropped_pair_seeds=pairs,
                                 n_ciphertexts=n_ciphertexts, degree=degree, modulus=modulus)


def unmask_aggregate(public_ctx: ts.Context, summed: bytes, residual: np.ndarray, *, cfg: HEConfig) -> bytes:
    """The encrypted sum with the residual mask removed from its c0 (no secret key involved)."""
    params = context_params(public_ctx)
    check_matches(params, cfg)
    header, _, (c0, c1) = parse_payload(params, summed, kind=wire.KIND_AGGREGATE, cfg=cfg)
    c0 = masking.remove_mask(c0, residual, modulus=params.modulus)
    return wire.encode(header, [c0, c1])
