"""Device side of window-level DP (``privacy.mode = window``): distributed DP-SGD on the received model.

A sampled device Poisson-samples its training windows (``privacy.window_sample_rate``, from a device secret),
computes each kept window's gradient of the shared parameters at the received global model (Opacus per-sample
gradients), clips each to ``privacy.max_grad_norm``, sums them, adds its noise share
N(0, (noise_multiplier * max_grad_norm)^2 / min_train_nodes) per coordinate and sends minus that sum as its
"delta" with weight 1. A device with no window, or none kept, sends the noise share alone: what leaves the
device has the same shape, weight and fields whatever its data. The server decodes the running sum exactly as
under user-level DP, with the public denominator ``privacy.expected_batch``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from shared_models.config import Config
from shared_models.config_checks import ENCODING_SIGMAS
from shared_models.model.state import unflatten
from shared_models.privacy.user_level import device_noise_std, poisson_sample
from shared_models.privacy.window_level import noisy_negative_sum
from shared_models.train.dp_training import LocalTrainResult
from shared_models.train.sequences import Windows
from shared_models.train.window_grads import clipped_gradient_sum

WINDOW_SAMPLE_STREAM = 3  # SeedSequence spawn keys of the device secret: window sampling, then the noise share
WINDOW_NOISE_STREAM = 4


@dataclass(frozen=True)
class WindowGradients(LocalTrainResult):
    """The training step's result under window-level DP: the sum of the kept windows' clipped gradients."""

    clipped_sum: np.ndarray | None = None


def window_step(model: torch.nn.Module, windows: Windows, *, keys: list[str], cfg: Config, noise_seed: int,
                device: torch.device | str = "cpu") -> WindowGradients:
    """Sample this round's windows and sum their clipped per-window gradients (no optimizer step)."""
    p = cfg.privacy
    rng = np.random.default_rng([noise_seed, WINDOW_SAMPLE_STREAM])
    kept = poisson_sample(len(windows), sample_rate=p.window_sample_rate, rng=rng)  # Poisson, as devices are
    batch = Windows(windows.inputs[kept], windows.targets[kept])
    total, _ = clipped_gradient_sum(model, batch, keys=keys, clip=p.max_grad_norm, device=device)
    return WindowGradients(num_examples=len(windows), steps=1, sample_rate=p.window_sample_rate,
                           noise_multiplier=p.noise_multiplier, max_grad_norm=p.max_grad_norm, loss=float("nan"),
                           clipped_sum=total)


def window_noise_std(cfg: Config) -> float:
    p = cfg.privacy
    return device_noise_std(clip=p.max_grad_norm, noise_multiplier=p.noise_multiplier,
                            min_contributors=cfg.federated.min_train_nodes)


def encoding_bound(cfg: Config) -> float | None:
    """Per-coordinate bound of the gradient sum under HE (the encoding's clip_range less the noise's room)."""
    if not cfg.he.enabled:
        return None
    return cfg.he.clip_range - ENCODING_SIGMAS * window_noise_std(cfg)


def window_update(result: WindowGradients, template: dict[str, np.ndarray], *, cfg: Config,
                  noise_seed: int) -> "OrderedDict[str, np.ndarray]":
    """What leaves the device: minus (clipped gradient sum + noise share), keyed like ``template``."""
    n = int(sum(np.size(v) for v in template.values()))
    total = result.clipped_sum if result.clipped_sum is not None else np.zeros(n)
    if total.shape != (n,):
        raise ValueError(f"gradient sum has shape {total.shape}, the shared model {n} parameters")
    rng = np.random.default_rng([noise_seed, WINDOW_NOISE_STREAM])
    out = noisy_negative_sum(total, noise_std=window_noise_std(cfg), rng=rng, bound=encoding_bound(cfg))
    return unflatten(out, template)
