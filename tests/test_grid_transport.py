"""GridTransport: stops a server loop whose in-process simulation has ended (no zombie rounds), and keeps at
most ``max_in_flight`` messages outstanding while every sampled node still gets its message."""

from __future__ import annotations

import pytest

from server.grid_transport import GridTransport
from tests.fed_helpers import tiny_config


class _Message:  # flwr's Message needs a live run context; the transport only reads metadata ids
    count = 0

    def __init__(self, content, dst_node_id, message_type) -> None:
        _Message.count += 1
        self.dst = dst_node_id
        self.metadata = type("Meta", (), {"message_id": str(_Message.count), "reply_to_message_id": ""})()


class _Reply:
    def __init__(self, to: _Message) -> None:
        self.dst = to.dst
        self.metadata = type("Meta", (), {"reply_to_message_id": to.metadata.message_id})()

    def has_error(self) -> bool:
        return False


class _Grid:
    """Answers ``per_pull`` outstanding messages per pull (oldest first); ``answer=False``: nobody answers."""

    def __init__(self, node_ids=(11, 7), *, answer: bool = True, per_pull: int = 1, refuse=()) -> None:
        self.ids, self.answer, self.per_pull, self.refuse = list(node_ids), answer, per_pull, set(refuse)
        self.sent, self.outstanding, self.max_outstanding, self.pushes = 0, [], 0, []

    def get_node_ids(self):
        return self.ids

    def push_messages(self, msgs):
        self.pushes.append(len(msgs))
        ok = [m for m in msgs if m.dst not in self.refuse]
        self.sent += len(ok)
        self.outstanding += ok
        self.max_outstanding = max(self.max_outstanding, len(self.outstanding))
        return [m.metadata.message_id for m in ok]

    def pull_messages(self, ids):
        if not self.answer:
            return []
        done, self.outstanding = self.outstanding[:self.per_pull], self.outstanding[self.per_pull:]
        assert all(m.metadata.message_id in set(ids) for m in done)
        return [_Reply(m) for m in done]


@pytest.fixture(autouse=True)
def _fake_message(monkeypatch):
    monkeypatch.setattr("server.grid_transport.Message", _Message)
    monkeypatch.setattr("server.grid_transport.PULL_S", 0.0)


def test_a_dead_job_stops_the_loop_instead_of_running_unanswered_rounds(tmp_path):
    cfg = tiny_config(tmp_path / "unused.csv")
    state = {"alive": True}
    grid = _Grid(answer=False)
    transport = GridTransport(grid, cfg, str(tmp_path), expected_nodes=2, timeout_s=0.2,
                              alive=lambda: state["alive"])
    assert transport.node_ids() == [0, 1]
    replies = transport.train(1, [0, 1], {})
    assert [r.error.startswith("no reply") for r in replies] == [True, True] and grid.sent == 2
    state["alive"] = False
    with pytest.raises(RuntimeError, match="has ended"):
        transport.train(2, [0, 1], {})
    assert grid.sent == 2  # nothing sent for the dead job


def test_a_window_bounds_the_messages_in_flight_and_every_node_is_served(tmp_path):
    cfg = tiny_config(tmp_path / "unused.csv")
    nodes = list(range(1, 24))
    grid = _Grid(nodes, per_pull=2)
    transport = GridTransport(grid, cfg, str(tmp_path), expected_nodes=len(nodes), timeout_s=5.0, max_in_flight=5)
    replies = transport._send(list(range(len(nodes))), dict, "train")
    assert sorted(replies) == list(range(len(nodes)))
    assert {r.dst for r in replies.values()} == set(nodes)  # each node answered its own message
    assert grid.max_outstanding == 5 and grid.sent == len(nodes)
    assert grid.pushes[0] == 5  # the first push fills the window, later ones refill it


def test_window_zero_sends_the_whole_round_at_once(tmp_path):
    cfg = tiny_config(tmp_path / "unused.csv")
    grid = _Grid(list(range(1, 11)), per_pull=3)
    transport = GridTransport(grid, cfg, str(tmp_path), expected_nodes=10, timeout_s=5.0)
    replies = transport._send(list(range(10)), dict, "train")
    assert len(replies) == 10 and grid.pushes == [10]


def test_a_refused_message_counts_as_a_dropped_node_and_the_rest_complete(tmp_path):
    cfg = tiny_config(tmp_path / "unused.csv")
    grid = _Grid([1, 2, 3, 4], refuse={3})
    transport = GridTransport(grid, cfg, str(tmp_path), expected_nodes=4, timeout_s=5.0, max_in_flight=2)
    replies = transport._send([0, 1, 2, 3], dict, "train")
    assert sorted(replies) == [0, 1, 3] and grid.sent == 3


def test_negative_window_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_in_flight"):
        GridTransport(_Grid(), tiny_config(tmp_path / "u.csv"), str(tmp_path), expected_nodes=2, timeout_s=1.0,
                      max_in_flight=-1)
