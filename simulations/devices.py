"""Simulated population: one device per user of the leave-one-out split, each with its own state dir.

Data is loaded once per process and cached (``population``), so Ray actors that host many simulated devices
read the dataset once, not once per message.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from client.device import DeviceData, initial_shared  # noqa: F401  (re-exported for the harness)
from shared_models.config import Config, DataConfig, ModelConfig, build_config
from shared_models.factory import item_text_tensor
from simulations.data import load_split


@dataclass(frozen=True)
class Population:
    devices: list[DeviceData]
    num_items: int
    text: torch.Tensor | None
    max_interactions: int  # most training interactions on any device (delta = 1/this when delta = 0)


def _key(cfg: Config) -> str:
    return json.dumps({"data": cfg.data.__dict__, "text": cfg.model.text_embeddings, "tm": cfg.model.text_model},
                      sort_keys=True)


@functools.lru_cache(maxsize=4)
def _population(key: str) -> Population:
    spec = json.loads(key)
    data_cfg = DataConfig(**spec["data"])
    split = load_split(data_cfg)
    text = item_text_tensor(ModelConfig(text_embeddings=spec["text"], text_model=spec["tm"]), split.item_text)
    devices = [DeviceData(device_id=str(uid), train=np.asarray(tr, dtype=np.int64), valid=int(v), test=int(t),
                          num_items=split.num_items)
               for uid, tr, v, t in zip(split.user_ids, split.train, split.valid, split.test)]
    return Population(devices, split.num_items, text, max(len(d.train) for d in devices))


def population(cfg: Config) -> Population:
    """The simulated devices for ``cfg.data`` (cached per process)."""
    return _population(_key(cfg))


def config_from_run_config(run_config: dict) -> Config:
    """Flower's flat run config (``"privacy.noise-multiplier": 1.0``) -> our typed Config."""
    nested: dict = {}
    for dotted, value in run_config.items():
        if dotted in ("run-dir", "config-file"):
            continue
        node = nested
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return build_config(nested)


def device_state_dir(run_dir: Path | str, device_id: str) -> Path:
    return Path(run_dir) / "devices" / device_id
