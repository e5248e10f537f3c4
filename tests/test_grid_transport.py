"""GridTransport stops a server loop whose in-process simulation has ended (no zombie rounds)."""

from __future__ import annotations

import pytest

from server.grid_transport import GridTransport
from tests.fed_helpers import tiny_config


class _Grid:
    def __init__(self) -> None:
        self.sent = 0

    def get_node_ids(self):
        return [11, 7]

    def send_and_receive(self, msgs, timeout=None):
        self.sent += len(msgs)
        return []  # nobody answers


class _Message:  # flwr's Message needs a live run context; the transport only reads metadata.message_id
    count = 0

    def __init__(self, content, dst_node_id, message_type) -> None:
        _Message.count += 1
        self.metadata = type("Meta", (), {"message_id": str(_Message.count)})()


def test_a_dead_job_stops_the_loop_instead_of_running_unanswered_rounds(tmp_path, monkeypatch):
    monkeypatch.setattr("server.grid_transport.Message", _Message)
    cfg = tiny_config(tmp_path / "unused.csv")
    state = {"alive": True}
    grid = _Grid()
    transport = GridTransport(grid, cfg, str(tmp_path), expected_nodes=2, timeout_s=1.0,
                              alive=lambda: state["alive"])
    assert transport.node_ids() == [0, 1]
    replies = transport.train(1, [0, 1], {})
    assert [r.error.startswith("no reply") for r in replies] == [True, True] and grid.sent == 2
    state["alive"] = False
    with pytest.raises(RuntimeError, match="has ended"):
        transport.train(2, [0, 1], {})
    assert grid.sent == 2  # nothing sent for the dead job
