"""Message dispatch of Flower's simulation engine, one scan per cycle instead of one per node.

Flower's ``add_messages_to_queue`` (``flwr.server.superlink.fleet.vce.vce_api``) wakes ten times a second and
calls ``state.get_message_ins(node_id, limit=1)`` for *every* registered node; the in-memory link state answers
each call by scanning every stored message. With one SuperNode per device that is nodes x stored messages
per cycle: at 943 devices it kept most of a core busy, taken from the simulated devices (measured with
``benchmarks/bench_overhead.py``). ``dispatch_pending`` asks only the nodes that have an undelivered message
(found in one scan), through the same ``get_message_ins`` call, so expiry checks and delivery marks stay
Flower's own. Where the link state lacks the attributes the scan reads (another Flower version), it falls back
to asking every node, i.e. Flower's behaviour.

``faster_dispatch()`` installs it for the duration of an in-process simulation.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Collection, Iterator
from queue import Queue
from typing import Any

log = logging.getLogger(__name__)
CYCLE_S = 0.1  # Flower's own polling interval


def nodes_with_pending(state: Any, nodes: Collection[int]) -> list[int]:
    """Nodes (of ``nodes``) with at least one undelivered message; all of them when the scan is impossible."""
    store, lock = getattr(state, "message_ins_store", None), getattr(state, "lock", None)
    if not isinstance(store, dict) or lock is None:
        return list(nodes)
    with lock:
        pending = {m.metadata.dst_node_id for m in list(store.values()) if m.metadata.delivered_at == ""}
    return sorted(n for n in pending if n in nodes)


def dispatch_pending(state: Any, queue: Queue, nodes_mapping: dict, f_stop: threading.Event) -> None:
    """Drop-in for Flower's ``add_messages_to_queue``: same calls, only for nodes that have work."""
    nodes = frozenset(nodes_mapping)  # fixed for the simulation: built once, not every cycle
    while not f_stop.is_set():
        for node_id in nodes_with_pending(state, nodes):
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
        f_stop.wait(CYCLE_S)


@contextlib.contextmanager
def faster_dispatch() -> Iterator[bool]:
    """Use :func:`dispatch_pending` in Flower's simulation engine; yields False (and changes nothing) when
    this Flower has no ``add_messages_to_queue`` to replace."""
    try:
        from flwr.server.superlink.fleet.vce import vce_api
    except ImportError:
        yield False
        return
    original = getattr(vce_api, "add_messages_to_queue", None)
    if original is None:
        log.warning("this Flower has no vce_api.add_messages_to_queue: keeping its own message dispatch")
        yield False
        return
    vce_api.add_messages_to_queue = dispatch_pending
    try:
        yield True
    finally:
        vce_api.add_messages_to_queue = original
