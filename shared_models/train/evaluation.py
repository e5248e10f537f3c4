"""Full-catalogue evaluation of any model that implements ``full_sort_predict``.

Two protocols come out of one forward pass: ``masked`` removes every item of the user's history from the
ranking (the target excepted), ``unmasked`` lets every item but padding compete (RecBole's sequential
protocol). ``eval.mask-history`` picks which one a result reports as ``metrics``; the other is always
reported next to it under ``metrics_<protocol>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared_models.train.metrics import summarize, target_ranks
from shared_models.train.sequences import PAD, history_matrix, seen_mask

PROTOCOLS = ("masked", "unmasked")


def protocols(mask_history: bool) -> tuple[str, str]:
    """(chosen, other) protocol names for ``eval.mask-history``."""
    return PROTOCOLS if mask_history else PROTOCOLS[::-1]


@dataclass(frozen=True)
class Ranks:
    """(U,) 1-based ranks of the same targets under both protocols."""

    masked: np.ndarray
    unmasked: np.ndarray

    def of(self, protocol: str) -> np.ndarray:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        return self.masked if protocol == "masked" else self.unmasked


def rank_targets(model, histories: list[np.ndarray], targets: np.ndarray, *, num_items: int, max_len: int,
                 batch_size: int, device: str | torch.device = "cpu", mask_history: bool = True) -> np.ndarray:
    """(U,) 1-based rank of each user's target under one protocol (see :func:`rank_targets_both`)."""
    ranks = rank_targets_both(model, histories, targets, num_items=num_items, max_len=max_len,
                              batch_size=batch_size, device=device)
    return ranks.of(protocols(mask_history)[0])


@torch.no_grad()
def rank_targets_both(model, histories: list[np.ndarray], targets: np.ndarray, *, num_items: int, max_len: int,
                      batch_size: int, device: str | torch.device = "cpu") -> Ranks:
    """Rank of each user's target among all items, with and without the user's history masked.

    The model sees the last ``max_len`` items of each history (left-padded); under ``masked`` every item in
    the history (not only the last ``max_len``) is removed from the ranking. Padding never competes. A
    non-finite score raises ValueError naming the row (the index into ``histories``).
    """
    if len(histories) != len(targets):
        raise ValueError(f"{len(histories)} histories but {len(targets)} targets")
    if hasattr(model, "train"):
        model.eval()
    inputs = torch.from_numpy(history_matrix(histories, max_len=max_len))
    tgt = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    masked, unmasked = [], []
    for start in range(0, len(histories), batch_size):
        sl = slice(start, start + batch_size)
        scores = model.full_sort_predict({"inputs": inputs[sl].to(device)}).cpu()
        padding = torch.zeros_like(scores, dtype=torch.bool)
        padding[:, PAD] = True
        masked.append(target_ranks(scores, tgt[sl], seen_mask(histories[sl], num_items), first_row=start))
        unmasked.append(target_ranks(scores, tgt[sl], padding, first_row=start))
    empty = np.zeros(0, dtype=np.int64)
    return Ranks(torch.cat(masked).numpy() if masked else empty, torch.cat(unmasked).numpy() if unmasked else empty)


def stage_data(split, stage: str) -> tuple[list[np.ndarray], np.ndarray]:
    """(histories, targets) of ``stage`` = "valid" (history = train) or "test" (history = train + valid item)."""
    if stage == "valid":
        return split.train, split.valid
    if stage == "test":
        return [np.append(t, v) for t, v in zip(split.train, split.valid)], split.test
    raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")


def evaluate_split(model, split, *, stage: str, max_len: int, batch_size: int, device: str | torch.device = "cpu",
                   mask_history: bool = True) -> tuple[dict[str, float], np.ndarray]:
    """Metrics and ranks of one protocol on ``stage``."""
    metrics, ranks = evaluate_split_both(model, split, stage=stage, max_len=max_len, batch_size=batch_size,
                                         device=device)
    chosen = protocols(mask_history)[0]
    return metrics[chosen], ranks.of(chosen)


def evaluate_split_both(model, split, *, stage: str, max_len: int, batch_size: int,
                        device: str | torch.device = "cpu") -> tuple[dict[str, dict[str, float]], Ranks]:
    """Metrics of both protocols on ``stage`` ({"masked": {...}, "unmasked": {...}}) and the ranks."""
    histories, targets = stage_data(split, stage)
    ranks = rank_targets_both(model, histories, targets, num_items=split.num_items, max_len=max_len,
                              batch_size=batch_size, device=device)
    return {p: summarize(ranks.of(p)) for p in PROTOCOLS}, ranks
