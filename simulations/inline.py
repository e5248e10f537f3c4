"""Inline transport: devices are called as plain functions in this process (tests, debugging, profiling).

Same device code as the Flower ClientApp; only the message transport is skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from client.round import evaluate_round, train_round
from client.store import DeviceStore
from server.loop import TrainReply
from shared_models.config import Config
from simulations.devices import Population, device_state_dir

log = logging.getLogger(__name__)


class InlineTransport:
    """Node id i is device i of the population."""

    def __init__(self, cfg: Config, pop: Population, run_dir: Path, keys_dir: str = "") -> None:
        self.cfg, self.pop, self.run_dir, self.keys_dir = cfg, pop, Path(run_dir), keys_dir

    def __enter__(self) -> "InlineTransport":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def node_ids(self) -> list[int]:
        return list(range(len(self.pop.devices)))

    def _store(self, node: int) -> DeviceStore:
        return DeviceStore(device_state_dir(self.run_dir, self.pop.devices[node].device_id))

    def train(self, round_id: int, nodes: list[int], received) -> list[TrainReply]:
        replies = []
        for node in nodes:
            try:
                replies.append(train_round(data=self.pop.devices[node], store=self._store(node), received=received,
                                           cfg=self.cfg, round_id=round_id, node=node, text=self.pop.text,
                                           max_interactions=self.pop.max_interactions, keys_dir=self.keys_dir))
            except Exception as exc:  # a bad device never stops the round
                log.exception("device %s failed", self.pop.devices[node].device_id)
                replies.append(TrainReply(node=node, error=f"{type(exc).__name__}: {exc}"))
        return replies

    def evaluate(self, round_id: int, nodes: list[int], received, stage: str) -> dict[int, int]:
        ranks = {}
        for node in nodes:
            try:
                ranks[node] = evaluate_round(data=self.pop.devices[node], store=self._store(node), received=received,
                                             cfg=self.cfg, stage=stage, text=self.pop.text, keys_dir=self.keys_dir)
            except Exception:
                log.exception("device %s failed to evaluate", self.pop.devices[node].device_id)
        return ranks
