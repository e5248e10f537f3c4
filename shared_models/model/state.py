"""The model's state split in two: shared parameters (leave the device) and personal ones (never do).

Every party builds the same initial shared model from the run seed (round 1, and the template whose key
order and shapes fix how an update is flattened for encryption). A device's own initialisation is seeded
by its id, so a resumed run rebuilds the same model.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from shared_models.config import Config
from shared_models.model.interest import InterestModel


def stable_hash(text: str) -> int:
    """A process-independent small hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") % 1_000_003


def shared_keys(model: InterestModel, *, personal_short_term: bool) -> list[str]:
    """Names of the parameters that leave the device (everything when the short-term part is federated)."""
    if personal_short_term:
        return list(model.shared_state().keys())
    return [n for n, _ in model.named_parameters()]


def build_device_model(cfg: Config, num_items: int, text: torch.Tensor | None, device_id: str) -> InterestModel:
    """Model with a deterministic per-device init (the shared part is overwritten by the global weights)."""
    torch.manual_seed(cfg.federated.seed * 1_000_003 + stable_hash(device_id))
    return InterestModel(cfg.model, num_items, text=text)


def initial_shared(cfg: Config, num_items: int, text: torch.Tensor | None) -> "OrderedDict[str, np.ndarray]":
    """The initial global shared weights: a model built from the seed every party shares (round 1)."""
    torch.manual_seed(cfg.federated.seed)
    model = InterestModel(cfg.model, num_items, text=text)
    params = dict(model.named_parameters())
    return OrderedDict((k, params[k].detach().numpy().copy())
                       for k in shared_keys(model, personal_short_term=cfg.federated.personal_short_term))


def flatten(shared: dict[str, np.ndarray]) -> np.ndarray:
    """One float64 vector in the dict's key order (the order of ``initial_shared``)."""
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in shared.values()])


def unflatten(vector: np.ndarray, template: dict[str, np.ndarray]) -> "OrderedDict[str, np.ndarray]":
    """The inverse of ``flatten`` for ``template``'s keys and shapes (float32); an error on a size mismatch."""
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    offset = 0
    for k, v in template.items():
        n = int(np.prod(v.shape))
        out[k] = vector[offset:offset + n].reshape(v.shape).astype(np.float32)
        offset += n
    if offset != len(vector):
        raise ValueError(f"aggregate has {len(vector)} values, the shared model has {offset}")
    return out
