"""Histories -> training windows and evaluation batches.

Item index 0 is padding. Sequences are LEFT-padded so the most recent item always sits at position T-1.

Training windows. A user's chronological training items ``s[0..n-1]`` are cut into windows of at most
``max_len + 1`` items, from the end backwards. A window ``w`` gives one training sample: input ``w[:-1]``,
target ``w[1:]`` (next-item prediction at every position).

- ``stride == 0`` (default, and required for interaction-level DP): windows are DISJOINT, so every
  interaction sits in exactly one sample (as input, target or both). Changing one interaction changes one
  sample, which is what makes example-level DP-SGD protect an interaction.
- ``0 < stride <= max_len``: windows end every ``stride`` items and overlap as context; each interaction is
  still a *target* exactly once (targets already covered by a later window are masked to 0), with at least
  ``min(p, max_len - stride + 1)`` items of context at position ``p``; ``stride == 1`` gives every target
  ``min(p, max_len)``, as every-prefix training does. An interaction appears as context in up to
  ``ceil(max_len / stride)`` samples, so use it only without DP (centralized training).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PAD = 0


@dataclass(frozen=True)
class Windows:
    """Training samples: ``inputs`` and ``targets`` of shape (S, T), 0 = padding / ignored target."""

    inputs: np.ndarray  # (S, T) int64
    targets: np.ndarray  # (S, T) int64

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def left_pad(seq: np.ndarray, length: int) -> np.ndarray:
    """Keep the last ``length`` items of ``seq``, left-padded with 0 to exactly ``length``."""
    out = np.zeros(length, dtype=np.int64)
    tail = np.asarray(seq, dtype=np.int64)[-length:]
    if len(tail):
        out[length - len(tail):] = tail
    return out


def user_windows(seq: np.ndarray, *, max_len: int, stride: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cut one chronological sequence into (inputs, targets) windows; see the module docstring.

    A window ending at ``end`` owns the targets at absolute positions ``[end - step, end)`` (its most recent
    ones, with the most context); the earliest window owns every remaining target.
    """
    seq = np.asarray(seq, dtype=np.int64)
    step = max_len + 1 if stride == 0 else stride
    ins: list[np.ndarray] = []
    outs: list[np.ndarray] = []
    end = len(seq)
    while end >= 2:
        start = max(0, end - (max_len + 1))
        w = seq[start:end]
        inp, tgt = w[:-1].copy(), w[1:].copy()
        if start > 0:
            tgt[np.arange(start + 1, end) < end - step] = PAD
        ins.append(left_pad(inp, max_len))
        outs.append(left_pad(tgt, max_len))
        if start == 0:
            break
        end -= step
    if not ins:
        return np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64)
    return np.stack(ins[::-1]), np.stack(outs[::-1])


def build_windows(train_seqs: list[np.ndarray], *, max_len: int, stride: int = 0) -> Windows:
    """Windows for many users, concatenated in user order."""
    ins, outs = [], []
    for seq in train_seqs:
        i, o = user_windows(seq, max_len=max_len, stride=stride)
        ins.append(i)
        outs.append(o)
    if not ins:
        return Windows(np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64))
    return Windows(np.concatenate(ins), np.concatenate(outs))


def history_matrix(histories: list[np.ndarray], *, max_len: int) -> np.ndarray:
    """(U, T) left-padded last ``max_len`` items of each history: the model input at evaluation."""
    return np.stack([left_pad(h, max_len) for h in histories]) if histories else np.zeros((0, max_len), np.int64)


def seen_mask(histories: list[np.ndarray], num_items: int) -> torch.Tensor:
    """(U, I) bool: items each user already interacted with (masked in full ranking), plus padding."""
    mask = torch.zeros((len(histories), num_items), dtype=torch.bool)
    for u, h in enumerate(histories):
        if len(h):
            mask[u, torch.as_tensor(np.asarray(h, dtype=np.int64))] = True
    mask[:, PAD] = True
    return mask


def iterate_batches(n: int, batch_size: int, *, generator: np.random.Generator | None = None):
    """Yield index arrays covering range(n) in batches; shuffled when a generator is given."""
    order = generator.permutation(n) if generator is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]
