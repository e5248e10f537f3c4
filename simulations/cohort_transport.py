"""Cohort transport: the sampled devices of a round train in chunks of ``federated.cohort_size`` as ONE
vectorized DP-SGD computation (``shared_models.cohort``), equal to training them one by one.

Everything else is the device's own code path: ``prepare_round`` (budget check, model from the global +
personal weights, secret noise seed) before, ``finish_round`` (ledger, personal weights) and ``make_reply``
(encrypt + sign under HE) after. In simulation every device holds the same CKKS secret, so the global sum is
decrypted once per round and shared by the cohort.
"""

from __future__ import annotations

import logging

import torch

from client.device import PreparedRound, TrainOutcome, finish_round, prepare_round
from client.round import global_weights, make_reply
from server.loop import TrainReply
from shared_models.cohort import train_cohort_dp
from shared_models.training import resolve_device

from simulations.inline import InlineTransport

log = logging.getLogger(__name__)


class CohortTransport(InlineTransport):
    """Same node ids and evaluation as the inline transport; training is vectorized per cohort."""

    def train(self, round_id: int, nodes: list[int], received) -> list[TrainReply]:
        if not nodes:
            return []
        first = self.pop.devices[nodes[0]]
        weights, he_metrics = global_weights(self.cfg, received, num_items=first.num_items, text=self.pop.text,
                                             keys_dir=self.keys_dir, device_id=first.device_id)
        # cohorts of devices with similar numbers of training interactions: a cohort pads every device to its
        # largest batch, so mixing a 3-window device with a 15-window one wastes most of the former's compute.
        # Each device's result does not depend on its cohort; replies keep the sampled order.
        by_size = sorted(nodes, key=lambda n: len(self.pop.devices[n].train))
        size = self.cfg.federated.cohort_size
        replies: dict[int, TrainReply] = {}
        for start in range(0, len(by_size), size):
            for reply in self._train_cohort(round_id, by_size[start:start + size], weights, he_metrics):
                replies[reply.node] = reply
        return [replies[n] for n in nodes]

    def _train_cohort(self, round_id, nodes, weights, he_metrics) -> list[TrainReply]:
        outcomes: dict[int, TrainOutcome] = {}
        errors: dict[int, str] = {}
        ready: dict[int, PreparedRound] = {}
        for node in nodes:
            try:
                prep = prepare_round(data=self.pop.devices[node], store=self._store(node), global_shared=weights,
                                     cfg=self.cfg, round_id=round_id, text=self.pop.text,
                                     max_interactions=self.pop.max_interactions)
            except Exception as exc:  # a bad device never stops the round
                log.exception("device %s failed", self.pop.devices[node].device_id)
                errors[node] = f"{type(exc).__name__}: {exc}"
                continue
            if isinstance(prep, TrainOutcome):
                outcomes[node] = prep
            else:
                ready[node] = prep
        if ready:
            outcomes.update(self._optimise(round_id, ready))
        return [TrainReply(node=node, error=errors[node]) if node in errors else
                make_reply(outcomes[node], cfg=self.cfg, device_id=self.pop.devices[node].device_id,
                           round_id=round_id, node=node, keys_dir=self.keys_dir, he_metrics=he_metrics)
                for node in nodes]

    def _optimise(self, round_id: int, ready: dict[int, PreparedRound]) -> dict[int, TrainOutcome]:
        fed, priv = self.cfg.federated, self.cfg.privacy
        preps = list(ready.values())
        results = train_cohort_dp(preps[0].model, [dict(p.model.named_parameters()) for p in preps],
                                  [p.windows for p in preps], epochs=fed.local_epochs, lr=fed.lr,
                                  batch_size=fed.batch_size, noise_multiplier=priv.noise_multiplier,
                                  max_grad_norm=priv.max_grad_norm, seeds=[p.seed for p in preps],
                                  optimizer=fed.optimizer, device=resolve_device(fed.device))
        out = {}
        for node, prep, res in zip(ready, preps, results):
            params = dict(prep.model.named_parameters())
            with torch.no_grad():
                for k, v in res.params.items():
                    params[k].copy_(v)
            out[node] = finish_round(prep, res.train, cfg=self.cfg, round_id=round_id)
        return out
