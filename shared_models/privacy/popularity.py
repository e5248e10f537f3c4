"""The DP popularity prior: pure math, numpy only.

Each device turns its training history into a 0/1 vector over the catalogue (1 for every distinct item it
interacted with), scales it to L2 norm at most ``clip`` and adds a Gaussian noise share of standard deviation
``noise_multiplier * clip / sqrt(min_contributors)`` per item before encryption. Adding or removing one device
changes the sum by at most ``clip`` in L2, so the released sum of at least ``min_contributors`` honest
contributions is one Gaussian mechanism of noise multiplier ``noise_multiplier`` over the whole population
(sample rate 1, one step): the accountant composes it with the training rounds into one user-level claim.

Under window-level DP (``privacy.mode = window``) the unit is one training window, so a device sends
:func:`window_histogram` instead: the sum over its training windows of each window's distinct-item histogram
clipped to L2 ``clip``, each coordinate then capped at ``clip``. Adding or removing one window moves that sum
by at most ``clip`` in L2 (the removed window's clipped term, and the cap is 1-Lipschitz per coordinate), so
the same noise shares make the release one Gaussian step of noise multiplier ``noise_multiplier`` per window,
composed into the window-level claim. It is the coordinate cap that keeps every contribution within
:func:`contribution_bound`, whatever the number of windows.

The released noisy counts become the model's output bias ``log(1 + max(count, 0))`` (padding 0), so a model
whose shared weights carry no signal yet ranks like the popularity list.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared_models.privacy.user_level import clip_l2, device_noise_std

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


def window_histogram(windows: Sequence[np.ndarray], num_items: int, *, clip: float) -> np.ndarray:
    """Sum over ``windows`` (each an array of item indices) of the window's distinct-item histogram clipped to
    L2 norm ``clip``, then every coordinate capped at ``clip``; float64, shape (I,). One window more or less
    moves the result by at most ``clip`` in L2."""
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    total = np.zeros(num_items, dtype=np.float64)
    for items in windows:
        total += clip_l2(item_histogram(items, num_items), clip=clip)[0]
    return np.minimum(total, clip)


def prior_contribution(items: np.ndarray | None, num_items: int, *, clip: float, noise_multiplier: float,
                       min_contributors: int, rng: np.random.Generator,
                       windows: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """What one device sends: its clipped histogram plus its noise share (float64, shape (I,)).

    The unit is the device (``items``: its whole training history, clipped once) or, with ``windows``, one
    training window (:func:`window_histogram`); exactly one of the two is given."""
    if (items is None) == (windows is None):
        raise ValueError("give either a device's items (user level) or its training windows (window level)")
    if windows is not None:
        hist = window_histogram(windows, num_items, clip=clip)  # every window already within the clip
    else:
        hist, _ = clip_l2(item_histogram(items, num_items), clip=clip)
    std = device_noise_std(clip=clip, noise_multiplier=noise_multiplier, min_contributors=min_contributors)
    return hist + rng.normal(0.0, std, size=hist.shape)


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
