"""User-level (device-level) DP of the shared model: pure math, numpy only.

The mechanism (DP-FedAvg with distributed noise; McMahan et al., ICLR 2018, with the noise split over devices
as in Kairouz et al., ICML 2021):

* the server samples each device independently with probability ``sample_rate`` (Poisson);
* a sampled device clips its shared-model delta to L2 norm ``clip`` and adds Gaussian noise with standard
  deviation ``noise_multiplier * clip / sqrt(min_contributors)`` per coordinate, on the device, before
  encryption, so the server only ever handles the encrypted sum;
* every device has the same weight (1) and the global update is ``server_lr * sum / expected_participants``
  with a fixed denominator, so one device's presence changes the sum by at most ``clip`` (add/remove).

While at least ``min_contributors`` honest devices contribute, the sum carries Gaussian noise of standard
deviation at least ``noise_multiplier * clip``: one round is a Gaussian mechanism of noise multiplier
``noise_multiplier`` on a Poisson-subsampled population, composed over rounds by the RDP accountant.
"""

from __future__ import annotations

import math

import numpy as np

from .window_level import clip_rows


def device_noise_std(*, clip: float, noise_multiplier: float, min_contributors: int) -> float:
    """Per-coordinate noise std one device adds: ``noise_multiplier * clip / sqrt(min_contributors)``."""
    if clip <= 0 or noise_multiplier < 0 or min_contributors < 1:
        raise ValueError(f"need clip > 0, noise_multiplier >= 0, min_contributors >= 1; got {clip}, "
                         f"{noise_multiplier}, {min_contributors}")
    return noise_multiplier * clip / math.sqrt(min_contributors)


def clip_l2(vector: np.ndarray, *, clip: float) -> tuple[np.ndarray, float]:
    """(vector scaled to L2 norm <= clip, its original norm); float64. The one-row case of ``clip_rows``."""
    rows, norms = clip_rows(np.asarray(vector, dtype=np.float64).reshape(1, -1), clip=clip)
    return rows.reshape(np.shape(vector)), float(norms[0])


def privatize_delta(delta: np.ndarray, *, clip: float, noise_multiplier: float, min_contributors: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """(clipped delta + this device's noise share, the delta's norm before clipping); float64."""
    clipped, norm = clip_l2(np.asarray(delta, dtype=np.float64), clip=clip)
    std = device_noise_std(clip=clip, noise_multiplier=noise_multiplier, min_contributors=min_contributors)
    return clipped + rng.normal(0.0, std, size=clipped.shape), norm


def poisson_sample(num_devices: int, *, sample_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the devices sampled this round: each independently with probability ``sample_rate``."""
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    return np.flatnonzero(rng.random(num_devices) < sample_rate)


def client_sample_rate(*, clients_per_round: int, num_devices: int) -> float:
    """Poisson rate q with q * num_devices = clients_per_round expected participants."""
    if num_devices < 1 or clients_per_round < 1:
        raise ValueError(f"need num_devices >= 1 and clients_per_round >= 1, got {num_devices}, {clients_per_round}")
    if clients_per_round > num_devices:
        raise ValueError(f"clients_per_round {clients_per_round} exceeds the {num_devices} devices: the fixed "
                         "denominator of user-level DP must be the expected number of participants")
    return clients_per_round / num_devices


def max_participants(expected: float, *, sigmas: float = 6.0) -> int:
    """A bound on one round's Poisson participant count that holds except with negligible probability."""
    return int(math.ceil(expected + sigmas * math.sqrt(expected) + 1))


def apply_noisy_sum(initial: np.ndarray, noisy_sum: np.ndarray, *, server_lr: float, denominator: float
                    ) -> np.ndarray:
    """Global model from the running sum of every round's noisy deltas (fixed denominator)."""
    return initial + server_lr * noisy_sum / denominator
