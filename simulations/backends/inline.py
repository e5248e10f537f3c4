"""Inline transport: devices are called as plain functions in this process (tests, debugging, profiling).

Same device round as the Flower ClientApp (``client.round``); only the message transport is skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from client.round import DeviceContext, RoundInput, answer_mask, check_sum, evaluate_round, train_rounds
from client.store import DeviceStore
from server.run_id import run_identity
from shared_models.config import Config
from shared_models.datasets.population import Population
from shared_models.messages import TrainReply
from shared_models.paths import device_state_dir

log = logging.getLogger(__name__)


class InlineTransport:
    """Node id i is device i of the population."""

    def __init__(self, cfg: Config, pop: Population, run_dir: Path, keys_dir: str = "") -> None:
        self.cfg, self.pop, self.run_dir, self.keys_dir = cfg, pop, Path(run_dir), keys_dir
        self.prior = None  # the released popularity prior: given to every device round once set
        self.run_id = run_identity(self.run_dir)  # what a Grid instruction would carry (server/run_id.py)

    def __enter__(self) -> "InlineTransport":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def node_ids(self) -> list[int]:
        return list(range(len(self.pop.devices)))

    def device(self, node: int) -> DeviceContext:
        data = self.pop.devices[node]
        return DeviceContext(data, DeviceStore(device_state_dir(self.run_dir, data.device_id)), self.pop.text,
                             self.pop.max_interactions, self.keys_dir)

    def round_input(self, node: int, round_id: int, received) -> RoundInput:
        return RoundInput(self.device(node), self.cfg, received, round_id, node, prior=self.prior, run_id=self.run_id)

    def train(self, round_id: int, nodes: list[int], received) -> list[TrainReply]:
        return [train_rounds([self.round_input(n, round_id, received)])[0] for n in nodes]

    def exchange(self, round_id: int, stage: str, requests: dict[int, bytes]) -> dict[int, bytes]:
        """One masking stage (``server/masks.py``): each device's answer; a device that refuses is absent."""
        out = {}
        for node, request in requests.items():
            try:
                out[node] = answer_mask(self.round_input(node, round_id, None), stage, request)
            except Exception as exc:  # a refusing device only leaves the round
                log.warning("device %s refused %s: %s", self.pop.devices[node].device_id, stage, exc)
        return out

    def check_sum(self, node: int, blob: bytes) -> bool:
        """Ask the device on ``node`` (a key holder) whether an encrypted sum decrypts."""
        return check_sum(self.cfg, self.keys_dir, self.pop.devices[node].device_id, blob)

    def evaluate(self, round_id: int, nodes: list[int], received, stage: str) -> dict[int, tuple[int, int]]:
        ranks = {}
        for node in nodes:
            try:
                ranks[node] = evaluate_round(self.round_input(node, round_id, received), stage)
            except Exception:
                log.exception("device %s failed to evaluate", self.pop.devices[node].device_id)
        return ranks
