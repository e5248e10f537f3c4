"""Leave-one-out split on a hand-made CSV with known answers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from shared_models.datasets import DatasetError, leave_one_out, load_interactions, sequences_by_user

TINY_CSV = """user,item,timestamp
alice,10,5
bob,20,1
alice,11,3
alice,12,3
carol,30,1
alice,13,9
bob,21,2
carol,31,2
bob,22,2
dave,40,7
bob,23,0
"""


def _write(tmp_path: Path, text: str, name: str = "tiny.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _tokens(item_ids: list[str], items: np.ndarray) -> list[str]:
    return [item_ids[i] for i in items.tolist()]


def test_dense_indices_follow_first_appearance(tmp_path: Path) -> None:
    inter = load_interactions(_write(tmp_path, TINY_CSV))
    assert inter.user_ids == ["alice", "bob", "carol", "dave"]
    assert inter.item_ids == ["[PAD]", "10", "20", "11", "12", "30", "13", "21", "31", "22",
                              "40", "23"]
    assert inter.num_items == 12 and inter.num_users == 4
    assert inter.users.tolist() == [0, 1, 0, 0, 2, 0, 1, 2, 1, 3, 1]
    assert inter.items.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert inter.timestamps.tolist() == [5, 1, 3, 3, 1, 9, 2, 2, 2, 7, 0]
    assert inter.item_text is None


def test_known_split_with_ties_and_dropped_users(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    inter = load_interactions(_write(tmp_path, TINY_CSV))
    with caplog.at_level(logging.WARNING):
        split = leave_one_out(inter)
    assert split.user_ids == ["alice", "bob"]
    assert split.dropped_users == 2
    assert "dropped 2 of 4 users" in caplog.text
    # alice: 11@3, 12@3 (tie keeps file order), 10@5, 13@9
    assert _tokens(split.item_ids, split.train[0]) == ["11", "12"]
    assert split.train[0].tolist() == [3, 4]
    # bob: 23@0, 20@1, 21@2, 22@2 (tie keeps file order)
    assert _tokens(split.item_ids, split.train[1]) == ["23", "20"]
    assert split.valid.tolist() == [1, 7] and split.test.tolist() == [6, 9]
    assert _tokens(split.item_ids, split.valid) == ["10", "21"]
    assert _tokens(split.item_ids, split.test) == ["13", "22"]
    assert split.valid.dtype == np.int64 and split.test.dtype == np.int64
    assert split.num_items == 12 and split.item_ids == inter.item_ids


def test_tie_order_comes_from_the_file(tmp_path: Path) -> None:
    swapped = TINY_CSV.replace("alice,11,3\nalice,12,3", "alice,12,3\nalice,11,3")
    split = leave_one_out(load_interactions(_write(tmp_path, swapped)))
    assert _tokens(split.item_ids, split.train[0]) == ["12", "11"]


def test_sequences_by_user_are_chronological(tmp_path: Path) -> None:
    inter = load_interactions(_write(tmp_path, TINY_CSV))
    sequences = [_tokens(inter.item_ids, seq) for seq in sequences_by_user(inter)]
    assert sequences == [["11", "12", "10", "13"], ["23", "20", "21", "22"], ["30", "31"],
                         ["40"]]


def test_min_interactions_threshold(tmp_path: Path) -> None:
    inter = load_interactions(_write(tmp_path, TINY_CSV))
    assert leave_one_out(inter, min_interactions=4).dropped_users == 2
    with pytest.raises(DatasetError, match="no user has >= 5 interactions"):
        leave_one_out(inter, min_interactions=5)
    with pytest.raises(ValueError, match="min_interactions must be >= 3"):
        leave_one_out(inter, min_interactions=2)
