"""Most-popular baseline with the same contract as the neural models (unseen items are masked by the evaluator)."""

from __future__ import annotations

import numpy as np
import torch

from shared_models.train.sequences import PAD


class PopularityModel:
    """Scores every item by its number of training interactions."""

    def __init__(self, train_seqs: list[np.ndarray], num_items: int) -> None:
        counts = np.zeros(num_items, dtype=np.float64)
        for seq in train_seqs:
            np.add.at(counts, np.asarray(seq, dtype=np.int64), 1.0)
        counts[PAD] = -np.inf
        self.num_items = num_items
        self.counts = torch.from_numpy(counts).float()

    def calculate_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.zeros(())  # nothing to learn

    def full_sort_predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.counts.expand(batch["inputs"].shape[0], -1)  # (B, I)

    def eval(self) -> "PopularityModel":
        return self
