"""A fake Flower Grid whose nodes answer with whatever content a test gives them (hostile replies).

GridTransport builds real instructions (its ``Message`` is swapped for ``FakeMessage``: flwr's Message needs
a live run context) and decodes the replies with the real codec; only the link is fake."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from flwr.app import MetricRecord, RecordDict

from shared_models.messages import METRICS, RANK, RANK_UNMASKED

_ids = itertools.count(1)


class FakeMessage:
    def __init__(self, content, dst_node_id, message_type) -> None:
        self.content, self.dst, self.message_type = content, dst_node_id, message_type
        self.metadata = type("Meta", (), {"message_id": str(next(_ids)), "reply_to_message_id": ""})()


class FakeReply:
    def __init__(self, to: FakeMessage, content) -> None:
        self.content = content
        self.metadata = type("Meta", (), {"reply_to_message_id": to.metadata.message_id})()

    def has_error(self) -> bool:
        return False


def honest_rank(dst: int, msg: FakeMessage) -> RecordDict:
    return RecordDict({METRICS: MetricRecord({RANK: 1 + dst % 7, RANK_UNMASKED: 1 + dst % 5})})


class HostileGrid:
    """Node ids 1..n; ``train(dst, msg)`` / ``evaluate(dst, msg)`` give each reply's content."""

    def __init__(self, n: int, train: Callable[[int, FakeMessage], RecordDict],
                 evaluate: Callable[[int, FakeMessage], RecordDict] = honest_rank) -> None:
        self.ids, self.answer_train, self.answer_eval = list(range(1, n + 1)), train, evaluate
        self.outstanding: list[FakeMessage] = []

    def get_node_ids(self):
        return self.ids

    def push_messages(self, msgs):
        self.outstanding += msgs
        return [m.metadata.message_id for m in msgs]

    def pull_messages(self, ids):
        done, self.outstanding = self.outstanding, []
        return [FakeReply(m, (self.answer_train if m.message_type == "train" else self.answer_eval)(m.dst, m))
                for m in done]
