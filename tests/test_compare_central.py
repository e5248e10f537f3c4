"""benchmarks/compare_central.py: train-central results and bench_peers runs side by side, paired intervals."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from compare_central import chain_successor_users, long_tail_users, paired_lines, parse_runs, restrict  # noqa: E402

from shared_models.datasets import UserSplit  # noqa: E402


def _result(path: Path, seed: int, ranks: list[int], unmasked: list[int]) -> str:
    path.write_text(json.dumps({"protocol": "masked", "config": {"train": {"seed": seed}}, "wall_s": 1.0,
                                "epochs": 3, "test_ranks": ranks, "test_ranks_unmasked": unmasked}))
    return str(path)


def test_a_model_ranking_every_target_first_beats_one_ranking_them_last(tmp_path):
    n = 50
    good = [_result(tmp_path / f"g{s}.json", s, [1] * n, [2] * n) for s in (0, 1)]
    bad = [_result(tmp_path / f"b{s}.json", s, [100] * n, [100] * n) for s in (0, 1)]
    peer = tmp_path / "peer.json"
    peer.write_text(json.dumps({"seed": 0, "wall_s": 2.0, "ranks": {"masked": [11] * n, "unmasked": [1] * n}}))
    runs = parse_runs([[f"good={good[0]}", good[1]], [f"bad={bad[0]}", f"bad={bad[1]}"], [f"peer={peer}"]])
    assert [r["seed"] for r in runs["good"]] == [0, 1] and runs["peer"][0]["ranks"]["unmasked"][0] == 1
    lines = paired_lines(runs, "good", num_samples=200)
    masked_vs_bad = next(line for line in lines if "masked NDCG@10, good minus bad" in line and "unmasked" not in line)
    assert "seed 0 +1.0000 [+1.0000, +1.0000]" in masked_vs_bad  # NDCG@10 of rank 1 is 1, of rank 100 is 0
    unmasked_vs_peer = next(line for line in lines if line.startswith("- unmasked NDCG@10, good minus peer"))
    expected = 1 / np.log2(3) - 1
    assert f"seed 0 {expected:+.4f}" in unmasked_vs_peer


def _split(train: list[list[int]], test: list[int], num_items: int = 7) -> UserSplit:
    n = len(train)
    return UserSplit(train=[np.asarray(t, dtype=np.int64) for t in train], valid=np.ones(n, dtype=np.int64),
                     test=np.asarray(test, dtype=np.int64), num_items=num_items, user_ids=[str(u) for u in range(n)],
                     item_ids=["[PAD]", *map(str, range(1, num_items))], item_text=None, dropped_users=0)


def test_the_long_tail_is_the_users_whose_test_item_is_rare_in_training(tmp_path):
    # training counts over all users: item 1 -> 3, 2 -> 2, 3 -> 2, 4 -> 1, 5 and 6 -> 0
    split = _split([[1, 1, 2], [1, 2, 3], [3], [4]], test=[1, 5, 2, 4])
    assert long_tail_users(split, 2).tolist() == [1, 2, 3]
    assert long_tail_users(split, 1).tolist() == [1, 3]
    assert long_tail_users(split, 0).tolist() == [1]
    runs = parse_runs([[f"a={_result(tmp_path / 'a.json', 0, [1, 2, 3, 4], [5, 6, 7, 8])}"]])
    tail = restrict(runs, long_tail_users(split, 1), split.num_users)
    assert tail["a"][0]["ranks"] == {"masked": [2, 4], "unmasked": [6, 8]}
    short = parse_runs([[f"b={_result(tmp_path / 'b.json', 0, [1, 2, 3], [1, 2, 3])}"]])
    with pytest.raises(SystemExit, match="b.json: 3 masked test ranks, the split has 4 users"):
        restrict(short, long_tail_users(split, 1), split.num_users)


def test_the_planted_slice_is_the_users_whose_test_item_follows_the_chain_from_their_validation_item():
    from shared_models.datasets.synth import planted_structure

    layout = planted_structure(num_items=16, seed=3)  # 8 chains of 2 items
    nxt = layout.successor
    ids = ["[PAD]", *(str(17 - i) for i in range(1, 17))]  # dense index i <-> item id 17 - i
    dense = {int(t): i for i, t in enumerate(ids) if i}
    pairs = [(1, int(nxt[1])), (2, 2), (5, int(nxt[5])), (6, int(nxt[nxt[nxt[6]]]))]  # (validation, test) ids
    split = UserSplit(train=[np.asarray([dense[v]]) for v, _ in pairs],
                      valid=np.asarray([dense[v] for v, _ in pairs]), test=np.asarray([dense[t] for _, t in pairs]),
                      num_items=17, user_ids=["a", "b", "c", "d"], item_ids=ids, item_text=None, dropped_users=0)
    assert chain_successor_users(split, num_items=16, seed=3).tolist() == [0, 2, 3]  # 3 steps on a 2-cycle = 1
    with pytest.raises(SystemExit, match="--planted 12:3: the split's items are not 1..12"):
        chain_successor_users(split, num_items=12, seed=3)
