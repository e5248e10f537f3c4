"""The project's split in RecBole's sequential layout (pure numpy/torch: no RecBole import).

RecBole's sequential datasets train on every prefix of each user's training sequence: for a sequence s and
each t >= 1, the input is the last ``max_len`` items of s[:t] stored right-padded (items first, then 0) with
its length, and the target is s[t]. The project's evaluator feeds models left-padded histories instead;
:func:`right_align` converts them.
"""

from __future__ import annotations

import numpy as np
import torch

from shared_models.train.sequences import PAD


def prefix_samples(train: list[np.ndarray], *, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, max_len) right-padded inputs, (N,) lengths, (N,) targets: one sample per (user, position >= 1)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    n = sum(max(len(s) - 1, 0) for s in train)
    seqs = np.zeros((n, max_len), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    targets = np.zeros(n, dtype=np.int64)
    row = 0
    for s in train:
        s = np.asarray(s, dtype=np.int64)
        for t in range(1, len(s)):
            prefix = s[max(0, t - max_len):t]
            seqs[row, :len(prefix)] = prefix
            lengths[row] = len(prefix)
            targets[row] = s[t]
            row += 1
    return seqs, lengths, targets


def right_align(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (B, T) histories -> right-padded (B, T) and (B,) lengths (order of items kept)."""
    is_pad = inputs == PAD
    order = torch.argsort(is_pad.to(torch.int8), dim=1, stable=True)  # items first, in their order
    return torch.gather(inputs, 1, order), (~is_pad).sum(dim=1)
