"""Per-user chronological sequences and the leave-one-out train/valid/test split."""

from __future__ import annotations

import logging

import numpy as np

from .errors import DatasetError
from .types import Interactions, UserSplit

log = logging.getLogger(__name__)

HELD_OUT = 2                 # valid + test items per user
DEFAULT_MIN_INTERACTIONS = 3
MIN_SUPPORTED = HELD_OUT + 1  # at least one training item per user


def chronological_order(inter: Interactions) -> np.ndarray:
    """Row order grouping users (by dense index) and sorting each by time.

    The sort is stable: events with equal timestamps keep their file order.
    """
    rows = np.arange(len(inter.users))
    # lexsort: last key is primary; the row number breaks every remaining tie
    return np.lexsort((rows, inter.timestamps, inter.users))


def sequences_by_user(inter: Interactions) -> list[np.ndarray]:
    """Per dense user, the item indices in chronological order (ties keep file order)."""
    order = chronological_order(inter)
    counts = np.bincount(inter.users, minlength=inter.num_users)
    boundaries = np.cumsum(counts)[:-1]
    return [np.ascontiguousarray(seq) for seq in np.split(inter.items[order], boundaries)]


def leave_one_out(inter: Interactions, *,
                  min_interactions: int = DEFAULT_MIN_INTERACTIONS) -> UserSplit:
    """Last item -> test, second-last -> valid, the rest -> train, per user by time.

    Users with fewer than ``min_interactions`` events are dropped (counted and
    logged) and the remaining users re-indexed densely in their original order.
    Items are not re-indexed: the catalogue is that of ``inter``.
    """
    if min_interactions < MIN_SUPPORTED:
        raise ValueError(f"min_interactions must be >= {MIN_SUPPORTED} "
                         f"(valid + test + one training item), got {min_interactions}")
    sequences = sequences_by_user(inter)
    kept = [user for user, seq in enumerate(sequences) if len(seq) >= min_interactions]
    dropped = inter.num_users - len(kept)
    if dropped:
        log.warning("%s: dropped %d of %d users with fewer than %d interactions",
                    inter.source, dropped, inter.num_users, min_interactions)
    if not kept:
        raise DatasetError(f"{inter.source}: no user has >= {min_interactions} interactions")
    return UserSplit(
        train=[sequences[user][:-HELD_OUT] for user in kept],
        valid=np.asarray([sequences[user][-2] for user in kept], dtype=np.int64),
        test=np.asarray([sequences[user][-1] for user in kept], dtype=np.int64),
        num_items=inter.num_items,
        user_ids=[inter.user_ids[user] for user in kept],
        item_ids=list(inter.item_ids),
        item_text=list(inter.item_text) if inter.item_text is not None else None,
        dropped_users=dropped,
    )
