"""Inline transport: devices are called as plain functions in this process (tests, debugging, profiling).

Same device code as the Flower ClientApp; only the message transport is skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from client.device import device_evaluate, device_train
from client.store import DeviceStore
from server.loop import TrainReply
from shared_models.config import Config
from simulations.devices import Population, device_state_dir

log = logging.getLogger(__name__)


class InlineTransport:
    """Node id i is device i of the population."""

    def __init__(self, cfg: Config, pop: Population, run_dir: Path) -> None:
        self.cfg, self.pop, self.run_dir = cfg, pop, Path(run_dir)

    def __enter__(self) -> "InlineTransport":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def node_ids(self) -> list[int]:
        return list(range(len(self.pop.devices)))

    def _store(self, node: int) -> DeviceStore:
        return DeviceStore(device_state_dir(self.run_dir, self.pop.devices[node].device_id))

    def train(self, round_id: int, nodes: list[int], shared: dict[str, np.ndarray]) -> list[TrainReply]:
        replies = []
        for node in nodes:
            try:
                out = device_train(data=self.pop.devices[node], store=self._store(node), global_shared=shared,
                                   cfg=self.cfg, round_id=round_id, text=self.pop.text,
                                   max_interactions=self.pop.max_interactions)
                replies.append(TrainReply(node=node, shared=out.shared if not out.refused else None,
                                          num_examples=out.num_examples, refused=out.refused,
                                          metrics=out.metrics))
            except Exception as exc:  # a bad device never stops the round
                log.exception("device %s failed", self.pop.devices[node].device_id)
                replies.append(TrainReply(node=node, error=f"{type(exc).__name__}: {exc}"))
        return replies

    def evaluate(self, round_id: int, nodes: list[int], shared: dict[str, np.ndarray], stage: str) -> dict[int, int]:
        ranks = {}
        for node in nodes:
            try:
                ranks[node] = device_evaluate(data=self.pop.devices[node], store=self._store(node),
                                              global_shared=shared, cfg=self.cfg, stage=stage, text=self.pop.text)
            except Exception:
                log.exception("device %s failed to evaluate", self.pop.devices[node].device_id)
        return ranks
