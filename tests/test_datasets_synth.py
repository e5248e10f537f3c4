"""Synthetic data: determinism, CSV round trip and the planted sequential structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared_models.datasets import (Interactions, leave_one_out, load_interactions, make_synthetic,
                                  planted_structure, write_csv)

USERS, ITEMS, CLUSTERS, SEED = 300, 240, 8, 7


@pytest.fixture(scope="module")
def synthetic() -> Interactions:
    return make_synthetic(num_users=USERS, num_items=ITEMS, seed=SEED, num_clusters=CLUSTERS)


def test_shape_and_catalogue(synthetic: Interactions) -> None:
    assert synthetic.num_users == USERS and synthetic.num_items == ITEMS + 1
    assert synthetic.item_ids[0] == "[PAD]" and synthetic.item_ids[17] == "17"
    assert synthetic.item_text is not None and synthetic.item_text[0] == ""
    cluster = planted_structure(num_items=ITEMS, num_clusters=CLUSTERS, seed=SEED).cluster_of[17]
    assert synthetic.item_text[17] == f"Synthetic item 17 (cluster {cluster})"
    assert synthetic.items.min() >= 1 and synthetic.items.max() <= ITEMS
    lengths = np.bincount(synthetic.users, minlength=USERS)
    assert lengths.min() >= 5 and 35 < lengths.mean() < 45  # Poisson(40), at least 5
    for user in (0, USERS // 2, USERS - 1):
        assert np.all(np.diff(synthetic.timestamps[synthetic.users == user]) > 0)


def test_deterministic_per_seed(synthetic: Interactions) -> None:
    again = make_synthetic(num_users=USERS, num_items=ITEMS, seed=SEED, num_clusters=CLUSTERS)
    assert np.array_equal(again.users, synthetic.users)
    assert np.array_equal(again.items, synthetic.items)
    assert np.array_equal(again.timestamps, synthetic.timestamps)
    other = make_synthetic(num_users=USERS, num_items=ITEMS, seed=SEED + 1, num_clusters=CLUSTERS)
    assert not np.array_equal(other.items[:100], synthetic.items[:100])


def test_csv_round_trip(synthetic: Interactions, tmp_path: Path) -> None:
    path = write_csv(synthetic, tmp_path / "synthetic.csv")
    assert path.read_text().splitlines()[0] == "user,item,timestamp"
    loaded = load_interactions(path)
    assert loaded.user_ids == synthetic.user_ids
    assert np.array_equal(loaded.users, synthetic.users)
    as_tokens = np.asarray(loaded.item_ids, dtype=object)[loaded.items]
    assert np.array_equal(as_tokens, np.asarray(synthetic.item_ids, dtype=object)[synthetic.items])
    assert np.array_equal(loaded.timestamps, synthetic.timestamps)  # exact float repr
    assert loaded.item_text is None and loaded.source == str(path)


def test_chains_partition_the_catalogue() -> None:
    layout = planted_structure(num_items=ITEMS, num_clusters=CLUSTERS, seed=SEED)
    assert sorted(np.concatenate(layout.chains).tolist()) == list(range(1, ITEMS + 1))
    assert [len(chain) for chain in layout.chains] == [ITEMS // CLUSTERS] * CLUSTERS
    assert layout.successor[0] == 0 and layout.cluster_of[0] == -1
    assert np.all(layout.cluster_of[layout.successor[1:]] == layout.cluster_of[1:])


def test_next_item_is_predictable_but_popularity_is_not(synthetic: Interactions) -> None:
    layout = planted_structure(num_items=ITEMS, num_clusters=CLUSTERS, seed=SEED)
    split = leave_one_out(synthetic)
    assert split.dropped_users == 0
    last_train = np.asarray([train[-1] for train in split.train])
    chain_hit_valid = np.mean(layout.successor[last_train] == split.valid)
    chain_hit_test = np.mean(layout.successor[split.valid] == split.test)
    counts = np.bincount(np.concatenate(split.train), minlength=split.num_items)[1:]
    top_share = counts.max() / counts.sum()
    popular_hit = np.mean(split.test == np.argmax(counts) + 1)
    assert chain_hit_valid > 0.5 and chain_hit_test > 0.5
    assert top_share < 5.0 / ITEMS and popular_hit < 0.05  # near-flat popularity
    assert chain_hit_test > 20 * top_share


def test_users_prefer_their_favourite_clusters(synthetic: Interactions) -> None:
    cluster_of = planted_structure(num_items=ITEMS, num_clusters=CLUSTERS, seed=SEED).cluster_of
    top_two_share = []
    for user in range(USERS):
        counts = np.bincount(cluster_of[synthetic.items[synthetic.users == user]],
                             minlength=CLUSTERS)
        top_two_share.append(np.sort(counts)[-2:].sum() / counts.sum())
    assert np.mean(top_two_share) > 0.75  # long-term interest: 1-2 favourite clusters


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_clusters": 0}, "num_clusters"),
    ({"num_items": 3, "num_clusters": 4}, "num_clusters"),
    ({"session_length": (3, 2)}, "session_length"),
    ({"chain_prob": 1.5}, "chain_prob"),
    ({"max_favourites": 9}, "max_favourites"),
])
def test_invalid_parameters_are_rejected(kwargs: dict, message: str) -> None:
    params = {"num_users": 2, "num_items": 16, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_synthetic(**params)
