"""The server loop's transport over a Flower Grid (Message API): one message per sampled node."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
from flwr.app import Message, MessageType

from shared_models.config import Config
from shared_models.messages import (STAGE_CHECK_SUM, TrainReply, config_to_json, decode_identity, decode_mask_reply,
                                    decode_rank, decode_sum_check, decode_train_reply, instruction_builder)

log = logging.getLogger(__name__)
POLL_S = 0.5  # waiting for nodes to register
PULL_S = 0.02  # polling for replies while messages are in flight


class GridTransport:
    """Node index i is the node of the i-th device of ``device_order`` (each node names its device when asked,
    so the mapping is the same on every launch although Flower's node ids are not); without ``device_order``,
    or for nodes that do not name a known device, the order of their opaque uint64 ids."""

    def __init__(self, grid, cfg: Config, run_dir: str, *, expected_nodes: int, timeout_s: float | None,
                 keys_dir: str = "", node_wait_s: float = 120.0, alive: Callable[[], bool] | None = None,
                 max_in_flight: int = 0, broadcast_dir: str = "", run_id: str = "",
                 device_order: list[str] | None = None) -> None:
        """``alive``: False once the job this loop serves is gone (an in-process simulation whose engine
        crashed): the loop then stops instead of running rounds nobody answers into the run directory.

        ``max_in_flight``: messages outstanding at once (0 = all of a round at once, right for real devices,
        which run in parallel). Flower's simulation engine scans every undelivered message for every node
        ten times a second (quadratic in the messages outstanding), and each message holds its own copy of
        the global state, so an in-process simulation keeps only a few per concurrent device in flight.

        ``broadcast_dir``: publish each round's global state there once (``shared_models/broadcast.py``) and
        send its SHA-256 instead of the bytes; only where every device shares this disk (in-process
        simulations). Empty: the state travels in every message (deployment)."""
        if max_in_flight < 0:
            raise ValueError(f"max_in_flight must be >= 0, got {max_in_flight}")
        self.grid, self.cfg, self.run_dir, self.keys_dir = grid, cfg, str(run_dir), keys_dir
        self.alive = alive
        self.max_in_flight = max_in_flight
        self.broadcast_dir = broadcast_dir
        self.run_id = run_id  # sent in every instruction; devices sign it (server/run_id.py)
        self.timeout_s = timeout_s
        self._config_json = config_to_json(cfg)
        self.prior = None  # the released popularity prior: sent with every instruction once set
        self._ids = self._wait_for_nodes(expected_nodes, node_wait_s)
        if device_order:
            self._ids = self._order_by_identity(device_order)

    def __enter__(self) -> "GridTransport":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _wait_for_nodes(self, expected: int, wait_s: float) -> list[int]:
        deadline = time.monotonic() + wait_s
        while True:
            ids = sorted(int(i) for i in self.grid.get_node_ids())
            if len(ids) >= expected or time.monotonic() > deadline:
                if len(ids) < expected:
                    log.warning("only %d of %d expected nodes registered; carrying on", len(ids), expected)
                return ids
            time.sleep(POLL_S)

    def _order_by_identity(self, device_order: list[str]) -> list[int]:
        """Ask every node which device it is; known devices first, in ``device_order``, then the rest."""
        replies = self._send(list(range(len(self._ids))), self._content_fn(0, None, "identify"), MessageType.QUERY)
        position, claimed = {d: i for i, d in enumerate(device_order)}, {}
        for n in sorted(replies):
            msg = replies[n]
            try:
                if msg.has_error():
                    raise ValueError(f"code {msg.error.code}: {_short(msg.error.reason)}")
                device = decode_identity(msg)
            except Exception as exc:  # hostile or old node: it keeps an index after the known devices
                log.warning("node %d did not identify itself: %s", self._ids[n], _short(str(exc)))
                continue
            if device not in position or device in claimed:
                log.warning("node %d names %s device %r: placed after the known devices", self._ids[n],
                            "an unknown" if device not in position else "an already claimed", device[:80])
                continue
            claimed[device] = self._ids[n]
        known = [claimed[d] for d in device_order if d in claimed]
        rest = sorted(set(self._ids) - set(known))
        if rest:
            log.warning("%d of %d nodes are not mapped to a known device", len(rest), len(self._ids))
        return known + rest

    def node_ids(self) -> list[int]:
        return list(range(len(self._ids)))

    def _send(self, nodes: list[int], content_fn, message_type: str, *,
              per_node: Callable[[int], object] | None = None) -> dict[int, Message]:
        """Replies by node index; nodes that do not answer before ``timeout_s`` are missing. Every node's message
        content is ``content_fn()``, or ``per_node(n)`` when given."""
        if self.alive is not None and not self.alive():
            raise RuntimeError(f"the simulation job of {self.run_dir} has ended (engine crashed or stopped): "
                               "stopping this server loop")
        window = self.max_in_flight or len(nodes)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        pending, in_flight, replies = list(reversed(nodes)), {}, {}
        while pending or in_flight:
            batch = []
            while pending and len(in_flight) + len(batch) < window:
                n = pending.pop()
                content = content_fn() if per_node is None else per_node(n)
                batch.append((n, Message(content, dst_node_id=self._ids[n], message_type=message_type)))
            if batch:
                pushed = {str(i) for i in self.grid.push_messages([m for _, m in batch]) if i}
                for n, m in batch:  # a message the link refused gets no reply: that node counts as dropped
                    if str(m.metadata.message_id) in pushed:
                        in_flight[str(m.metadata.message_id)] = n
            for r in self.grid.pull_messages(list(in_flight)):
                n = in_flight.pop(str(r.metadata.reply_to_message_id), None)
                if n is not None:
                    replies[n] = r
            if deadline is not None and time.monotonic() > deadline:
                break
            if in_flight:
                time.sleep(PULL_S)
        return replies

    def _content_fn(self, round_id: int, received, stage: str = ""):
        return instruction_builder(self._config_json, received, round_id=round_id, stage=stage, run_dir=self.run_dir,
                                   keys_dir=self.keys_dir, broadcast_dir=self.broadcast_dir, prior=self.prior,
                                   run_id=self.run_id)

    def exchange(self, round_id: int, stage: str, requests: dict[int, bytes]) -> dict[int, bytes]:
        """One masking stage (``server/masks.py``): node n gets ``requests[n]`` in a QUERY; the raw bytes of each
        well-formed answer come back. Failed, silent or malformed nodes are absent (logged)."""
        nodes = sorted(requests)
        build = {n: instruction_builder(self._config_json, requests[n], round_id=round_id, stage=stage,
                                        run_dir=self.run_dir, keys_dir=self.keys_dir, run_id=self.run_id)
                 for n in nodes}
        replies = self._send(nodes, None, MessageType.QUERY, per_node=lambda n: build[n]())
        out = {}
        for n, msg in replies.items():
            try:
                if msg.has_error():
                    raise RuntimeError(f"code {msg.error.code}: {_short(msg.error.reason)}")
                out[n] = decode_mask_reply(msg)
            except Exception as exc:  # a hostile or failed node only leaves the round
                log.warning("node %d: %s answer rejected: %s", n, stage, _short(str(exc)))
        return out

    def train(self, round_id: int, nodes: list[int], shared: dict[str, np.ndarray]) -> list[TrainReply]:
        replies = self._send(nodes, self._content_fn(round_id, shared), MessageType.TRAIN)
        out = []
        for n in nodes:
            msg = replies.get(n)
            if msg is None:
                out.append(TrainReply(node=n, error="no reply (dropped or timed out)"))
            elif msg.has_error():
                out.append(TrainReply(node=n, error=f"code {msg.error.code}: {_short(msg.error.reason)}"))
            else:
                out.append(decode_train_reply(n, msg))
        return out

    def check_sum(self, node: int, blob: bytes) -> bool:
        """Ask the device on ``node`` (a key holder) whether an encrypted sum decrypts (a QUERY message);
        RuntimeError when it does not answer, or answers with an error or a malformed reply."""
        msg = self._send([node], self._content_fn(0, blob, STAGE_CHECK_SUM), MessageType.QUERY).get(node)
        if msg is None:
            raise RuntimeError(f"node {node} did not answer the sum check (dropped or timed out)")
        if msg.has_error():
            raise RuntimeError(f"node {node} failed the sum check: code {msg.error.code}: {_short(msg.error.reason)}")
        try:
            return decode_sum_check(msg)
        except Exception as exc:
            raise RuntimeError(f"node {node}: malformed sum-check answer: {_short(str(exc))}") from None

    def evaluate(self, round_id: int, nodes: list[int], shared: dict[str, np.ndarray],
                 stage: str) -> dict[int, tuple[int, int]]:
        replies = self._send(nodes, self._content_fn(round_id, shared, stage), MessageType.EVALUATE)
        ranks = {}
        for n, msg in replies.items():
            if msg.has_error():
                log.warning("node %d failed to evaluate: %s", n, _short(msg.error.reason))
            else:
                try:
                    ranks[n] = decode_rank(msg)
                except Exception as exc:  # a hostile rank: that node is not evaluated, the run goes on
                    log.warning("node %d: evaluation reply rejected: %s", n, _short(str(exc)))
        return dict(sorted(ranks.items()))  # node order, not arrival order: metrics sum in one order every run


def _short(reason: str, limit: int = 300) -> str:
    lines = [ln for ln in str(reason).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:limit]
