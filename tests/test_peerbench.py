"""Pure helpers of benchmarks/bench_peers.py (no RecBole import): the split in RecBole's layout, EASE, and
the ours-vs-best-peer comparison."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from peerbench.compare import format_table, ours_vs_best_peer, summary_rows  # noqa: E402
from peerbench.ease import EASE, ease_weights, interaction_matrix  # noqa: E402
from peerbench.sequences import prefix_samples, right_align  # noqa: E402
from shared_models.train.sequences import history_matrix  # noqa: E402


def test_every_prefix_is_a_right_padded_sample_cut_to_max_len():
    seqs, lengths, targets = prefix_samples([np.array([1, 2, 3, 4]), np.array([7]), np.array([5, 6])], max_len=2)
    assert seqs.tolist() == [[1, 0], [1, 2], [2, 3], [5, 0]]
    assert lengths.tolist() == [1, 2, 2, 1]
    assert targets.tolist() == [2, 3, 4, 6]


def test_right_align_turns_the_evaluator_input_into_recbole_layout():
    inputs = torch.from_numpy(history_matrix([np.array([3, 4]), np.array([1, 2, 3, 4]), np.array([5])], max_len=4))
    seq, lengths = right_align(inputs)
    assert seq.tolist() == [[3, 4, 0, 0], [1, 2, 3, 4], [5, 0, 0, 0]]
    assert lengths.tolist() == [2, 4, 1]


def test_ease_columns_are_the_ridge_regressions_on_the_other_items():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 6)) < 0.4).astype(float)
    b = ease_weights(x, l2=2.0)
    assert np.allclose(np.diag(b), 0.0)
    for j in range(6):
        others = [i for i in range(6) if i != j]
        a = x[:, others]
        ridge = np.linalg.solve(a.T @ a + 2.0 * np.eye(5), a.T @ x[:, j])
        assert np.allclose(b[others, j], ridge)
    with pytest.raises(ValueError, match="l2"):
        ease_weights(x, l2=0.0)


def test_ease_scores_the_multi_hot_history_without_padding_or_repeats():
    train = [np.array([1, 2]), np.array([2, 3]), np.array([1, 3, 4])]
    model = EASE(train, 5, l2=1.0)
    inputs = torch.tensor([[0, 0, 1, 1], [0, 2, 3, 4]])  # item 1 repeated; 0 is padding
    h = torch.tensor([[0, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.float32)
    w = torch.from_numpy(ease_weights(interaction_matrix(train, 5), l2=1.0)).float()
    assert torch.allclose(model.full_sort_predict({"inputs": inputs}), h @ w)


def test_ours_minus_the_best_peer_by_ndcg():
    users = 50
    runs = {"ours": [{"seed": s, "wall_s": 1.0, "ranks": {"masked": [1] * users, "unmasked": [3] * users}}
                     for s in (0, 1)],
            "near": [{"seed": 0, "wall_s": 1.0, "ranks": {"masked": [2] * users, "unmasked": [2] * users}}],
            "far": [{"seed": 0, "wall_s": 1.0, "ranks": {"masked": [20] * users, "unmasked": [30] * users}}]}
    cmp = ours_vs_best_peer(runs, ours="ours", peers=["near", "far"], num_samples=100)
    assert cmp["masked"]["best_peer"] == "near" and cmp["unmasked"]["best_peer"] == "near"
    gap = 1.0 - 1.0 / np.log2(3.0)
    assert cmp["masked"]["ndcg@10"]["diff"] == pytest.approx(gap)
    assert cmp["masked"]["ndcg@10"]["diff_ci"] == pytest.approx([gap, gap])
    assert cmp["unmasked"]["ndcg@10"]["diff"] == pytest.approx(1 / np.log2(4.0) - 1 / np.log2(3.0))
    assert cmp["masked"]["recall@10"]["ratio"] == pytest.approx(1.0)
    table = format_table(summary_rows(runs))
    assert "| ours | 2 | 1.0000 ± 0.0000 |" in table and table.count("\n") == 4
