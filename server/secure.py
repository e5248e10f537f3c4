"""Server side of server-blind aggregation: verify each encrypted update, sum ciphertexts, keep only the sum.

The server holds the PUBLIC CKKS context (no secret key), its own signing key and the devices' Ed25519
verify keys. Per update it checks, in order: the device is registered; the node was sampled this round and
is the node this device has always spoken from; the round id is the current one (no replay); no second
update from the device this round; the signature over (run id, round, device, SHA-256(payload)), so an update
made for another run with the same keys fails; the payload parses under the server context with the number
of ciphertexts and parameters of the server's own model template (never taken from another update).
Anything else is rejected with a logged reason and the round carries on.

A signed, well-formed update can still carry values outside the encoding's range, which makes the sum
undecodable. When the transport lets the server ask a key holder (a device) whether a sum decrypts
(``checker``), the round's sum is confirmed before it is released: if it does not decrypt, the server keeps
the round's individual updates, searches them by group testing over sub-sums (``server/group_testing.py``,
at most ``2 k ceil(log2 n)`` more questions for k bad updates among n), excludes the bad ones (logged as
rejections of the round), confirms the sum of the rest and releases it, or keeps the previous sum when fewer
than ``min_train_nodes`` remain or the rest still does not decrypt. Without a checker, a round with fewer than
``min_train_nodes`` valid updates in which at least ``min_train_nodes`` sampled devices report that the sum
they received does not decrypt goes back to the sum before it (one step, FedAvg only: a user-level running
sum is kept as charged).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shared_models.messages import UNDECODABLE, TrainReply
from server.group_testing import find_defective
from server.masks import MaskCoordinator, MaskError
from shared_models.crypto import (Aggregator, PayloadError, ServerKeys, add_aggregates, payload_sha256,
                                  sum_released, verify_update)

SumChecker = Callable[[int, bytes], bool]  # (key holder's node, aggregate) -> does it decrypt on that device


class NoAnswer(RuntimeError):
    """The key holder did not answer a sum check (unreachable, failed, malformed answer)."""

log = logging.getLogger(__name__)


@dataclass
class SecureRound:
    """One round's verification state and running encrypted sum."""

    round_id: int
    sampled: set[int]
    aggregator: Aggregator
    seen_devices: set[str] = field(default_factory=set)
    undecodable: set[int] = field(default_factory=set)  # sampled nodes that could not decrypt the broadcast sum
    updates: list[tuple[int, bytes]] = field(default_factory=list)  # (node, payload) of each valid update, kept
    # until the round's sum is confirmed
    rejected: list[tuple[int, str]] = field(default_factory=list)
    aggregate_s: float = 0.0


class SecureAggregation:
    """Keeps the latest encrypted global sum; never decrypts (it cannot: no secret key)."""

    def __init__(self, keys: ServerKeys, *, n_params: int, accumulate: bool = False, run_id: str = "",
                 average_last: int = 0) -> None:
        """``accumulate``: keep the running sum over rounds (user-level DP: devices add it to the initial
        model with a fixed denominator) instead of replacing the sum every round (FedAvg of weights).
        ``average_last`` > 0: evaluation and the shipped model are the sum of the last released sums in an
        envelope devices divide by their number (``shared_models/crypto/averaged.py``)."""
        if keys.context.is_private():
            raise ValueError("the server context holds a secret key: refusing to run server-blind aggregation")
        if average_last and not accumulate:  # a sum of FedAvg rounds decodes to a weight-weighted mean
            raise ValueError("average_last needs accumulate (running sums of distributed DP)")
        self.keys, self.n_params, self.accumulate, self.run_id = keys, n_params, accumulate, run_id
        self.expected_count = keys.he.n_ciphertexts(n_params)
        self.latest: bytes | None = None  # the encrypted sum devices decrypt into the global model
        self._before: bytes | None = None  # the sum ``latest`` replaced, while a revert to it is possible
        self._can_revert = False
        self.node_of: dict[str, int] = {}  # device id -> the node it speaks from (bound at first contact)
        self.round: SecureRound | None = None
        self.aggregate_s = 0.0
        self.round_aggregate_s = 0.0
        self.rejected: list[tuple[int, int, str]] = []  # (round, node, reason)
        self.checker: SumChecker | None = None  # asks a key holder whether a sum decrypts (the transport's)
        self.sum_checks = 0  # questions asked of key holders over the run
        self.excluded: list[int] = []  # nodes whose valid-looking update the last round excluded
        self.masks: MaskCoordinator | None = None  # he.masking: pairwise masks on every update (server/masks.py)
        self.average_last = average_last
        self.recent: list[bytes] = []  # the last ``average_last`` released sums, oldest first
        self._average: bytes | None = None  # their envelope, made when first asked for

    # -- the strategy interface used by server.loop.run_rounds --------------------------------------
    def broadcast(self) -> bytes | None:
        return self.latest

    def evaluation_state(self) -> bytes | None:
        """What evaluation, selection, the final test and the shipped model use: the latest sum, or with
        ``average_last`` the envelope of the last released sums (added under encryption, never decrypted)."""
        if not self.average_last or not self.recent:
            return self.latest
        if self._average is None:
            try:
                self._average = sum_released(self.keys.context, self.recent, cfg=self.keys.he)
            except PayloadError as exc:  # capacity; the config check sizes he.max_summands for it
                why = f"cannot add the last {len(self.recent)} released sums ({exc}): the latest sum is evaluated"
                log.error(why)
                round_id = self.round.round_id if self.round is not None else 0
                self.rejected.append((round_id, -1, why))  # in metrics.json: the shipped model is not the average
                self._average = self.latest  # until the next release: asked again, the same answer, said once
        return self._average

    def _remember(self, released: bytes) -> None:
        """Keep the window of released sums in step with ``latest``."""
        if self.average_last:
            self.recent = (self.recent + [released])[-self.average_last:]
            self._average = None

    def begin(self, round_id: int, sampled: list[int]) -> SecureRound:
        self.round = SecureRound(round_id, set(sampled), self._summed([]))
        self.excluded = []
        return self.round

    def prepare(self, round_id: int, nodes: list[int]) -> tuple[list[int], dict[int, str]]:
        """(nodes to ask for an update, why each other sampled node is not asked): all of them without masking;
        with it, those that completed the round's mask exchange."""
        if self.masks is None or not nodes:
            return nodes, {}
        return self.masks.prepare(round_id, nodes)

    def offer(self, rep: TrainReply) -> str:
        assert self.round is not None, "begin() first"
        try:
            reason = self.reject_reason(self.round, rep)
        except Exception as exc:  # a hostile reply must never end the round loop
            reason = f"update could not be checked ({type(exc).__name__}: {str(exc)[:200]})"
        if reason:
            self.round.rejected.append((rep.node, reason))
            self.rejected.append((self.round.round_id, rep.node, reason))
        return reason

    def note_failure(self, rep: TrainReply) -> None:
        """A failed device of this round; one that could not decrypt the broadcast sum counts for a revert."""
        if self.round is not None and rep.node in self.round.sampled and rep.error.startswith(UNDECODABLE):
            self.round.undecodable.add(rep.node)

    def finish(self, *, min_train_nodes: int) -> bool:
        """Replace the global sum if enough valid updates arrived; True when it did."""
        rnd = self.round
        assert rnd is not None, "begin() first"
        ok = rnd.aggregator.n_summands >= min_train_nodes
        unmasked = None
        if ok and self.masks is not None:
            unmasked = self._unmask(rnd)
            ok = unmasked is not None
        elif ok and self.checker is not None:
            ok = self._confirm(rnd, min_train_nodes)
        if not ok and self._can_revert and not self.accumulate and len(rnd.undecodable) >= min_train_nodes:
            log.error("round %d: %d devices cannot decrypt the global sum and no valid update arrived: going back "
                      "to the sum before it", rnd.round_id, len(rnd.undecodable))
            self.latest, self._before, self._can_revert = self._before, None, False
            self.rejected.append((rnd.round_id, -1, "the broadcast sum did not decrypt on "
                                  f"{len(rnd.undecodable)} devices: reverted to the previous sum"))
        if ok:
            t0 = time.perf_counter()
            summed = unmasked if unmasked is not None else rnd.aggregator.to_bytes()
            if self.accumulate and self.latest is not None:
                try:
                    summed = add_aggregates(self.keys.context, self.latest, summed, cfg=self.keys.he)
                except PayloadError as exc:  # capacity of the running sum; config checks make this unlikely
                    log.error("round %d: cannot extend the running sum (%s): keeping the previous one", rnd.round_id, exc)
                    ok, summed = False, self.latest
            if ok:
                self._before, self._can_revert = self.latest, True
            self.latest = summed
            if ok:
                self._remember(summed)
            rnd.aggregate_s += time.perf_counter() - t0
        self.aggregate_s += rnd.aggregate_s
        self.round_aggregate_s = rnd.aggregate_s
        return ok

    # -- removing the masks, confirming a sum before release ----------------------------------------------
    def _unmask(self, rnd: SecureRound) -> bytes | None:
        """The round's sum with its masks removed and confirmed by a key holder; None keeps the previous sum.

        Under masks a sub-sum of some updates cannot be unmasked without revealing the pair masks that hide
        the single updates, so a sum that does not decrypt is not searched: nothing is excluded, nothing is
        released (docs/hostile-devices.md)."""
        t0 = time.perf_counter()
        in_sum = {node for node, _ in rnd.updates}
        try:
            summed = self.masks.unmask(rnd.aggregator.to_bytes(), in_sum)
        except MaskError as exc:
            return self._keep_previous(rnd, str(exc))
        finally:
            rnd.aggregate_s += time.perf_counter() - t0
        if self.checker is None:
            return summed
        holder = min(in_sum)
        try:
            valid = self._ask(holder, summed)
        except NoAnswer as exc:
            return self._keep_previous(rnd, f"the key holder on node {holder} did not answer a sum check ({exc})")
        if not valid:
            return self._keep_previous(rnd, "the unmasked sum does not decrypt; under masks a sub-sum cannot be "
                                       "tested without unmasking single updates, so no update is excluded")
        return summed

    def _ask(self, holder: int, blob: bytes) -> bool:
        """One question to the key holder: does ``blob`` decrypt? NoAnswer when it does not answer."""
        self.sum_checks += 1
        try:
            return bool(self.checker(holder, blob))
        except Exception as exc:
            raise NoAnswer(str(exc)[:200]) from exc

    def _keep_previous(self, rnd: SecureRound, why: str) -> None:
        log.error("round %d: %s: keeping the previous sum", rnd.round_id, why)
        self.rejected.append((rnd.round_id, -1, f"{why}: previous sum kept"))
        return None

    def _summed(self, updates: Sequence[tuple[int, bytes]]) -> Aggregator:
        """An aggregator (the server's own count and shape limits) holding the sum of ``updates``."""
        agg = Aggregator(self.keys.context, expected_count=self.expected_count, cfg=self.keys.he,
                         expected_params=self.n_params)
        for _, payload in updates:
            agg.add(payload)
        return agg

    def _confirm(self, rnd: SecureRound, min_train_nodes: int) -> bool:
        """Ask a key holder whether the round's sum decrypts; if not, find and exclude the updates that break
        it (group testing over sub-sums) and sum the rest. True when ``rnd.aggregator`` holds a sum to release."""
        holder = min(node for node, _ in rnd.updates)  # a device of this round: it holds the key
        t0 = time.perf_counter()
        try:
            return self._search(rnd, min_train_nodes, holder, lambda blob: self._ask(holder, blob))
        except NoAnswer as exc:  # nothing unchecked is released, nobody is excluded on a missing answer
            log.error("round %d: the key holder on node %d did not answer a sum check (%s): keeping the previous "
                      "sum", rnd.round_id, holder, exc)
            self.excluded = []
            self.rejected.append((rnd.round_id, -1, f"the key holder on node {holder} did not answer a sum check "
                                  f"({exc}): previous sum kept"))
            return False
        finally:
            rnd.aggregate_s += time.perf_counter() - t0

    def _search(self, rnd: SecureRound, min_train_nodes: int, holder: int, check: Callable[[bytes], bool]) -> bool:
        asked = self.sum_checks
        if check(rnd.aggregator.to_bytes()):
            return True
        updates = list(rnd.updates)
        search = find_defective(len(updates),
                                lambda group: check(self._summed([updates[i] for i in group]).to_bytes()))
        bad = set(search.defective)
        rest = [u for i, u in enumerate(updates) if i not in bad]
        rest_sum = self._summed(rest) if len(rest) >= min_train_nodes and bad else None
        released = rest_sum is not None and check(rest_sum.to_bytes())
        self.excluded = [updates[i][0] for i in sorted(bad)]  # recorded once every question was answered
        note = (f"its sum did not decrypt on the key holder (node {holder}): excluded after group testing over "
                f"sub-sums ({search.queries} questions for {len(updates)} updates)")
        for node in self.excluded:
            rnd.rejected.append((node, note))
            self.rejected.append((rnd.round_id, node, note))
        if released:
            rnd.aggregator = rest_sum
        else:
            why = (f"{len(rest)} updates remain < min_train_nodes={min_train_nodes}" if len(rest) < min_train_nodes
                   else "the remaining updates still do not decrypt")
            log.error("round %d: the sum does not decrypt and %s: keeping the previous sum", rnd.round_id, why)
            self.rejected.append((rnd.round_id, -1, f"the round's sum did not decrypt and {why}: previous sum kept"))
        log.warning("round %d: sum did not decrypt; excluded the updates of nodes %s after %d questions",
                    rnd.round_id, self.excluded, self.sum_checks - asked)
        return released

    # -- checks ---------------------------------------------------------------------------------------
    def reject_reason(self, rnd: SecureRound, rep: TrainReply) -> str:
        """'' if the update is valid (and add it to the sum), else why it was rejected."""
        if rep.invalid:
            return rep.invalid
        verify_key = self.keys.device_verify_keys.get(rep.device_id)
        if verify_key is None:
            return f"unknown device {rep.device_id!r}"
        if rep.node not in rnd.sampled:
            return f"node {rep.node} was not sampled in round {rnd.round_id}"
        if self.masks is not None and (why := self.masks.check_update(rep.node, rep.device_id)):
            return why
        if self.node_of.get(rep.device_id, rep.node) != rep.node:
            return f"device {rep.device_id} speaks from node {rep.node}, registered on node {self.node_of[rep.device_id]}"
        if rep.round_id != rnd.round_id:
            return f"replayed/stale round id {rep.round_id} (current {rnd.round_id})"
        if rep.device_id in rnd.seen_devices:
            return f"second update from device {rep.device_id} in round {rnd.round_id}"
        if rep.payload is None:
            return "no encrypted payload"
        if not verify_update(verify_key, rep.signature, round_id=rep.round_id, device_id=rep.device_id,
                             payload_sha256=payload_sha256(rep.payload), run_id=self.run_id):
            return "bad signature"
        t0 = time.perf_counter()
        try:
            rnd.aggregator.add(rep.payload)
        except PayloadError as exc:
            return f"payload rejected ({exc.reason}): {exc}"
        finally:
            rnd.aggregate_s += time.perf_counter() - t0
        rnd.updates.append((rep.node, bytes(rep.payload)))
        rnd.seen_devices.add(rep.device_id)
        self.node_of.setdefault(rep.device_id, rep.node)
        return ""
