"""Windowing: disjoint windows put every interaction in exactly one sample; strided windows target once."""

import numpy as np
import pytest

from shared_models.train.sequences import build_windows, history_matrix, left_pad, seen_mask, user_windows


def test_left_pad_keeps_most_recent_at_the_end():
    assert left_pad(np.array([5, 6, 7]), 5).tolist() == [0, 0, 5, 6, 7]
    assert left_pad(np.array([1, 2, 3, 4]), 2).tolist() == [3, 4]


def test_disjoint_windows_known_values():
    seq = np.arange(1, 11)  # 10 items, max_len 3 -> windows of 4 items from the end
    ins, outs = user_windows(seq, max_len=3)
    assert ins.tolist() == [[0, 0, 1], [3, 4, 5], [7, 8, 9]]
    assert outs.tolist() == [[0, 0, 2], [4, 5, 6], [8, 9, 10]]


@pytest.mark.parametrize("n", [2, 3, 7, 51, 52, 103, 250])
def test_disjoint_windows_each_interaction_in_exactly_one_sample(n):
    seq = np.arange(1, n + 1)
    ins, outs = user_windows(seq, max_len=50)
    owners: dict[int, set[int]] = {}
    for s, (i, o) in enumerate(zip(ins, outs)):
        for item in set(i.tolist()) | set(o.tolist()):
            if item:
                owners.setdefault(item, set()).add(s)
    assert all(len(v) == 1 for v in owners.values())
    targets = outs[outs > 0]
    assert len(targets) == len(set(targets.tolist()))  # each target once
    assert len(targets) >= n - 1 - n // 51  # at most one item lost per window boundary


def test_strided_windows_target_every_item_once_with_full_context():
    seq = np.arange(1, 21)
    ins, outs = user_windows(seq, max_len=8, stride=4)
    targets = outs[outs > 0]
    assert sorted(targets.tolist()) == list(range(2, 21))
    # the last window sees the 8 most recent inputs
    assert ins[-1].tolist() == list(range(12, 20))
    assert outs[-1].tolist() == [0, 0, 0, 0, 17, 18, 19, 20]


def test_build_windows_and_history_matrix_and_seen_mask():
    seqs = [np.array([1, 2, 3]), np.array([4, 5])]
    w = build_windows(seqs, max_len=4)
    assert len(w) == 2 and w.inputs.shape == (2, 4)
    hm = history_matrix(seqs, max_len=2)
    assert hm.tolist() == [[2, 3], [4, 5]]
    mask = seen_mask(seqs, 6)
    assert mask[0].tolist() == [True, True, True, True, False, False]
    assert mask[1].tolist() == [True, False, False, False, True, True]


def _contexts(ins: np.ndarray, outs: np.ndarray) -> dict[int, list[int]]:
    """target item -> the context length of each sample it is a target in (non-padding inputs up to it)."""
    seen: dict[int, list[int]] = {}
    for i, o in zip(ins, outs):
        for c in np.flatnonzero(o):
            seen.setdefault(int(o[c]), []).append(int((i[: c + 1] != 0).sum()))
    return seen


@pytest.mark.parametrize("n", [2, 5, 9, 10, 23])
def test_every_prefix_windows_known_values(n):
    """stride 1: the target at position p (0-based; items 1..n so item p + 1) appears exactly once, with
    context min(p, max_len), which is what every-prefix training (SASRec, GRU4Rec) gives."""
    max_len = 8
    seq = np.arange(1, n + 1)
    ins, outs = user_windows(seq, max_len=max_len, stride=1)
    ctx = _contexts(ins, outs)
    assert sorted(ctx) == list(range(2, n + 1))
    assert all(len(v) == 1 for v in ctx.values())
    assert {item: v[0] for item, v in ctx.items()} == {p + 1: min(p, max_len) for p in range(1, n)}


def test_every_prefix_windows_exact_layout():
    ins, outs = user_windows(np.arange(1, 7), max_len=3, stride=1)
    # the earliest window owns every target it holds; each later one only its newest
    assert ins.tolist() == [[1, 2, 3], [2, 3, 4], [3, 4, 5]]
    assert outs.tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 6]]


@pytest.mark.parametrize("stride", [1, 2, 3, 5, 8])
def test_strided_windows_context_is_at_least_max_len_minus_stride_plus_one(stride):
    max_len, n = 8, 40
    ctx = _contexts(*user_windows(np.arange(1, n + 1), max_len=max_len, stride=stride))
    assert sorted(ctx) == list(range(2, n + 1)) and all(len(v) == 1 for v in ctx.values())
    for item, (c,) in ctx.items():
        p = item - 1
        assert min(p, max_len - stride + 1) <= c <= min(p, max_len)
