"""Plain data containers shared by the loaders, the splitter and the simulations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_TOKEN = "[PAD]"
PAD_INDEX = 0


@dataclass(frozen=True)
class Interactions:
    """All user-item events of one dataset, one row per event in file order.

    Users are densely indexed ``0..U-1`` and items ``1..I`` (index 0 is padding),
    both in order of first appearance in the file.
    """

    users: np.ndarray        # (N,) int64 dense user index, file order
    items: np.ndarray        # (N,) int64 dense item index 1..I
    timestamps: np.ndarray   # (N,) float64
    user_ids: list[str]      # raw token of each dense user index
    item_ids: list[str]      # raw token of each dense item index; [0] == PAD_TOKEN
    item_text: list[str] | None  # "Title (year) — genre1, genre2" per dense item; [0] == ""
    source: str              # human-readable origin (a path or "ml-100k")

    @property
    def num_users(self) -> int:
        """Number of distinct users."""
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        """Catalogue size INCLUDING the padding index 0."""
        return len(self.item_ids)

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass(frozen=True)
class UserSplit:
    """Leave-one-out split: per user train history, one validation and one test item."""

    train: list[np.ndarray]  # per dense user: chronological items, all but the last two
    valid: np.ndarray        # (U,) int64 second-last item
    test: np.ndarray         # (U,) int64 last item
    num_items: int           # catalogue size incl. padding index 0
    user_ids: list[str]
    item_ids: list[str]
    item_text: list[str] | None
    dropped_users: int       # users removed for having too few interactions

    @property
    def num_users(self) -> int:
        """Number of users kept in the split."""
        return len(self.user_ids)
