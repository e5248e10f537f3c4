"""Server half of pairwise masking (``he.masking``): routes the devices' key exchange, then removes the masks
left in the round's encrypted sum. It never holds a device secret; what it learns is in docs/threat-model.md
section 6.

Per round (``prepare`` before the TRAIN messages, ``unmask`` once the updates are summed):

1. ``mask-keys``: each sampled device gets its index and a fresh attempt nonce and answers with two X25519
   public keys and a commitment to its self seed, signed by its enrolled Ed25519 key (checked here against the
   device's verify key, and against the node the device is bound to, so no device can advertise keys for
   another).
2. ``mask-shares``: each device that advertised gets its neighbours' keys (the SecAgg+ ring graph drawn from
   the round context) and answers with one sealed share pair per neighbour.
3. ``mask-receive``: each device that sealed gets the pairs addressed to it and the keys of the neighbours that
   sealed (those it masks with). Devices that acknowledge are the ones asked to train.
4. after the round's updates are summed, ``mask-unmask``: every device still reachable gets the sets of
   devices in the sum and of those that sealed but are not in it (dropped, rejected, refused, failed); it
   answers with one share per owner. With at least ``threshold`` shares per owner the residual mask is rebuilt
   (each secret checked against its commitment or public key, other subsets of the shares tried when a holder
   lied) and subtracted from the sum's c0 (``mask_round.unmask_aggregate``); otherwise the round releases
   nothing.

Every reply is parsed by ``mask_wire`` and a bad one only drops its device from the round.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shared_models.config import Config, HESection
from shared_models.crypto import ServerKeys
from shared_models.crypto import mask_wire as wire
from shared_models.crypto import seed_sharing as sharing
from shared_models.crypto.context import context_params
from shared_models.crypto.payload import parse_header
from shared_models.crypto.mask_round import PublicKeys, residual_from_shares, unmask_aggregate
from shared_models.crypto.signing import verify_mask_keys

log = logging.getLogger(__name__)

# (round id, stage, request bytes by node) -> reply bytes by node; a node that failed or did not answer is absent
Exchange = Callable[[int, str, dict[int, bytes]], dict[int, bytes]]


class MaskError(RuntimeError):
    """The round's masks cannot be removed (too few shares, too few devices): the sum is not released."""


@dataclass
class MaskRound:
    round_id: int
    context: bytes
    keys: dict[int, PublicKeys] = field(default_factory=dict)  # node -> advertised round keys
    device_of: dict[int, str] = field(default_factory=dict)  # node -> device id that signed them
    commits: dict[int, bytes] = field(default_factory=dict)  # node -> commitment to its self seed
    graph: dict[int, frozenset[int]] = field(default_factory=dict)
    sealed: set[int] = field(default_factory=set)  # nodes whose share pairs went out: everyone's masks pair with them
    ready: set[int] = field(default_factory=set)  # nodes that acknowledged their pairs: asked to train


class MaskCoordinator:
    def __init__(self, exchange: Exchange, keys: ServerKeys, *, he: HESection, run_id: str,
                 node_of: dict[str, int] | None = None) -> None:
        """``node_of``: the device -> node binding the aggregation keeps (shared, so both check the same)."""
        self.exchange, self.keys, self.he, self.run_id = exchange, keys, he, run_id
        self.node_of = node_of if node_of is not None else {}
        self.round: MaskRound | None = None
        # over the run: rounds set up, sums unmasked, sampled devices left out by the exchange, seconds spent
        self.stats = {"rounds": 0, "unmasked": 0, "not_ready": 0, "prepare_s": 0.0, "unmask_s": 0.0,
                      "reply_bytes": 0, "device_rounds": 0}

    def summary(self) -> dict:
        """For metrics.json: the settings, the counts, and the bytes a device sends for its masks per round (on
        top of its update)."""
        per = self.stats["reply_bytes"] / self.stats["device_rounds"] if self.stats["device_rounds"] else 0.0
        return {"enabled": True, "neighbours": self.he.mask_neighbours, "threshold": self.he.mask_threshold,
                **self.stats, "mask_bytes_per_device_round": per}

    def _exchange(self, round_id: int, stage: str, requests: dict[int, bytes]) -> dict[int, bytes]:
        replies = self.exchange(round_id, stage, requests)
        self.stats["reply_bytes"] += sum(len(b) for b in replies.values() if isinstance(b, (bytes, bytearray)))
        return replies

    # -- stages 1-3 -------------------------------------------------------------------------------------
    def prepare(self, round_id: int, nodes: list[int]) -> tuple[list[int], dict[int, str]]:
        """(nodes ready to send a masked update, why each other node is not)."""
        t0 = time.perf_counter()
        ready, failed = self._prepare(round_id, nodes)
        self.stats["rounds"] += 1
        self.stats["not_ready"] += len(failed)
        self.stats["device_rounds"] += len(ready)
        self.stats["prepare_s"] += time.perf_counter() - t0
        return ready, failed

    def _prepare(self, round_id: int, nodes: list[int]) -> tuple[list[int], dict[int, str]]:
        attempt = os.urandom(wire.ATTEMPT_BYTES)
        rnd = self.round = MaskRound(round_id, wire.round_context(self.run_id, round_id, attempt))
        failed: dict[int, str] = {}
        replies = self._exchange(round_id, wire.STAGE_KEYS, {n: wire.KeysRequest(n, attempt).encode() for n in nodes})
        for n in nodes:
            why = self._check_keys(rnd, n, replies.get(n))
            if why:
                failed[n] = f"mask keys: {why}"
        t = self.he.mask_threshold
        if len(rnd.keys) <= t:
            return [], {n: failed.get(n, f"masking: {len(rnd.keys)} devices advertised keys, need more than the "
                                            f"threshold {t}") for n in nodes}
        k = min(self.he.mask_neighbours, len(rnd.keys) - (len(rnd.keys) + 1) % 2)  # odd, at most the devices
        rnd.graph = sharing.neighbour_graph(sorted(rnd.keys), num_shares=k, graph_seed=rnd.context)
        requests = {n: wire.SharesRequest(t, {v: rnd.keys[v] for v in rnd.graph[n]}).encode() for n in rnd.keys}
        replies = self._exchange(round_id, wire.STAGE_SHARES, requests)
        tokens: dict[int, dict[int, bytes]] = {}
        for n in sorted(rnd.keys):
            try:
                msg = wire.TokensMessage.decode(_present(replies.get(n)))
                if set(msg.tokens) != set(rnd.graph[n]) or msg.senders:
                    raise wire.MaskWireError("tokens must be addressed to exactly the device's neighbours")
                tokens[n] = msg.tokens
            except ValueError as exc:
                failed[n] = f"mask shares: {exc}"
        rnd.sealed = set(tokens)
        requests = {}
        for u in sorted(rnd.sealed):
            peers = rnd.graph[u] & rnd.sealed
            requests[u] = wire.TokensMessage({v: tokens[v][u] for v in peers}, {v: rnd.keys[v] for v in peers}).encode()
        replies = self._exchange(round_id, wire.STAGE_RECEIVE, requests)
        for u in sorted(rnd.sealed):
            if replies.get(u) == wire.ACK:
                rnd.ready.add(u)
            else:
                failed[u] = "mask receive: no acknowledgement" if u not in replies else "mask receive: malformed reply"
        log.info("round %d: masking set up for %d of %d devices (%d sealed shares)", round_id, len(rnd.ready),
                 len(nodes), len(rnd.sealed))
        return sorted(rnd.ready), failed

    def _check_keys(self, rnd: MaskRound, node: int, blob: bytes | None) -> str:
        try:
            msg = wire.KeysReply.decode(_present(blob))
        except ValueError as exc:
            return str(exc)
        verify_key = self.keys.device_verify_keys.get(msg.device_id)
        if verify_key is None:
            return f"unknown device {msg.device_id[:80]!r}"
        if self.node_of.get(msg.device_id, node) != node:
            return f"device {msg.device_id} speaks from node {node}, registered on node {self.node_of[msg.device_id]}"
        if msg.device_id in rnd.device_of.values():
            return f"device {msg.device_id} already advertised keys this round"
        if not verify_mask_keys(verify_key, msg.signature, run_id=self.run_id, round_id=rnd.round_id,
                                device_id=msg.device_id, context=rnd.context, channel=msg.keys.channel,
                                mask=msg.keys.mask, commit=msg.seed_commit):
            return "bad signature on the round keys"
        rnd.keys[node], rnd.device_of[node], rnd.commits[node] = msg.keys, msg.device_id, msg.seed_commit
        return ""

    def check_update(self, node: int, device_id: str) -> str:
        """'' if an update from ``node`` signed by ``device_id`` may enter this round's masked sum."""
        rnd = self.round
        if rnd is None or node not in rnd.ready:
            return f"node {node} did not complete this round's mask exchange"
        if rnd.device_of[node] != device_id:
            return f"update signed by {device_id}, mask keys by {rnd.device_of[node]}"
        return ""

    # -- stage 4 -------------------------------------------------------------------------------------------
    def unmask(self, summed: bytes, in_sum: set[int]) -> bytes:
        """The encrypted sum of the ``in_sum`` updates with the masks removed (MaskError if it cannot be)."""
        t0 = time.perf_counter()
        try:
            out = self._unmask(summed, in_sum)
        finally:
            self.stats["unmask_s"] += time.perf_counter() - t0
        self.stats["unmasked"] += 1
        return out

    def _unmask(self, summed: bytes, in_sum: set[int]) -> bytes:
        rnd = self.round
        if rnd is None:
            raise MaskError("no masked round in progress")
        if not in_sum <= rnd.ready:
            raise MaskError(f"updates from nodes {sorted(in_sum - rnd.ready)[:5]} that never joined the masking")
        dropped = rnd.sealed - in_sum
        request = wire.UnmaskRequest(set(in_sum), dropped).encode()
        replies = self._exchange(rnd.round_id, wire.STAGE_UNMASK, {v: request for v in sorted(rnd.ready)})
        shares: dict[int, dict[int, bytes]] = {}
        for v, blob in replies.items():
            try:  # a holder's share counts only for owners it is a neighbour of
                got = wire.SharesReply.decode(blob).shares
            except ValueError as exc:
                log.warning("round %d: unmask reply of node %d rejected: %s", rnd.round_id, v, exc)
                continue
            shares[v] = {o: s for o, s in got.items() if v in rnd.graph.get(o, ())}
        params = context_params(self.keys.context)
        try:
            residual = residual_from_shares(shares, graph=rnd.graph, keys=rnd.keys, in_sum=set(in_sum),
                                            dropped=dropped, threshold=self.he.mask_threshold, context=rnd.context,
                                            n_ciphertexts=self.keys.he.n_ciphertexts(_n_params(summed)),
                                            degree=params.degree, modulus=params.modulus, seed_commits=rnd.commits)
        except ValueError as exc:
            raise MaskError(f"the masks cannot be removed: {exc} ({len(replies)} of {len(rnd.ready)} devices "
                            "answered the unmask request)") from None
        return unmask_aggregate(self.keys.context, summed, residual, cfg=self.keys.he)


def attach_masks(cfg: Config, aggregation, transport) -> None:
    """``he.masking``: the aggregation removes pairwise masks it routes through ``transport.exchange``."""
    if not cfg.he.masking:
        return
    exchange = getattr(transport, "exchange", None)
    if exchange is None:
        raise ValueError(f"he.masking = true needs a transport that can route the mask exchange; "
                         f"{type(transport).__name__} cannot")
    aggregation.masks = MaskCoordinator(exchange, aggregation.keys, he=cfg.he, run_id=aggregation.run_id,
                                        node_of=aggregation.node_of)


def _present(blob: bytes | None) -> bytes:
    if blob is None:
        raise wire.MaskWireError("no reply")
    return blob


def _n_params(summed: bytes) -> int:
    return parse_header(summed).n_params
