"""Reference points beside a run: popularity on the run's own devices, and stored references."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared_models.datasets.population import population
from simulations.report.baselines import popularity_metrics, reference_metrics
from simulations.report.rundata import ReportError
from tests.fed_helpers import synthetic_csv, tiny_config


def test_popularity_ranks_each_test_item_among_unseen_items_by_training_counts(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=12))
    pop = population(cfg)
    counts = np.zeros(pop.num_items)
    for d in pop.devices:
        np.add.at(counts, d.train, 1.0)
    ranks = []
    for d in pop.devices:  # by hand: items scoring at least as high as the target; seen items (but the target, which
        scores = counts.copy()  # a user may see again) and padding excluded
        seen = np.setdiff1d(np.append(d.train, d.valid), [d.test])
        scores[0] = -np.inf
        scores[seen] = -np.inf
        ranks.append(int(np.sum(scores >= scores[d.test])))  # ties count against the target
    got, _ = popularity_metrics(cfg.to_dict())
    assert got["recall@10"] == pytest.approx(np.mean(np.array(ranks) <= 10))
    assert got["mrr@10"] == pytest.approx(np.mean([1 / r if r <= 10 else 0 for r in ranks]))


def test_reference_file_errors_name_the_file(tmp_path):
    good = tmp_path / "ref.json"
    good.write_text(json.dumps({"label": "central", "metrics": {"recall@10": 0.2}}))
    assert reference_metrics(good)[0] == {"recall@10": 0.2}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"metrics": {"recall@10": "high"}}))
    with pytest.raises(ReportError, match="bad.json"):
        reference_metrics(bad)


def test_shipped_reference_loads():
    from pathlib import Path

    metrics, _ = reference_metrics(Path(__file__).resolve().parents[1] / "simulations/configs/reference-ml100k.json")
    assert metrics["recall@10"] > 0.1
