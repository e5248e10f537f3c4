"""The DP popularity prior: pure math, numpy only.

Each device turns its training history into a 0/1 vector over the catalogue (1 for every distinct item it
interacted with), scales it to L2 norm at most ``clip`` and adds a Gaussian noise share of standard deviation
``noise_multiplier * clip / sqrt(min_contributors)`` per item before encryption. Adding or removing one device
changes the sum by at most ``clip`` in L2, so the released sum of at least ``min_contributors`` honest
contributions is one Gaussian mechanism of noise multiplier ``noise_multiplier`` over the whole population
(sample rate 1, one step): the accountant composes it with the training rounds into one user-level claim.

The released noisy counts become the model's output bias ``log(1 + max(count, 0))`` (padding 0), so a model
whose shared weights carry no signal yet ranks like the popularity list.
"""

from __future__ import annotations

import numpy as np

from shared_models.privacy.user_level import privatize_delta

PRIOR_ROUND = 0  # the release happens before round 1: the round id devices sign and ledgers record
PRIOR_KEY = "item_prior"  # the one array of a plaintext contribution / release


def item_histogram(items: np.ndarray, num_items: int) -> np.ndarray:
    """1.0 for every distinct item index in ``items`` (padding index 0 never counts); float64, shape (I,)."""
    items = np.asarray(items, dtype=np.int64)
    if len(items) and (items.min() < 0 or items.max() >= num_items):
        raise ValueError(f"item index outside the catalogue [0, {num_items - 1}]")
    hist = np.zeros(num_items, dtype=np.float64)
    hist[np.unique(items)] = 1.0
    hist[0] = 0.0
    return hist


def prior_contribution(items: np.ndarray, num_items: int, *, clip: float, noise_multiplier: float,
                       min_contributors: int, rng: np.random.Generator) -> np.ndarray:
    """What one device sends: its clipped histogram plus its noise share (float64, shape (I,))."""
    noisy, _ = privatize_delta(item_histogram(items, num_items), clip=clip, noise_multiplier=noise_multiplier,
                               min_contributors=min_contributors, rng=rng)
    return noisy


def contribution_bound(*, clip: float, noise_multiplier: float, min_contributors: int, sigmas: float = 8.0) -> float:
    """Largest |coordinate| an honest contribution has (clip plus ``sigmas`` noise-share std): a plaintext
    server rejects anything beyond it, and under HE it must fit ``he.clip_range``."""
    return clip + sigmas * noise_multiplier * clip / min_contributors ** 0.5


def log_prior(noisy_sum: np.ndarray) -> np.ndarray:
    """The output bias from released noisy counts: log(1 + max(count, 0)), padding 0; float32."""
    counts = np.asarray(noisy_sum, dtype=np.float64)
    if not np.all(np.isfinite(counts)):
        raise ValueError("the released popularity counts are not all finite")
    prior = np.log1p(np.clip(counts, 0.0, None)).astype(np.float32)
    prior[0] = 0.0
    return prior
