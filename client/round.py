"""One device round over either transport: plaintext weights, or server-blind (CKKS + Ed25519).

Both the ClientApp and the inline simulator call these, so simulation and deployment run the same code.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import torch

from client.device import DeviceData, TrainOutcome, device_evaluate, device_train, initial_shared
from client.secure import device_keys, encode_update, global_model
from client.store import DeviceStore
from client.user_dp import user_level_decoding
from server.loop import TrainReply
from shared_models.config import Config

# what a device reports in clear under server-blind aggregation: timings only (the training loss is computed
# on private data outside DP; epsilon, steps and sample rate reveal the example count)
HE_VISIBLE_METRICS = ("decrypt_s", "encrypt_s")
BUDGET_REASON = "privacy budget: the next round would exceed the device's target epsilon"


@functools.lru_cache(maxsize=4)
def _template(cfg_json: str, num_items: int, text_id: int, text: torch.Tensor | None):
    from shared_models.messages import config_from_json

    return initial_shared(config_from_json(cfg_json), num_items, text)


def global_weights(cfg: Config, received, *, num_items: int, text: torch.Tensor | None, keys_dir: str,
                   device_id: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Plaintext: the received arrays. HE: decrypt the received sum (None in round 1 = initial model); under
    user-level DP the sum is every round's noisy deltas, added to the initial model with a fixed denominator."""
    if not cfg.he.enabled:
        return received, {}
    template = _template(json.dumps(cfg.to_dict(), sort_keys=True), num_items, id(text), text)
    weights, total, decrypt_s = global_model(received, device_keys(keys_dir, device_id), template,
                                             **user_level_decoding(cfg))
    return weights, {"decrypt_s": decrypt_s, "total_weight": total}


def train_round(*, data: DeviceData, store: DeviceStore, received, cfg: Config, round_id: int, node: int,
                text: torch.Tensor | None, max_interactions: int, keys_dir: str = "") -> TrainReply:
    weights, he_metrics = global_weights(cfg, received, num_items=data.num_items, text=text, keys_dir=keys_dir,
                                         device_id=data.device_id)
    out = device_train(data=data, store=store, global_shared=weights, cfg=cfg, round_id=round_id, text=text,
                       max_interactions=max_interactions)
    return make_reply(out, cfg=cfg, device_id=data.device_id, round_id=round_id, node=node, keys_dir=keys_dir,
                      he_metrics=he_metrics)


def make_reply(out: TrainOutcome, *, cfg: Config, device_id: str, round_id: int, node: int, keys_dir: str,
               he_metrics: dict[str, float]) -> TrainReply:
    """What leaves the device: shared weights (plaintext) or an encrypted, signed update (HE)."""
    reply = TrainReply(node=node, refused=out.refused, reason=out.reason, device_id=device_id,
                       round_id=round_id, metrics={**out.metrics, **he_metrics})
    if cfg.he.enabled:
        reply.metrics = {k: v for k, v in reply.metrics.items() if k in HE_VISIBLE_METRICS}
        if out.refused and out.reason.startswith("budget"):
            reply.reason = BUDGET_REASON  # without the device's current epsilon
    if out.refused:
        return reply
    if cfg.he.enabled:
        keys = device_keys(keys_dir, device_id)
        reply.payload, reply.signature, reply.metrics["encrypt_s"] = encode_update(
            out.shared, weight=out.num_examples, keys=keys, round_id=round_id)
    else:
        reply.shared, reply.num_examples = out.shared, out.num_examples
    return reply


def evaluate_round(*, data: DeviceData, store: DeviceStore, received, cfg: Config, stage: str,
                   text: torch.Tensor | None, keys_dir: str = "") -> int:
    weights, _ = global_weights(cfg, received, num_items=data.num_items, text=text, keys_dir=keys_dir,
                                device_id=data.device_id)
    return device_evaluate(data=data, store=store, global_shared=weights, cfg=cfg, stage=stage, text=text)
