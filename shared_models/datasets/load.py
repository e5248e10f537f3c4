"""Config -> leave-one-out split (the one entry point jobs use to get data)."""

from __future__ import annotations

import logging
from dataclasses import replace

from shared_models.config import DataConfig
from shared_models.datasets import UserSplit, leave_one_out, load_interactions

log = logging.getLogger(__name__)


def load_split(cfg: DataConfig) -> UserSplit:
    """Load ``cfg.dataset``, split chronologically leave-one-out, optionally keep the first ``max_users``."""
    split = leave_one_out(load_interactions(cfg.dataset), min_interactions=cfg.min_interactions)
    log.info("%s: %d users (%d dropped with < %d interactions), %d items", cfg.dataset, len(split.train),
             split.dropped_users, cfg.min_interactions, split.num_items - 1)
    if cfg.max_users and cfg.max_users < len(split.train):
        n = cfg.max_users
        split = replace(split, train=split.train[:n], valid=split.valid[:n], test=split.test[:n],
                        user_ids=split.user_ids[:n])
        log.info("data.max_users = %d: keeping the first %d users", n, n)
    return split
