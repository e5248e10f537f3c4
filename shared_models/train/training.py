"""Plain (non-private) mini-batch training over windows. DP-SGD lives in ``shared_models/train/dp_training.py``."""

from __future__ import annotations

import numpy as np
import torch

from shared_models.train.sequences import Windows, iterate_batches


def batch_to_device(windows: Windows, idx: np.ndarray, device: str | torch.device, *,
                    columns: bool = False) -> dict[str, torch.Tensor]:
    """The batch ``idx``; ``columns``: also the positions that carry a target in it (``calculate_loss``
    scores only those)."""
    targets = windows.targets[idx]
    batch = {"inputs": torch.from_numpy(windows.inputs[idx]).to(device),
             "targets": torch.from_numpy(targets).to(device)}
    if columns:
        batch["columns"] = torch.from_numpy(np.flatnonzero((targets != 0).any(axis=0))).to(device)
    return batch


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, windows: Windows, *,
                batch_size: int, rng: np.random.Generator, device: str | torch.device = "cpu",
                columns: bool = False) -> float:
    """One shuffled pass over ``windows``; returns the mean batch loss. ``columns``: score only the
    positions of a batch that carry a target (the same loss; pays off with overlapping windows)."""
    model.train()
    losses = []
    for idx in iterate_batches(len(windows), batch_size, generator=rng):
        optimizer.zero_grad(set_to_none=True)
        loss = model.calculate_loss(batch_to_device(windows, idx, device, columns=columns))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error naming the key."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device = 'cuda' but no CUDA device is available (use 'cpu' or 'auto')")
    return torch.device(name)


def seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
