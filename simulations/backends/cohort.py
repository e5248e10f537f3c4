"""Cohort transport: the sampled devices of a round train in chunks of ``federated.cohort_size`` as ONE
vectorized DP-SGD computation (``shared_models.train.cohort``), equal to training them one by one.

It plugs that batched training step into the one device-round pipeline (``client.round.train_rounds``):
decoding, budget checks, ledgers, personal weights, privatization and encryption are the device's own code.
"""

from __future__ import annotations

import torch

from client.device import PreparedRound
from client.round import train_rounds
from shared_models.config import Config
from shared_models.messages import TrainReply
from shared_models.train.cohort import train_cohort_dp
from shared_models.train.dp_training import LocalTrainResult
from shared_models.train.training import resolve_device
from simulations.backends.inline import InlineTransport


def cohort_step(cfg: Config, preps: list[PreparedRound]) -> list[LocalTrainResult]:
    """Train prepared devices as one vectorized DP-SGD computation; their models hold the result after."""
    fed, priv = cfg.federated, cfg.privacy
    results = train_cohort_dp(preps[0].model, [dict(p.model.named_parameters()) for p in preps],
                              [p.windows for p in preps], epochs=fed.local_epochs, lr=fed.lr,
                              batch_size=fed.batch_size, noise_multiplier=priv.noise_multiplier,
                              max_grad_norm=priv.max_grad_norm, seeds=[p.seed for p in preps],
                              optimizer=fed.optimizer, device=resolve_device(fed.device))
    for prep, res in zip(preps, results):
        params = dict(prep.model.named_parameters())
        with torch.no_grad():
            for k, v in res.params.items():
                params[k].copy_(v)
    return [res.train for res in results]


class CohortTransport(InlineTransport):
    """Same node ids and evaluation as the inline transport; training is vectorized per cohort."""

    def train(self, round_id: int, nodes: list[int], received) -> list[TrainReply]:
        # cohorts of devices with similar numbers of training interactions: a cohort pads every device to its
        # largest batch, so mixing a 3-window device with a 15-window one wastes most of the former's compute.
        # Each device's result does not depend on its cohort; replies keep the sampled order.
        by_size = sorted(nodes, key=lambda n: len(self.pop.devices[n].train))
        size = self.cfg.federated.cohort_size
        replies: dict[int, TrainReply] = {}
        for start in range(0, len(by_size), size):
            chunk = by_size[start:start + size]
            for reply in train_rounds([self.round_input(n, round_id, received) for n in chunk], step=cohort_step):
                replies[reply.node] = reply
        return [replies[n] for n in nodes]
