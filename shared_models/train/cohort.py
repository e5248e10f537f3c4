"""Vectorized cohort DP-SGD: K devices' full local models trained as ONE batched ``torch.func`` computation.

Same mechanism as ``shared_models.train.dp_training.train_local_dp`` (Opacus), device by device:
Poisson sampling with the device's own rate q_k (Opacus' q = 1 / batches-per-epoch, ``int(1/q)`` steps per
epoch), per-sample gradients of each sample's own loss, per-sample clipping to C over ALL parameters
(factor ``min(1, C / (norm + 1e-6))``), Gaussian noise N(0, (sigma C)^2) added to the device's SUM of clipped
gradients, division by the device's EXPECTED batch size ``int(n_k q_k)``, then an SGD or Adam step.

Vectorization: ``vmap`` over devices (stacked parameters (K, ...)) of ``vmap`` over samples of ``grad`` of
the per-sample loss (``functional_call`` on the model). Devices have different numbers of windows and
different Poisson batches: each step gathers every device's sampled windows into a (K, B, T) block padded to
the largest batch B with a validity mask; padded slots get clip factor 0, so they add nothing to the sum.
Devices that finish earlier (fewer steps) are frozen by an ``active`` mask.

Randomness: ``exact_rng=True`` replays Opacus' per-device RNG consumption (see ``cohort_rng``), so a cohort
device equals ``train_local_dp`` with the same seed (tests check 1e-4). ``exact_rng=False`` draws on the
compute device (GPU cohorts).

Dropout: cohort mode requires ``model.dropout = 0`` (vmapped randomness would not match per-device masks);
the model runs in eval mode, which with p = 0 is the same maths. ``opacus.layers.DPGRU`` is built from
``nn.Linear`` ops and vmaps as is.

Out of scope here (the caller's job, exactly as with ``train_local_dp``): privacy ACCOUNTING (record each
device's returned ``(noise_multiplier, sample_rate, steps)`` in its persistent ledger, refuse devices over
budget BEFORE training) and ENCRYPTION / secure aggregation of the returned shared weights.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from shared_models.train.cohort_optim import CohortOptimizer
from shared_models.train.cohort_rng import DeviceStreams
from shared_models.train.dp_training import LocalTrainResult, sample_rate_for
from shared_models.model.interest import InterestModel
from shared_models.train.sequences import Windows

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class CohortDeviceResult:
    params: Params  # this device's trained parameters (named_parameters names), detached
    train: LocalTrainResult  # same fields as train_local_dp returns (for the ledger)


@dataclass(frozen=True)
class DevicePlan:
    num_examples: int  # windows on the device
    sample_rate: float  # Opacus' q = 1 / batches per epoch
    steps_per_epoch: int
    expected_batch: int  # int(n q): the divisor of the noisy sum


def device_plan(num_examples: int, batch_size: int) -> DevicePlan:
    """The numbers ``train_local_dp`` ends up with for ``num_examples`` windows (Opacus' own float maths)."""
    batch = max(1, int(round(sample_rate_for(num_examples, batch_size) * num_examples)))
    q = 1 / math.ceil(num_examples / batch)
    return DevicePlan(num_examples, q, int(1 / q), int(num_examples * q))


class _Loss(nn.Module):
    """``forward(inputs, targets)`` = the model's ``calculate_loss`` (what ``functional_call`` needs)."""

    def __init__(self, model: InterestModel) -> None:
        super().__init__()
        self.m = model

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.m.calculate_loss({"inputs": inputs, "targets": targets})


def stack_params(params_per_device: list[Params] | Params, names: list[str], device) -> Params:
    """list of K per-device dicts (or an already stacked dict) -> {name: (K, ...)} on ``device``."""
    if isinstance(params_per_device, dict):
        return {n: params_per_device[n].detach().to(device, torch.float32).clone() for n in names}
    return {n: torch.stack([torch.as_tensor(p[n]).detach().float() for p in params_per_device]).to(device)
            for n in names}


def pad_windows(windows_per_device: list[Windows], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, n_max, T) inputs and targets, each device's windows first, all-padding rows after."""
    n_max = max(len(w) for w in windows_per_device)
    T = windows_per_device[0].inputs.shape[1]
    ins = np.zeros((len(windows_per_device), n_max, T), np.int64)
    outs = np.zeros_like(ins)
    for k, w in enumerate(windows_per_device):
        ins[k, :len(w)], outs[k, :len(w)] = w.inputs, w.targets
    return torch.from_numpy(ins).to(device), torch.from_numpy(outs).to(device)


def per_sample_grads(loss_mod: nn.Module, params: Params, inputs: torch.Tensor,
                     targets: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """Per-device per-sample gradients {name: (K, B, ...)} and losses (K, B); inputs/targets (K, B, T)."""
    def one(p: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return functional_call(loss_mod, p, (x[None], y[None]))  # the sample's own mean CE

    over_samples = vmap(grad_and_value(one), in_dims=(None, 0, 0))
    return vmap(over_samples, in_dims=(0, 0, 0))(params, inputs, targets)


def clip_and_sum(grads: Params, mask: torch.Tensor, max_grad_norm: float) -> Params:
    """Per-device sum of per-sample gradients clipped to ``max_grad_norm`` over ALL parameters: {n: (K, ...)}."""
    norms = torch.stack([g.flatten(2).norm(2, dim=2) for g in grads.values()], dim=2).norm(2, dim=2)  # (K, B)
    factor = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    factor = torch.where(mask, factor, torch.zeros_like(factor))  # padded slots contribute nothing
    return {n: torch.einsum("kb,kb...->k...", factor, g) for n, g in grads.items()}


def _cohort_model(template: InterestModel) -> _Loss:
    drops = [m.p for m in template.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    if drops:
        raise ValueError(f"cohort mode needs model.dropout = 0 (found dropout p={drops[0]})")
    return _Loss(copy.deepcopy(template)).eval()


def train_cohort_dp(model_template: InterestModel, params_per_device: list[Params] | Params,
                    windows_per_device: list[Windows], *, epochs: int, lr: float, batch_size: int,
                    noise_multiplier: float, max_grad_norm: float, seeds: list[int], optimizer: str = "sgd",
                    exact_rng: bool = True, device: torch.device | str = "cpu") -> list[CohortDeviceResult]:
    """DP-SGD for K devices in one batched computation; result k equals ``train_local_dp`` on device k.

    ``params_per_device``: K dicts named as ``model_template.named_parameters()`` (or one stacked dict of
    (K, ...) tensors). ``seeds[k]`` plays the role of ``train_local_dp``'s ``seed`` for device k.
    ``model_template`` only supplies the architecture (and frozen buffers such as text embeddings).
    """
    K = len(windows_per_device)
    if K == 0 or len(seeds) != K or any(len(w) == 0 for w in windows_per_device):
        raise ValueError(f"need K >= 1 devices, each with >= 1 window, and K seeds (got {K}, {len(seeds)})")
    loss_mod = _cohort_model(model_template).to(device)
    names = [n for n, _ in model_template.named_parameters()]  # Opacus' parameter (and noise) order
    params = stack_params(params_per_device, names, device)  # {n: (K, ...)}
    plans = [device_plan(len(w), batch_size) for w in windows_per_device]
    steps = [p.steps_per_epoch * epochs for p in plans]
    total = torch.tensor(steps, device=device)  # (K,)
    ebs = torch.tensor([float(p.expected_batch) for p in plans], device=device)  # (K,)
    streams = DeviceStreams(seeds, [len(w) for w in windows_per_device], [p.sample_rate for p in plans],
                            exact=exact_rng, device=device)
    inputs, targets = pad_windows(windows_per_device, device)  # (K, n_max, T)
    opt = CohortOptimizer(optimizer, params, lr=lr)
    shapes = {n: p.shape[1:] for n, p in params.items()}
    losses = torch.full((K, max(steps)), float("nan"))  # (K, S) batch loss per step
    rows = torch.arange(K, device=device)[:, None]  # (K, 1)
    for s in range(max(steps)):
        active = s < total  # (K,)
        streams.epoch_start([k for k, p in enumerate(plans) if s < steps[k] and s % p.steps_per_epoch == 0])
        idx, mask = streams.sample(active)  # (K, B)
        summed, step_loss = _clipped_sum(loss_mod, params, inputs[rows, idx], targets[rows, idx], mask,
                                         max_grad_norm, shapes)
        noise = streams.noise(shapes, noise_multiplier * max_grad_norm, active)
        grads = {n: (summed[n] + noise[n]) / ebs.view(K, *([1] * len(shapes[n]))) for n in names}
        params = opt.step(params, grads, active)
        losses[:, s] = torch.where(active, step_loss, torch.full_like(step_loss, float("nan"))).cpu()
    return _results(params, plans, losses, epochs, noise_multiplier, max_grad_norm)


def _clipped_sum(loss_mod: nn.Module, params: Params, inputs: torch.Tensor, targets: torch.Tensor,
                 mask: torch.Tensor, max_grad_norm: float, shapes: dict) -> tuple[Params, torch.Tensor]:
    """Clipped per-device sums {n: (K, ...)} and each device's batch loss (K,) (NaN for an empty batch)."""
    K, B = mask.shape
    if B == 0:  # every device drew an empty Poisson batch: a noise-only step
        zeros = {n: torch.zeros((K, *s), device=mask.device) for n, s in shapes.items()}
        return zeros, torch.full((K,), float("nan"), device=mask.device)
    full = {"m." + n: p for n, p in params.items()}
    grads, loss = per_sample_grads(loss_mod, full, inputs, targets)  # {m.n: (K, B, ...)}, (K, B)
    summed = clip_and_sum(grads, mask, max_grad_norm)
    count = mask.sum(dim=1)  # (K,)
    batch_loss = torch.where(mask, loss, torch.zeros_like(loss)).sum(dim=1) / count  # NaN when count = 0
    return {n[2:]: g for n, g in summed.items()}, batch_loss


def _results(params: Params, plans: list[DevicePlan], losses: torch.Tensor, epochs: int,
             noise_multiplier: float, max_grad_norm: float) -> list[CohortDeviceResult]:
    out = []
    for k, plan in enumerate(plans):
        row = losses[k, :plan.steps_per_epoch * epochs]
        finite = row[torch.isfinite(row)]
        loss = float(finite.mean()) if len(finite) else float("nan")
        out.append(CohortDeviceResult(
            params={name: p[k].detach().cpu() for name, p in params.items()},
            train=LocalTrainResult(plan.num_examples, plan.steps_per_epoch * epochs, plan.sample_rate, noise_multiplier,
                                   max_grad_norm, loss)))
    return out
