"""The population of a run: one device per user of the leave-one-out split.

Data is loaded once per process and cached (``population``), so Ray actors that host many simulated devices
read the dataset once, not once per message. A deployed device builds its own ``DeviceData`` from its
state directory (``client/runtime.py``).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from shared_models.config import Config
from shared_models.datasets.load import load_split
from shared_models.model.factory import item_text_tensor

POPULATIONS_CACHED = 4


@dataclass(frozen=True)
class DeviceData:
    """One user's leave-one-out data, as it sits on the device."""

    device_id: str
    train: np.ndarray  # chronological training items
    valid: int
    test: int
    num_items: int


@dataclass(frozen=True)
class Population:
    devices: list[DeviceData]
    num_items: int
    text: torch.Tensor | None
    max_interactions: int  # most training interactions on any device (delta = 1/this when delta = 0)


_cache: "OrderedDict[tuple, Population]" = OrderedDict()


def population(cfg: Config) -> Population:
    """The simulated devices for ``cfg.data`` (and the item text, when the model uses it), cached per process."""
    key = (dataclasses.astuple(cfg.data), cfg.model.text_embeddings, cfg.model.content, cfg.model.text_model)
    if key not in _cache:
        _cache[key] = _load(cfg)
        while len(_cache) > POPULATIONS_CACHED:
            _cache.popitem(last=False)
    return _cache[key]


def _load(cfg: Config) -> Population:
    split = load_split(cfg.data)
    text = item_text_tensor(cfg.model, split.item_text)
    devices = [DeviceData(device_id=str(uid), train=np.asarray(tr, dtype=np.int64), valid=int(v), test=int(t),
                          num_items=split.num_items)
               for uid, tr, v, t in zip(split.user_ids, split.train, split.valid, split.test)]
    return Population(devices, split.num_items, text, max(len(d.train) for d in devices))
