"""Device half of the DP popularity prior (``shared_models/privacy/popularity.py`` has the mechanism).

Before round 1 the server asks every device for a contribution (round id ``PRIOR_ROUND``): the device sends
its clipped distinct-item histogram (under window-level DP: the capped sum of its training windows' clipped
histograms) plus its noise share, encrypted and signed under HE (weight 1, like a
user-level delta), and records that it contributed so a resumed run never gets a second one. Afterwards
every instruction carries the released sum (encrypted under HE); the device decodes it into the output bias.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from client import masks
from client.secure import decrypt_shared, device_keys, encode_update
from shared_models.messages import TrainReply
from shared_models.model.state import stable_hash
from shared_models.privacy.popularity import PRIOR_KEY, PRIOR_ROUND, log_prior, prior_contribution
from shared_models.train.sequences import PAD, user_windows

if TYPE_CHECKING:
    from client.round import RoundInput

USER_PRIOR_STREAM = 3  # SeedSequence spawn key: independent of the other noise streams of the same seed


def contribute(inp: "RoundInput") -> TrainReply:
    """This device's prior contribution (or a refusal if it already sent one in this run)."""
    d, cfg = inp.device, inp.cfg
    p = cfg.privacy
    reply = TrainReply(node=inp.node, device_id=d.data.device_id, round_id=PRIOR_ROUND)
    if PRIOR_ROUND in d.store.contributed_rounds():
        reply.refused, reply.reason = True, "already contributed to the popularity prior of this run"
        return reply
    # a device secret; TESTING ONLY: public per-device values with privacy.reproducible_noise
    seed = (cfg.federated.seed * 7919 + stable_hash(d.data.device_id) if p.reproducible_noise
            else d.store.noise_seed(PRIOR_ROUND))
    window_level = p.mode == "window"  # the unit is one training window: the windows training cuts, each clipped
    noisy = prior_contribution(None if window_level else d.data.train, d.data.num_items, clip=p.prior_clip,
                               noise_multiplier=p.prior_noise_multiplier,
                               min_contributors=p.prior_min_contributors,
                               rng=np.random.default_rng([seed, USER_PRIOR_STREAM]),
                               windows=window_items(d.data.train, max_len=cfg.model.max_len) if window_level
                               else None)
    d.store.record_contribution(PRIOR_ROUND)  # before the contribution leaves the device
    if cfg.he.enabled:
        keys = device_keys(d.keys_dir, d.data.device_id)
        mask = masks.mask_maker(cfg, d.store, keys, run_id=inp.run_id, round_id=PRIOR_ROUND)
        reply.payload, reply.signature, encrypt_s = encode_update({PRIOR_KEY: noisy}, weight=1, keys=keys,
                                                                  round_id=PRIOR_ROUND, run_id=inp.run_id, mask=mask)
        reply.metrics = {"encrypt_s": encrypt_s}
    else:
        reply.shared, reply.num_examples = {PRIOR_KEY: noisy.astype(np.float32)}, 1
    return reply


def window_items(train: np.ndarray, *, max_len: int) -> list[np.ndarray]:
    """The items of each training window a window-level device trains on (``build_windows``, stride 0: every
    training interaction in at most one window; the oldest one is in none when ``len(train) % (max_len + 1)
    == 1``, and training never sees it either)."""
    inputs, targets = user_windows(np.asarray(train, dtype=np.int64), max_len=max_len)
    return [np.union1d(i[i != PAD], t[t != PAD]) for i, t in zip(inputs, targets)]


def decode(released: Any, *, keys_dir: str, device_id: str) -> np.ndarray | None:
    """The output bias from the released prior (encrypted sum or plaintext counts); None when there is none."""
    if released is None or (isinstance(released, (bytes, bytearray)) and not released):
        return None
    if isinstance(released, (bytes, bytearray)):  # decrypted once per process (client/secure.py)
        average, total, _ = decrypt_shared(bytes(released), device_keys(keys_dir, device_id))
        return log_prior(np.asarray(average) * total)  # mean * contributors = the sum
    return log_prior(np.asarray(released[PRIOR_KEY] if isinstance(released, dict) else released))
