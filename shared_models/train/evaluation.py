"""Full-catalogue evaluation of any model that implements ``full_sort_predict``."""

from __future__ import annotations

import numpy as np
import torch

from shared_models.train.metrics import summarize, target_ranks
from shared_models.train.sequences import history_matrix, seen_mask


@torch.no_grad()
def rank_targets(model, histories: list[np.ndarray], targets: np.ndarray, *, num_items: int, max_len: int,
                 batch_size: int, device: str | torch.device = "cpu") -> np.ndarray:
    """(U,) 1-based rank of each user's target among all items, with the user's history masked.

    The model sees the last ``max_len`` items of each history (left-padded); every item in the history
    (not only the last ``max_len``) is masked from the ranking.
    """
    if len(histories) != len(targets):
        raise ValueError(f"{len(histories)} histories but {len(targets)} targets")
    if hasattr(model, "train"):
        model.eval()
    inputs = torch.from_numpy(history_matrix(histories, max_len=max_len))
    tgt = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    ranks = []
    for start in range(0, len(histories), batch_size):
        sl = slice(start, start + batch_size)
        scores = model.full_sort_predict({"inputs": inputs[sl].to(device)})
        ranks.append(target_ranks(scores.cpu(), tgt[sl], seen_mask(histories[sl], num_items)))
    return torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)


def evaluate_split(model, split, *, stage: str, max_len: int, batch_size: int,
                   device: str | torch.device = "cpu") -> tuple[dict[str, float], np.ndarray]:
    """Metrics on ``stage`` = "valid" (history = train) or "test" (history = train + valid item)."""
    if stage == "valid":
        histories, targets = split.train, split.valid
    elif stage == "test":
        histories = [np.append(t, v) for t, v in zip(split.train, split.valid)]
        targets = split.test
    else:
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
    ranks = rank_targets(model, histories, targets, num_items=split.num_items, max_len=max_len,
                         batch_size=batch_size, device=device)
    return summarize(ranks), ranks
