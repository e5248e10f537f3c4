"""MovieLens-100K through the cache (seeded from the shared copy, no network)."""

from __future__ import annotations

import numpy as np

from shared_models.datasets import Interactions, leave_one_out, sequences_by_user

ML100K_USERS = 943
ML100K_ITEMS = 1682
ML100K_EVENTS = 100_000


def test_counts_and_indexing(ml100k: Interactions) -> None:
    assert ml100k.source == "ml-100k"
    assert ml100k.num_users == ML100K_USERS
    assert ml100k.num_items == ML100K_ITEMS + 1
    assert len(ml100k.users) == len(ml100k.items) == len(ml100k.timestamps) == ML100K_EVENTS
    assert ml100k.users.dtype == np.int64 and ml100k.items.dtype == np.int64
    assert ml100k.timestamps.dtype == np.float64
    assert set(np.unique(ml100k.users).tolist()) == set(range(ML100K_USERS))
    assert set(np.unique(ml100k.items).tolist()) == set(range(1, ML100K_ITEMS + 1))
    # first rows of the file: 196 242 ..., 186 302 ...
    assert ml100k.user_ids[:2] == ["196", "186"] and ml100k.item_ids[:3] == ["[PAD]", "242", "302"]
    assert ml100k.users[:2].tolist() == [0, 1] and ml100k.items[:2].tolist() == [1, 2]
    assert ml100k.timestamps[0] == 881250949.0


def test_item_text_from_item_file(ml100k: Interactions) -> None:
    assert ml100k.item_text is not None and ml100k.item_text[0] == ""
    toy_story = ml100k.item_text[ml100k.item_ids.index("1")]
    assert toy_story == "Toy Story (1995) \u2014 Animation, Children's, Comedy"
    assert ml100k.item_text[1] == "Kolya (1996) \u2014 Comedy"  # item 242 comes first
    assert all(text for text in ml100k.item_text[1:])


def test_leave_one_out_holds_out_last_two_by_time(ml100k: Interactions) -> None:
    split = leave_one_out(ml100k)
    assert split.dropped_users == 0
    assert split.num_users == ML100K_USERS and split.num_items == ML100K_ITEMS + 1
    assert split.user_ids == ml100k.user_ids
    total = sum(len(train) for train in split.train) + 2 * ML100K_USERS
    assert total == ML100K_EVENTS
    for user in range(ML100K_USERS):
        rows = np.flatnonzero(ml100k.users == user)
        order = rows[np.argsort(ml100k.timestamps[rows], kind="stable")]
        assert split.test[user] == ml100k.items[order[-1]]
        assert split.valid[user] == ml100k.items[order[-2]]
        assert np.array_equal(split.train[user], ml100k.items[order[:-2]])


def test_sequences_sorted_by_time(ml100k: Interactions) -> None:
    sequences = sequences_by_user(ml100k)
    assert [len(s) for s in sequences] == np.bincount(ml100k.users).tolist()
    assert min(len(s) for s in sequences) == 20  # every ML-100K user rated >= 20 movies

