"""Local training on one device: plain, or DP-SGD with Opacus (Poisson sampling, per-sample clipping, noise).

One DP *sample* is one training window (``shared_models/train/sequences.py``). Windows are disjoint, so every
interaction sits in exactly one sample and the example-level guarantee protects any single interaction
(indeed any whole window) of the device's training history: replace-one adjacency on windows.

The Opacus PrivacyEngine is used only to build the DP optimizer and the Poisson loader of THIS round; its
own accountant is discarded. Privacy is composed across rounds by the device's persistent ledger
(``shared_models/privacy``), which the caller updates with the returned ``(noise_multiplier, sample_rate,
steps)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from shared_models.train.sequences import Windows


@dataclass(frozen=True)
class LocalTrainResult:
    num_examples: int  # training windows on the device
    steps: int  # optimizer steps taken
    sample_rate: float  # Poisson sampling rate q (1.0 = full batch); 0 for non-private training
    noise_multiplier: float  # sigma; 0 for non-private training
    max_grad_norm: float
    loss: float  # mean training loss over steps


def sample_rate_for(num_examples: int, batch_size: int) -> float:
    """Poisson rate giving an expected batch of ``batch_size`` (capped at 1: full batch)."""
    return min(1.0, batch_size / max(1, num_examples))


OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def make_optimizer(name: str, params, *, lr: float) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"federated.optimizer {name!r}: expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr=lr)


def train_local(model: torch.nn.Module, windows: Windows, *, epochs: int, lr: float, batch_size: int,
                seed: int, optimizer: str = "adam", device: torch.device | str = "cpu") -> LocalTrainResult:
    """Non-private local training: ``epochs`` shuffled passes (a fresh optimizer each round)."""
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(_dataset(windows), batch_size=batch_size, shuffle=True, generator=gen)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    losses = _run(model, opt, loader, epochs, device)
    return LocalTrainResult(len(windows), len(losses), 0.0, 0.0, 0.0, _mean(losses))


def train_local_dp(model: torch.nn.Module, windows: Windows, *, epochs: int, lr: float, batch_size: int,
                   noise_multiplier: float, max_grad_norm: float, seed: int, optimizer: str = "adam",
                   device: torch.device | str = "cpu") -> LocalTrainResult:
    """DP-SGD (Opacus) for ``epochs`` epochs of Poisson-sampled batches; ``model`` is updated in place.

    Steps per epoch = round(1 / q) with q = batch_size / num_examples (capped at 1). Opacus wraps the
    model in a GradSampleModule; the caller's ``model`` object holds the trained weights afterwards.
    """
    if getattr(getattr(model, "cfg", None), "strict_short", False):
        raise ValueError("model.strict_short = true is not supported with Opacus DP-SGD (its windowed GRU "
                         "puts a sample's positions in the batch dimension, which per-sample gradient hooks own)")
    n = len(windows)
    q = sample_rate_for(n, batch_size)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(_dataset(windows), batch_size=max(1, int(round(q * n))), generator=gen)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns about secure RNG / full backward hooks
        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        dp_model, dp_opt, dp_loader = engine.make_private(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm, poisson_sampling=True, noise_generator=gen)
        losses = _run(dp_model, dp_opt, dp_loader, epochs, device)
    dp_model._close()  # remove Opacus hooks so ``model`` can be reused and serialized cleanly
    return LocalTrainResult(n, len(losses), float(dp_loader.sample_rate), noise_multiplier, max_grad_norm,
                            _mean(losses))


def _dataset(windows: Windows) -> TensorDataset:
    return TensorDataset(torch.from_numpy(windows.inputs), torch.from_numpy(windows.targets))


def _run(model, opt, loader, epochs: int, device) -> list[float]:
    model.train()
    losses: list[float] = []
    for _ in range(epochs):
        for inputs, targets in loader:
            opt.zero_grad(set_to_none=True)
            # an empty Poisson batch still runs (0-row tensors) and counts as a noise-only step
            loss = _module(model).calculate_loss({"inputs": inputs.to(device), "targets": targets.to(device)})
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()) if len(inputs) else float("nan"))
    return losses


def _module(model: torch.nn.Module) -> torch.nn.Module:
    """The user model inside an Opacus GradSampleModule (hooks fire either way)."""
    return getattr(model, "_module", model)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
