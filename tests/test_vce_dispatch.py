"""The simulation engine's dispatch asks only nodes with undelivered messages, through Flower's own call."""

from __future__ import annotations

import threading
from queue import Queue
from types import SimpleNamespace

from simulations.backends import dispatch as vce_dispatch
from simulations.backends.dispatch import dispatch_pending, faster_dispatch, nodes_with_pending


class _State:
    """The slice of Flower's InMemoryLinkState that dispatch uses."""

    def __init__(self, pending: dict[str, int]) -> None:
        self.lock = threading.RLock()
        self.message_ins_store = {mid: SimpleNamespace(metadata=SimpleNamespace(dst_node_id=n, delivered_at=""))
                                  for mid, n in pending.items()}
        self.asked: list[int] = []

    def get_message_ins(self, node_id: int, limit: int):
        self.asked.append(node_id)
        for mid, m in self.message_ins_store.items():
            if m.metadata.dst_node_id == node_id and m.metadata.delivered_at == "":
                m.metadata.delivered_at = "now"
                return [mid]
        return []


def test_only_nodes_with_undelivered_messages_are_asked_and_every_message_is_queued():
    state = _State({"a": 5, "b": 9, "c": 5, "d": 5000})  # node 5000 is not one of ours
    nodes = {n: i for i, n in enumerate(range(1, 1001))}
    assert nodes_with_pending(state, nodes) == [5, 9]
    queue: Queue = Queue()
    stop = threading.Event()
    worker = threading.Thread(target=dispatch_pending, args=(state, queue, nodes, stop))
    worker.start()
    got = [queue.get(timeout=5) for _ in range(3)]
    stop.set()
    worker.join(timeout=5)
    assert sorted(got) == ["a", "b", "c"]  # node 5's second message in a later cycle, as Flower does (limit=1)
    assert set(state.asked) == {5, 9} and len(state.asked) < 20  # never the 998 idle nodes


def test_a_state_without_the_scanned_attributes_falls_back_to_asking_every_node():
    nodes = [3, 1, 2]
    assert nodes_with_pending(SimpleNamespace(get_message_ins=None), nodes) == nodes


def test_installed_only_inside_the_context():
    from flwr.server.superlink.fleet.vce import vce_api

    original = vce_api.add_messages_to_queue
    with faster_dispatch() as installed:
        assert installed and vce_api.add_messages_to_queue is vce_dispatch.dispatch_pending
    assert vce_api.add_messages_to_queue is original
