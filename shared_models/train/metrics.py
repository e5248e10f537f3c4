"""Full-ranking top-K metrics (no sampled negatives).

The rank of the target is 1 + the number of candidate items scored at least as high as it (ties resolved
against the target: a model that scores every item the same ranks every target last, not first). Excluded
items (padding, and the user's history under the masked protocol) are no candidates; the target always is.
A NaN or infinite score of a candidate or of the target is an error. With one relevant item per user
(leave-one-out): Recall@K = [rank <= K], NDCG@K = [rank <= K] / log2(rank + 1), MRR@K = [rank <= K] / rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

METRIC_NAMES = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor | None = None, *,
                 first_row: int = 0) -> torch.Tensor:
    """(B,) 1-based rank of each target among the candidate items. ``excluded`` (B, I) bool marks items
    removed from the ranking (never the target: a repeat consumption stays rankable, masking it would make
    the case unwinnable). Ties count against the target. ``first_row`` numbers the rows in error messages."""
    scores = scores.float()
    rows = torch.arange(scores.shape[0], device=scores.device)
    candidate = (torch.ones_like(scores, dtype=torch.bool) if excluded is None
                 else ~excluded.to(device=scores.device, dtype=torch.bool))
    candidate[rows, targets] = True
    bad = candidate & ~torch.isfinite(scores)
    if bad.any():
        row, item = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"non-finite score {float(scores[row, item])} for item {item} of row {first_row + row} "
                         f"({int(bad.any(dim=1).sum())} rows affected): the model's scores cannot be ranked")
    candidate[rows, targets] = False
    target_scores = scores[rows, targets].unsqueeze(1)  # (B, 1)
    return ((scores >= target_scores) & candidate).sum(dim=1) + 1


def per_user_metrics(ranks: np.ndarray | torch.Tensor, names: Iterable[str] = METRIC_NAMES) -> dict[str, np.ndarray]:
    """Per-user values of each metric (for averaging and paired bootstraps)."""
    r = np.asarray(ranks.cpu() if isinstance(ranks, torch.Tensor) else ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for name in names:
        kind, k_str = name.split("@")
        k = int(k_str)
        hit = r <= k
        if kind == "recall":
            out[name] = hit.astype(np.float64)
        elif kind == "ndcg":
            out[name] = np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
        elif kind == "mrr":
            out[name] = np.where(hit, 1.0 / r, 0.0)
        else:
            raise ValueError(f"unknown metric {name!r} (expected recall@K, ndcg@K or mrr@K)")
    return out


def summarize(ranks: np.ndarray | torch.Tensor, names: Iterable[str] = METRIC_NAMES) -> dict[str, float]:
    """Mean of each metric over users."""
    return {k: float(v.mean()) if len(v) else 0.0 for k, v in per_user_metrics(ranks, names).items()}


def _resampled_interval(statistic, n: int, *, num_samples: int, seed: int,
                        confidence: float) -> tuple[float, float]:
    """Quantile interval of ``statistic(idx)`` over ``num_samples`` resamples (with replacement) of n users."""
    idx = np.random.default_rng(seed).integers(0, n, size=(num_samples, n))
    lo, hi = np.quantile(statistic(idx), [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, num_samples: int, seed: int,
                     confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of (a - b) over users and its bootstrap confidence interval (users resampled jointly)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs equal shapes, got {a.shape} and {b.shape}")
    diff = a - b
    lo, hi = _resampled_interval(lambda idx: diff[idx].mean(axis=1), len(diff), num_samples=num_samples,
                                 seed=seed, confidence=confidence)
    return float(diff.mean()), lo, hi


def paired_bootstrap_ratio(a: np.ndarray, b: np.ndarray, *, num_samples: int, seed: int,
                           confidence: float = 0.95) -> tuple[float, float, float]:
    """mean(a) / mean(b) over users and its bootstrap confidence interval (users resampled jointly)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired bootstrap needs two equal 1-D shapes, got {a.shape} and {b.shape}")
    if b.sum() <= 0:
        raise ValueError("the reference metric is zero for every user: no ratio")
    lo, hi = _resampled_interval(
        lambda idx: a[idx].mean(axis=1) / np.maximum(b[idx].mean(axis=1), np.finfo(float).tiny), len(a),
        num_samples=num_samples, seed=seed, confidence=confidence)
    return float(a.mean() / b.mean()), lo, hi
