"""Builders shared by the device tests (no tests here): tiny configs, initialised and trained device states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from client.runtime import GLOBAL_NPZ, DeviceState, init_device
from shared_models.model.interest import InterestModel
from shared_models.train.sequences import build_windows
from shared_models.train.training import seed_everything, train_epoch
from shared_models.datasets.load import load_split
from tests.fed_helpers import TINY_MODEL, synthetic_csv


def tiny_toml(path: Path, *, he: bool = False) -> Path:
    """A TOML config with the tiny test model."""
    lines = ["[model]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in TINY_MODEL.items()]
    lines += ["[he]", f"enabled = {'true' if he else 'false'}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_device(tmp: Path, *, user: str = "u0", users: int = 12, items: int = 40, history: bool = True,
                name: str = "dev") -> Path:
    """A device initialised from a synthetic dataset (with or without the user's history)."""
    data = tmp / "synth.csv"
    if not data.exists():
        synthetic_csv(data, users=users, items=items)
    cfg = tmp / "tiny.toml"
    if not cfg.exists():
        tiny_toml(cfg)
    state = tmp / name
    init_device(state, user_id=user, dataset=str(data), config=cfg, import_history=history)
    return state


def train_central(state_dir: Path, *, epochs: int = 15, seed: int = 0) -> InterestModel:
    """Train the device's architecture on the whole synthetic dataset and install it as global + personal."""
    state = DeviceState(state_dir)
    cfg = state.config()
    split = load_split(cfg.data)
    rng = seed_everything(seed)
    model = InterestModel(cfg.model, split.num_items)
    d = cfg.model.hidden
    model.short.gru = torch.nn.GRU(d, d, batch_first=True)  # same parameter names as DPGRU, fused: fast tests
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    windows = build_windows(split.train, max_len=cfg.model.max_len)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: extra threads only contend (the CI box has 2 shared cores)
    try:
        for _ in range(epochs):
            train_epoch(model, opt, windows, batch_size=16, rng=rng)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    np.savez(state.root / GLOBAL_NPZ, **{k: v.numpy() for k, v in model.shared_state().items()})
    state.store().save_personal(dict(model.personal_state()))
    return model
