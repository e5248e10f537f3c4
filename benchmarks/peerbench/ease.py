"""EASE (Steck, WWW 2019): a closed-form item-item linear autoencoder, a strong non-neural baseline.

B = argmin ||X - X B||^2 + l2 ||B||^2 subject to diag(B) = 0, with X the binary user x item matrix of the
training sequences: P = (X^T X + l2 I)^-1, B = -P / diag(P) (column-wise), diag(B) = 0. A user's scores are
h B with h the multi-hot of the whole history the evaluator passes (give it ``max_len`` >= the longest
history so nothing is cut).
"""

from __future__ import annotations

import numpy as np
import torch

from shared_models.train.sequences import PAD


def interaction_matrix(seqs: list[np.ndarray], num_items: int) -> np.ndarray:
    """(U, I) float64 0/1: which items each sequence holds."""
    x = np.zeros((len(seqs), num_items), dtype=np.float64)
    for u, s in enumerate(seqs):
        x[u, np.asarray(s, dtype=np.int64)] = 1.0
    return x


def ease_weights(x: np.ndarray, *, l2: float) -> np.ndarray:
    """(I, I) EASE item-item weights with a zero diagonal."""
    if l2 <= 0:
        raise ValueError(f"EASE l2 must be > 0, got {l2}")
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


class EASE:
    """``full_sort_predict`` over left-padded histories (the project's evaluator contract)."""

    def __init__(self, train: list[np.ndarray], num_items: int, *, l2: float) -> None:
        self.num_items = num_items
        self.l2 = l2
        self.weights = torch.from_numpy(ease_weights(interaction_matrix(train, num_items), l2=l2)).float()

    def full_sort_predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = batch["inputs"].cpu()
        h = torch.zeros((inputs.shape[0], self.num_items), dtype=torch.float32)
        h.scatter_(1, inputs, 1.0)
        h[:, PAD] = 0.0
        return h @ self.weights
