"""THE device round, whatever carries the messages: decode -> train -> privatize -> encrypt -> sign.

Every transport drives this one pipeline: the Flower ClientApp (one device per message, simulated or
deployed), the inline simulator (devices called in turn) and the cohort simulator, which only plugs a
batched training step (``step``) into it. A round's inputs are one ``RoundInput``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from client import masks, prior
from client.device import TrainOutcome, TrainStep, device_evaluate, finish_round, local_step, prepare_round
from client.secure import device_keys, encode_update, global_model, sum_decrypts
from client.store import DeviceStore
from client.user_dp import user_level_decoding
from shared_models.config import Config
from shared_models.datasets.population import DeviceData
from shared_models.messages import TrainReply
from shared_models.model.state import initial_shared
from shared_models.privacy.popularity import PRIOR_ROUND

log = logging.getLogger(__name__)

# what a device reports in clear under server-blind aggregation or any DP mode: timings only (the training loss
# is computed on private data outside DP; epsilon, steps and sample rate reveal the example count)
HE_VISIBLE_METRICS = ("decrypt_s", "encrypt_s")
BUDGET_REASON = "privacy budget: the next round would exceed the device's target epsilon"
TEMPLATES_CACHED = 4


@dataclass(frozen=True)
class DeviceContext:
    """What a device brings to every round: its data and state, item text, ledger delta basis, keys."""

    data: DeviceData
    store: DeviceStore
    text: torch.Tensor | None
    max_interactions: int  # most training interactions on any device (delta = 1/this when privacy.delta = 0)
    keys_dir: str = ""


@dataclass(frozen=True)
class RoundInput:
    """One device's round: who, under which config, with what the server sent."""

    device: DeviceContext
    cfg: Config
    received: Any  # plaintext weights, the encrypted global sum (bytes), or None (HE, round 1)
    round_id: int  # PRIOR_ROUND (0): the popularity prior's contribution, not a training round
    node: int = -1  # the transport's node index (echoed in the reply)
    prior: Any = None  # the released popularity prior (encrypted sum or plaintext counts), if any
    run_id: str = ""  # the run the server named in its instruction (signed with an encrypted update)

    def item_prior(self) -> np.ndarray | None:
        return prior.decode(self.prior, keys_dir=self.device.keys_dir, device_id=self.device.data.device_id)


_templates: dict[tuple, dict[str, np.ndarray]] = {}


def _template(cfg: Config, num_items: int, text: torch.Tensor | None) -> dict[str, np.ndarray]:
    """The initial shared model (key order and shapes of an encrypted update), built once per process."""
    key = (repr(cfg.model), cfg.federated.seed, cfg.federated.personal_short_term, num_items, id(text))
    if key not in _templates:
        if len(_templates) >= TEMPLATES_CACHED:
            _templates.pop(next(iter(_templates)))
        _templates[key] = initial_shared(cfg, num_items, text)
    return _templates[key]


def global_weights(cfg: Config, received, device: DeviceContext) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Plaintext: the received arrays. HE: decrypt the received sum (None in round 1 = initial model); under
    user-level DP the sum is every round's noisy deltas, added to the initial model with a fixed denominator."""
    if not cfg.he.enabled:
        return received, {}
    template = _template(cfg, device.data.num_items, device.text)
    weights, total, decrypt_s = global_model(received, device_keys(device.keys_dir, device.data.device_id), template,
                                             unit_weights=unit_weights(cfg), **user_level_decoding(cfg))
    return weights, {"decrypt_s": decrypt_s, "total_weight": total}


def train_round(inp: RoundInput) -> TrainReply:
    """One device's round; an error is raised (the ClientApp turns it into Flower's error reply)."""
    reply = train_rounds([inp])[0]
    if reply.error:
        raise RuntimeError(reply.error)
    return reply


def train_rounds(inputs: list[RoundInput], *, step: TrainStep = local_step) -> list[TrainReply]:
    """The round of several devices of one config and round, in input order; ``step`` trains the prepared ones
    (device by device, or batched). A device that fails gets an error reply: it never stops the others."""
    replies: dict[int, TrainReply] = {}
    ready: dict[int, tuple] = {}  # input index -> (PreparedRound, he metrics)
    for i, inp in enumerate(inputs):
        d = inp.device
        try:
            if inp.round_id == PRIOR_ROUND:
                replies[i] = prior.contribute(inp)
                continue
            weights, he_metrics = global_weights(inp.cfg, inp.received, d)
            prep = prepare_round(data=d.data, store=d.store, global_shared=weights, cfg=inp.cfg,
                                 round_id=inp.round_id, text=d.text, max_interactions=d.max_interactions,
                                 item_prior=inp.item_prior())
            if isinstance(prep, TrainOutcome):
                replies[i] = make_reply(prep, inp, he_metrics)
            else:
                ready[i] = (prep, he_metrics)
        except Exception as exc:  # a bad device never stops the round
            replies[i] = _failed(inp, exc)
    if ready:
        cfg = inputs[next(iter(ready))].cfg
        try:
            results = step(cfg, [prep for prep, _ in ready.values()])
        except Exception as exc:
            results = [exc] * len(ready)
        for (i, (prep, he_metrics)), res in zip(ready.items(), results):
            inp = inputs[i]
            try:
                if isinstance(res, Exception):
                    raise res
                replies[i] = make_reply(finish_round(prep, res, cfg=inp.cfg, round_id=inp.round_id), inp, he_metrics)
            except Exception as exc:
                replies[i] = _failed(inp, exc)
    return [replies[i] for i in range(len(inputs))]


def _failed(inp: RoundInput, exc: Exception) -> TrainReply:
    log.error("device %s failed: %s: %s", inp.device.data.device_id, type(exc).__name__, exc,
              exc_info=not isinstance(exc, ValueError))
    return TrainReply(node=inp.node, error=f"{type(exc).__name__}: {exc}")


def make_reply(out: TrainOutcome, inp: RoundInput, he_metrics: dict[str, float]) -> TrainReply:
    """What leaves the device: shared weights (plaintext) or an encrypted, signed update (HE)."""
    cfg, device_id = inp.cfg, inp.device.data.device_id
    reply = TrainReply(node=inp.node, refused=out.refused, reason=out.reason, device_id=device_id,
                       round_id=inp.round_id, metrics={**out.metrics, **he_metrics})
    private = cfg.privacy.mode != "none"
    if cfg.he.enabled or private:
        reply.metrics = {k: v for k, v in reply.metrics.items() if k in HE_VISIBLE_METRICS}
        if out.refused and out.reason.startswith("budget"):
            reply.reason = BUDGET_REASON  # without the device's current epsilon
    if out.refused:
        return reply
    # under DP every device weighs the same: a FedAvg weight of min(windows, cap) would reveal the very count
    # a window-level guarantee hides (user-level deltas already carry weight 1)
    weight = 1 if unit_weights(cfg) else out.num_examples
    if cfg.he.enabled:
        keys = device_keys(inp.device.keys_dir, device_id)
        reply.payload, reply.signature, reply.metrics["encrypt_s"] = encode_update(
            out.shared, weight=weight, keys=keys, round_id=inp.round_id, run_id=inp.run_id,
            mask=masks.mask_maker(cfg, inp.device.store, keys, run_id=inp.run_id, round_id=inp.round_id))
    else:
        reply.shared, reply.num_examples = out.shared, weight
    return reply


def answer_mask(inp: RoundInput, stage: str, request: bytes) -> bytes:
    """The device's reply to a masking request of this round (``client/masks.py``); ValueError: refused."""
    d = inp.device
    return masks.answer(stage, request, store=d.store, keys=device_keys(d.keys_dir, d.data.device_id),
                        run_id=inp.run_id, round_id=inp.round_id)


def unit_weights(cfg: Config) -> bool:
    """Under any DP mode every update weighs 1 (``make_reply``): a sum must then total one per summand."""
    return cfg.privacy.mode != "none"


def check_sum(cfg: Config, keys_dir: str, device_id: str, blob: bytes) -> bool:
    """The device as key holder: whether an encrypted (sub-)sum the server asks about decrypts; one bit back.
    Nothing is kept: a sub-sum is not the global model."""
    return sum_decrypts(blob, device_keys(keys_dir, device_id), unit_weights=unit_weights(cfg))


def evaluate_round(inp: RoundInput, stage: str) -> tuple[int, int]:
    """1-based full-catalogue ranks (history masked, unmasked) of the device's ``stage`` item under the
    received global model."""
    d = inp.device
    weights, _ = global_weights(inp.cfg, inp.received, d)
    return device_evaluate(data=d.data, store=d.store, global_shared=weights, cfg=inp.cfg, stage=stage, text=d.text,
                           item_prior=inp.item_prior())
