"""Synthetic interactions with a planted long-/short-term interest structure.

Items are split into ``num_clusters`` clusters; the items of each cluster form a
cyclic chain. Every user has 1..``max_favourites`` favourite clusters (long-term
interest). A history is a series of short sessions: each session picks an intent
cluster (a favourite with probability ``favourite_prob``, else any cluster) and
walks along that cluster's chain from a random start, following the chain with
probability ``chain_prob`` per step (else jumping to a random item of the cluster).
The next item is therefore predictable from the last one, while item popularity
stays close to flat, so "most popular" is a weak baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .csvfile import write_csv
from .types import PAD_TOKEN, Interactions

__all__ = ["PlantedStructure", "make_synthetic", "planted_structure", "write_csv"]

DEFAULT_NUM_CLUSTERS = 8
DEFAULT_MEAN_LENGTH = 40        # Poisson mean of a user's history length
DEFAULT_MIN_LENGTH = 5          # every user gets at least this many events
DEFAULT_SESSION_LENGTH = (2, 6)  # inclusive range of events per session
DEFAULT_FAVOURITE_PROB = 0.85
DEFAULT_CHAIN_PROB = 0.9
DEFAULT_MAX_FAVOURITES = 2
START_TIME_S = 1_600_000_000.0  # 2020-09-13, an arbitrary epoch
START_SPREAD_S = 30 * 86_400.0  # users start within the first 30 days
ITEM_GAP_S = (30.0, 300.0)      # uniform gap between events of one session
SESSION_GAP_MEAN_S = 86_400.0   # exponential gap between sessions (plus ITEM_GAP_S[1])
LAYOUT_STREAM, USER_STREAM = 0, 1


@dataclass(frozen=True)
class PlantedStructure:
    """The hidden item layout: a cyclic chain of item indices per cluster."""

    chains: list[np.ndarray]  # per cluster, dense item indices in chain order
    cluster_of: np.ndarray    # (num_items + 1,) cluster per item; [0] == -1 (padding)
    successor: np.ndarray     # (num_items + 1,) next item in the chain; [0] == 0


def planted_structure(*, num_items: int, num_clusters: int = DEFAULT_NUM_CLUSTERS,
                      seed: int) -> PlantedStructure:
    """The chains ``make_synthetic`` uses for the same ``num_items``/``num_clusters``/``seed``."""
    if num_clusters < 1 or num_items < num_clusters:
        raise ValueError(f"need 1 <= num_clusters <= num_items, got num_clusters={num_clusters}, "
                         f"num_items={num_items}")
    rng = np.random.default_rng([seed, LAYOUT_STREAM])
    chains = np.array_split(rng.permutation(num_items).astype(np.int64) + 1, num_clusters)
    cluster_of = np.full(num_items + 1, -1, dtype=np.int64)
    successor = np.zeros(num_items + 1, dtype=np.int64)
    for cluster, chain in enumerate(chains):
        cluster_of[chain] = cluster
        successor[chain] = np.roll(chain, -1)
    return PlantedStructure(chains=list(chains), cluster_of=cluster_of, successor=successor)


def _check(num_users: int, mean_length: int, min_length: int, session_length: tuple[int, int],
           favourite_prob: float, chain_prob: float, max_favourites: int, num_clusters: int) -> None:
    if num_users < 1 or mean_length < 1 or min_length < 1:
        raise ValueError("num_users, mean_length and min_length must be >= 1")
    if not 1 <= session_length[0] <= session_length[1]:
        raise ValueError(f"session_length must be (lo, hi) with 1 <= lo <= hi, got {session_length}")
    if not (0.0 <= favourite_prob <= 1.0 and 0.0 <= chain_prob <= 1.0):
        raise ValueError("favourite_prob and chain_prob must lie in [0, 1]")
    if not 1 <= max_favourites <= num_clusters:
        raise ValueError(f"max_favourites must be in 1..num_clusters, got {max_favourites}")


def _walk(chain: list[int], start: int, steps: int, follows: list[bool],
          jumps: list[float]) -> list[int]:
    """One session: start on ``chain[start]``, then follow the chain or jump within it."""
    position, walked = start, [chain[start]]
    for step in range(1, steps):
        if follows[step]:
            position = (position + 1) % len(chain)
        else:
            position = int(jumps[step] * len(chain))
        walked.append(chain[position])
    return walked


def _user_history(rng: np.random.Generator, layout: PlantedStructure, length: int,
                  session_length: tuple[int, int], favourite_prob: float, chain_prob: float,
                  max_favourites: int) -> tuple[list[int], list[float]]:
    """Items and timestamps of one user: sessions walking along cluster chains."""
    num_clusters = len(layout.chains)
    favourites = rng.choice(num_clusters, size=int(rng.integers(1, max_favourites + 1)),
                            replace=False)
    items: list[int] = []
    stamps: list[float] = []
    clock = START_TIME_S + float(rng.uniform(0.0, START_SPREAD_S))
    while len(items) < length:
        if rng.random() < favourite_prob:
            chain = layout.chains[int(rng.choice(favourites))]
        else:
            chain = layout.chains[int(rng.integers(num_clusters))]
        steps = min(int(rng.integers(session_length[0], session_length[1] + 1)),
                    length - len(items))
        follows = (rng.random(steps) < chain_prob).tolist()
        walked = _walk(chain.tolist(), int(rng.integers(len(chain))), steps, follows,
                       rng.random(steps).tolist())
        clock += ITEM_GAP_S[1] + float(rng.exponential(SESSION_GAP_MEAN_S))
        offsets = np.cumsum(rng.uniform(*ITEM_GAP_S, size=steps))
        items.extend(walked)
        stamps.extend((clock + offsets).tolist())
        clock = stamps[-1]
    return items, stamps


def make_synthetic(*, num_users: int, num_items: int, seed: int,
                   num_clusters: int = DEFAULT_NUM_CLUSTERS,
                   mean_length: int = DEFAULT_MEAN_LENGTH,
                   min_length: int = DEFAULT_MIN_LENGTH,
                   session_length: tuple[int, int] = DEFAULT_SESSION_LENGTH,
                   favourite_prob: float = DEFAULT_FAVOURITE_PROB,
                   chain_prob: float = DEFAULT_CHAIN_PROB,
                   max_favourites: int = DEFAULT_MAX_FAVOURITES) -> Interactions:
    """Deterministic (per ``seed``) synthetic interactions with planted structure.

    Defaults: 8 clusters, history length Poisson(40) but at least 5, sessions of
    2..6 events, intent = a favourite cluster with probability 0.85, the chain is
    followed with probability 0.9 per step, 1..2 favourite clusters per user.
    Dense item index ``k`` has token ``str(k)``; users are ``"u0".."u{U-1}"``;
    rows are grouped by user and timestamps strictly increase per user.
    See ``planted_structure`` for the hidden chains.
    """
    layout = planted_structure(num_items=num_items, num_clusters=num_clusters, seed=seed)
    _check(num_users, mean_length, min_length, session_length, favourite_prob, chain_prob,
           max_favourites, num_clusters)
    rng = np.random.default_rng([seed, USER_STREAM])
    users: list[np.ndarray] = []
    items: list[int] = []
    stamps: list[float] = []
    for user in range(num_users):
        length = max(min_length, int(rng.poisson(mean_length)))
        user_items, user_stamps = _user_history(rng, layout, length, session_length,
                                                favourite_prob, chain_prob, max_favourites)
        users.append(np.full(length, user, dtype=np.int64))
        items.extend(user_items)
        stamps.extend(user_stamps)
    item_text = [""] + [f"Synthetic item {item} (cluster {layout.cluster_of[item]})"
                        for item in range(1, num_items + 1)]
    return Interactions(
        users=np.concatenate(users), items=np.asarray(items, dtype=np.int64),
        timestamps=np.asarray(stamps, dtype=np.float64),
        user_ids=[f"u{user}" for user in range(num_users)],
        item_ids=[PAD_TOKEN] + [str(item) for item in range(1, num_items + 1)],
        item_text=item_text,
        source=f"synthetic(users={num_users}, items={num_items}, clusters={num_clusters}, "
               f"seed={seed})",
    )
