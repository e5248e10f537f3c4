"""Metric functions against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from shared_models.train.metrics import paired_bootstrap, paired_bootstrap_ratio, per_user_metrics, summarize, target_ranks


def test_ranks_count_scores_at_least_as_high_and_mask_seen():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.7, 0.1],
                           [0.0, 0.2, 0.8, 0.8, 0.9]])
    targets = torch.tensor([2, 3])
    # user 0: items 1 (0.9) and 3 (0.7) beat item 2 -> rank 3; masking item 1 -> rank 2
    assert target_ranks(scores, targets).tolist() == [3, 3]
    seen = torch.zeros_like(scores, dtype=torch.bool)
    seen[0, 1] = True
    seen[1, 4] = True
    # user 1: item 4 masked; item 2 ties with the target (0.8): ties count against the target -> rank 2
    assert target_ranks(scores, targets, seen).tolist() == [2, 2]


def test_target_marked_seen_stays_rankable():
    scores = torch.tensor([[0.0, 0.3, 0.2]])
    seen = torch.tensor([[True, True, True]])
    assert target_ranks(scores, torch.tensor([2]), seen).tolist() == [1]


def test_metric_values_by_hand():
    ranks = np.array([1, 2, 10, 11, 20, 25])
    m = per_user_metrics(ranks)
    assert m["recall@10"].tolist() == [1, 1, 1, 0, 0, 0]
    assert m["recall@20"].tolist() == [1, 1, 1, 1, 1, 0]
    assert m["ndcg@10"][0] == 1.0
    assert m["ndcg@10"][1] == pytest.approx(1 / math.log2(3))
    assert m["ndcg@10"][2] == pytest.approx(1 / math.log2(11))
    assert m["ndcg@10"][3] == 0.0
    assert m["ndcg@20"][4] == pytest.approx(1 / math.log2(21))
    assert m["mrr@10"].tolist() == pytest.approx([1, 0.5, 0.1, 0, 0, 0])
    s = summarize(ranks)
    assert s["recall@10"] == pytest.approx(0.5)
    assert s["mrr@10"] == pytest.approx(1.6 / 6)


def test_unknown_metric_is_an_error():
    with pytest.raises(ValueError, match="hits@3"):
        per_user_metrics(np.array([1]), ["hits@3"])


def test_paired_bootstrap_interval_contains_mean_and_detects_a_real_gap():
    rng = np.random.default_rng(0)
    a = rng.random(500) + 0.1
    b = a - 0.1 + rng.normal(0, 0.01, 500)
    mean, lo, hi = paired_bootstrap(a, b, num_samples=2000, seed=1)
    assert lo < mean < hi
    assert lo > 0.09 and hi < 0.11
    mean0, lo0, hi0 = paired_bootstrap(a, a, num_samples=200, seed=1)
    assert mean0 == lo0 == hi0 == 0.0


def test_paired_bootstrap_ratio_known_values_and_coverage():
    hits = np.array([1.0, 0.0, 1.0, 1.0])
    assert paired_bootstrap_ratio(hits, hits, num_samples=100, seed=0) == (1.0, 1.0, 1.0)  # any resample: 1
    assert paired_bootstrap_ratio(hits / 2, hits, num_samples=100, seed=0) == (0.5, 0.5, 0.5)
    rng = np.random.default_rng(0)  # hit indicators at rates 0.18 vs 0.20 over 943 users, as on ML-100K
    b = (rng.random(943) < 0.20).astype(float)
    a = b * (rng.random(943) < 0.9)  # the federated model misses 10% of the reference's hits
    ratio, lo, hi = paired_bootstrap_ratio(a, b, num_samples=2000, seed=1)
    assert lo < ratio < hi and lo < 0.9 < hi and hi - lo < 0.1
    with pytest.raises(ValueError, match="zero"):
        paired_bootstrap_ratio(hits, np.zeros(4), num_samples=10, seed=0)
    with pytest.raises(ValueError, match="equal"):
        paired_bootstrap_ratio(hits, hits[:3], num_samples=10, seed=0)
