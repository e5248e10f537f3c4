"""Window-level DP of the shared model as distributed DP-SGD: pure math, numpy only.

The mechanism (DP-SGD, Abadi et al., CCS 2016, with the batch spread over devices and the noise split over
them as in Kairouz et al., ICML 2021):

* the server samples each device independently with probability ``q_d = clients_per_round / N`` (Poisson);
* a sampled device keeps each of its training windows independently with probability ``q_w``
  (``privacy.window_sample_rate``), so every window of the population is in the round's batch with
  probability ``q = q_d * q_w``, independently of every other window;
* the device computes each kept window's gradient of the shared parameters at the received global model,
  clips it to L2 norm ``C`` (``privacy.max_grad_norm``), sums them, and adds Gaussian noise of standard
  deviation ``sigma * C / sqrt(min_contributors)`` per coordinate (a device with no kept window sends the
  noise alone); it sends minus that sum with weight 1;
* the global update is ``server_lr * sum / expected_batch`` with a fixed, public denominator.

Adding or removing one window anywhere changes the sum of clipped gradients by at most ``C`` and nothing else
a device sends; while at least ``min_contributors`` honest devices contribute the sum carries noise of std at
least ``sigma * C``: one round is the Poisson-subsampled Gaussian mechanism of rate ``q`` and noise multiplier
``sigma``, composed over rounds by the RDP accountant, for the unit "one training window".
"""

from __future__ import annotations

import numpy as np


def population_sample_rate(*, device_rate: float, window_rate: float) -> float:
    """Probability that a given window is in a round's batch: ``device_rate * window_rate``."""
    for name, rate in (("device_rate", device_rate), ("window_rate", window_rate)):
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {rate}")
    return device_rate * window_rate


def clip_rows(per_window: np.ndarray, *, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """(each row scaled to L2 norm <= clip, the rows' norms before clipping); rows are windows."""
    if clip <= 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    rows = np.asarray(per_window, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1) if rows.size else np.zeros(len(rows))
    factors = np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    return rows * factors[:, None], norms


def box_project(vector: np.ndarray, *, bound: float) -> np.ndarray:
    """Each coordinate clamped to [-bound, bound]: the encoding's range. A projection onto a convex set moves
    two points no further apart, so the sum's L2 sensitivity stays at most the per-window clip."""
    if bound <= 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    return np.clip(vector, -bound, bound)


def noisy_negative_sum(clipped_sum: np.ndarray, *, noise_std: float, rng: np.random.Generator,
                       bound: float | None = None) -> np.ndarray:
    """What a device sends: ``-(sum of clipped gradients [box-projected] + N(0, noise_std^2) per coordinate)``."""
    total = np.asarray(clipped_sum, dtype=np.float64)
    if bound is not None:
        total = box_project(total, bound=bound)
    return -(total + rng.normal(0.0, noise_std, size=total.shape))
