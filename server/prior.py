"""Server side of the DP popularity prior: ask every device once, sum, release, account.

Before round 1 every registered device is asked (round id ``PRIOR_ROUND``) for its clipped distinct-item
histogram plus its noise share (``client/prior.py``). Under HE the contributions are verified and summed as
ciphertexts (the server never sees a count); without HE each is checked (shape, finite, within the bound an
honest one has) and summed. With fewer than ``privacy.prior_min_contributors`` valid contributions nothing is
released (the per-device shares would not add up to the claimed noise). The release is charged to the
server's ledger (user- or window-level) first (one Gaussian step at sample rate 1), then kept in RUN_DIR/server/ so a resumed run
sends the same prior without asking again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from server.loop import train_sampled
from server.masks import attach_masks
from server.run_id import run_identity
from server.secure import SecureAggregation
from server.user_dp import UserAccountant
from shared_models.atomic_io import atomic_write_bytes
from shared_models.config import Config
from shared_models.crypto import load_server_keys
from shared_models.messages import TrainReply
from shared_models.privacy.popularity import PRIOR_KEY, PRIOR_ROUND, contribution_bound

log = logging.getLogger(__name__)
PRIOR_CKKS = Path("server") / "prior_sum.ckks"
PRIOR_NPY = Path("server") / "prior_sum.npy"


def saved_prior(cfg: Config, run_dir: Path) -> Any:
    """The prior this run already released (encrypted sum or plaintext counts), else None."""
    path = Path(run_dir) / (PRIOR_CKKS if cfg.he.enabled else PRIOR_NPY)
    if not path.is_file():
        return None
    if cfg.he.enabled:
        return path.read_bytes()
    return {PRIOR_KEY: np.load(path, allow_pickle=False)}


def release_prior(cfg: Config, transport, run_dir: Path, *, num_items: int, keys_dir: str,
                  accountant: UserAccountant | None) -> tuple[Any, dict[str, Any]]:
    """(the released prior or None, a summary for metrics.json); asks the devices only the first time."""
    p = cfg.privacy
    summary: dict[str, Any] = {"noise_multiplier": p.prior_noise_multiplier, "clip": p.prior_clip,
                               "min_contributors": p.prior_min_contributors, "sample_rate": 1.0}
    if (released := saved_prior(cfg, run_dir)) is not None:
        return released, {**summary, "released": True}
    if accountant is not None and accountant.would_exceed_prior(p.prior_noise_multiplier):
        raise RuntimeError(f"the popularity prior alone would exceed {accountant.target_key} = "
                           f"{accountant.ledger.target_epsilon} (raise privacy.prior_noise_multiplier)")
    nodes = transport.node_ids()
    if cfg.he.enabled:
        state, contributors, rejected = _sum_encrypted(cfg, transport, nodes, num_items, keys_dir, run_dir)
    else:
        state, contributors, rejected = _sum_plain(cfg, transport.train(PRIOR_ROUND, nodes, None), num_items)
    summary.update(asked=len(nodes), contributors=contributors, rejected=rejected)
    if contributors < p.prior_min_contributors or state is None:
        log.warning("popularity prior: %d valid contributions of %d devices, privacy.prior_min_contributors = %d: "
                    "nothing released, the model has no prior", contributors, len(nodes), p.prior_min_contributors)
        return None, {**summary, "released": False}
    if accountant is not None:
        accountant.record_prior(p.prior_noise_multiplier)  # charged before anything is released
    path = Path(run_dir) / (PRIOR_CKKS if cfg.he.enabled else PRIOR_NPY)
    if cfg.he.enabled:
        atomic_write_bytes(path, state)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, state[PRIOR_KEY])
    log.info("popularity prior released from %d devices", contributors)
    return state, {**summary, "released": True}


def _sum_encrypted(cfg: Config, transport, nodes: list[int], num_items: int, keys_dir: str, run_dir: Path):
    agg = SecureAggregation(load_server_keys(Path(keys_dir), n_threads=1), n_params=num_items,
                            run_id=run_identity(run_dir))
    attach_masks(cfg, agg, transport)
    agg.begin(PRIOR_ROUND, nodes)
    replies = train_sampled(transport, agg, PRIOR_ROUND, nodes)
    rejected = 0
    for rep in replies:
        if rep.error or rep.refused:
            continue
        rejected += bool(agg.offer(rep))
    ok = agg.finish(min_train_nodes=cfg.privacy.prior_min_contributors)
    return (agg.broadcast() if ok else None), agg.round.aggregator.n_summands, rejected


def _sum_plain(cfg: Config, replies: list[TrainReply], num_items: int):
    p = cfg.privacy
    bound = contribution_bound(clip=p.prior_clip, noise_multiplier=p.prior_noise_multiplier,
                               min_contributors=p.prior_min_contributors)
    total, contributors, rejected = np.zeros(num_items, dtype=np.float64), 0, 0
    for rep in replies:
        if rep.error or rep.refused:
            continue
        why = _invalid(rep, num_items, bound)
        if why:
            log.warning("popularity prior: node %d rejected (%s)", rep.node, why)
            rejected += 1
            continue
        total += np.asarray(rep.shared[PRIOR_KEY], dtype=np.float64)
        contributors += 1
    return {PRIOR_KEY: total.astype(np.float32)}, contributors, rejected


def _invalid(rep: TrainReply, num_items: int, bound: float) -> str:
    shared = rep.shared or {}
    if set(shared) != {PRIOR_KEY}:
        return f"expected exactly the array {PRIOR_KEY!r}, got {sorted(shared)[:3]}"
    x = np.asarray(shared[PRIOR_KEY])
    if x.shape != (num_items,) or x.dtype.kind != "f":
        return f"expected float array of shape ({num_items},), got {x.dtype} {x.shape}"
    if not np.all(np.isfinite(x)) or float(np.abs(x).max(initial=0.0)) > bound:
        return f"values not finite or beyond {bound:.4g}"
    return ""
