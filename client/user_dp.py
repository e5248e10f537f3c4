"""Device side of user-level DP: turn the trained shared weights into a clipped, noised delta.

Runs on the device, before encryption (``privacy.mode = user | example+user``): the server only ever sees the
encrypted sum of these deltas, and with >= ``min_train_nodes`` contributors that sum carries the full noise.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from shared_models.config import Config
from shared_models.model.state import flatten, unflatten
from shared_models.privacy.distributed import distributed_dp
from shared_models.privacy.user_level import privatize_delta

USER_NOISE_STREAM = 2  # SeedSequence spawn key: independent of the example-level DP-SGD stream of the same seed


def user_level_decoding(cfg: Config) -> dict:
    """Keyword arguments of ``client.secure.global_model`` for this config: under distributed noise (user and
    window modes) the running sum of noisy deltas over the public denominator of the mode."""
    if not cfg.privacy.distributed:
        return {"user_level": False}
    return {"user_level": True, "server_lr": cfg.federated.server_lr, "denominator": distributed_dp(cfg).denominator}


def noisy_delta(trained: dict[str, np.ndarray], global_shared: dict[str, np.ndarray], *, cfg: Config,
                noise_seed: int) -> tuple["OrderedDict[str, np.ndarray]", float]:
    """(clipped delta + this device's noise share, keyed like ``trained``; the delta's L2 norm before clip)."""
    missing = sorted(set(trained) - set(global_shared))
    if missing:
        raise KeyError(f"trained weights carry parameters absent from the global model: {missing[:3]}")
    start = OrderedDict((k, np.asarray(global_shared[k])) for k in trained)
    delta = flatten(trained) - flatten(start)
    p = cfg.privacy
    rng = np.random.default_rng([noise_seed, USER_NOISE_STREAM])
    noisy, norm = privatize_delta(delta, clip=p.user_clip, noise_multiplier=p.user_noise_multiplier,
                                  min_contributors=cfg.federated.min_train_nodes, rng=rng)
    return unflatten(noisy, trained), norm
