"""Full-ranking top-K metrics (no sampled negatives).

The rank of the target is 1 + the number of items scored strictly higher (ties resolved in the target's
favour; masked items score -inf so they never outrank it). With one relevant item per user (leave-one-out):
Recall@K = [rank <= K], NDCG@K = [rank <= K] / log2(rank + 1), MRR@K = [rank <= K] / rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

METRIC_NAMES = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) 1-based rank of each target among all items. ``seen`` (B, I) bool marks items masked out.

    A target that is itself marked ``seen`` (a repeat consumption) stays rankable: masking it would make
    the case unwinnable; everything else the user saw is removed from the ranking.
    """
    scores = scores.float().clone()
    rows = torch.arange(scores.shape[0], device=scores.device)
    if seen is not None:
        keep_target = scores[rows, targets].clone()
        scores = scores.masked_fill(seen.to(scores.device), -math.inf)
        scores[rows, targets] = keep_target
    target_scores = scores[rows, targets].unsqueeze(1)  # (B, 1)
    return (scores > target_scores).sum(dim=1) + 1


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
