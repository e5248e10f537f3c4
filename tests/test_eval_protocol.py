"""Ranking protocol: ties against the target, non-finite scores refused, masked vs unmasked ranks from one
pass, eval.mask-history, and both protocols in every result (codec, metrics.json, train-central, sweep)."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict
import torch
from typer.testing import CliRunner

from shared_models.config import ConfigError, build_config
from shared_models.messages import decode_rank, encode_rank
from shared_models.train.evaluation import Ranks, protocols, rank_targets, rank_targets_both
from shared_models.train.metrics import summarize, target_ranks
from simulations.cli.main import app
from simulations.simulate import simulate
from simulations.sweep.summary import point_row
from tests.fed_helpers import synthetic_csv, tiny_config


class FixedScores:
    """Every user gets the same scores over the catalogue (item 0 = padding)."""

    def __init__(self, scores):
        self.scores = torch.tensor(scores, dtype=torch.float32)

    def full_sort_predict(self, batch):
        return self.scores.expand(batch["inputs"].shape[0], -1)


class NanWhenSeen:
    """Finite scores, except all-NaN rows for users whose input holds ``item``."""

    def __init__(self, item):
        self.item = item

    def full_sort_predict(self, batch):
        scores = torch.arange(6, dtype=torch.float32).expand(batch["inputs"].shape[0], -1).clone()
        scores[(batch["inputs"] == self.item).any(dim=1)] = math.nan
        return scores


def test_constant_scores_rank_every_target_last_among_the_candidates():
    scores = torch.full((2, 6), 0.3)
    padding = torch.zeros((2, 6), dtype=torch.bool)
    padding[:, 0] = True
    assert target_ranks(scores, torch.tensor([1, 4]), padding).tolist() == [5, 5]  # 5 candidates: items 1..5
    seen = padding.clone()
    seen[0, [2, 3]] = True
    assert target_ranks(scores, torch.tensor([1, 4]), seen).tolist() == [3, 5]


def test_a_tie_with_one_other_item_ranks_second():
    scores = torch.tensor([[-1e9, 0.2, 0.7, 0.7, 0.1]])
    assert target_ranks(scores, torch.tensor([2])).tolist() == [2]
    assert target_ranks(scores, torch.tensor([3])).tolist() == [2]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_raise_naming_the_row(bad):
    scores = torch.tensor([[0.0, 0.5, 0.4, 0.3], [0.0, 0.5, 0.4, 0.3]])
    scores[1, 2] = bad
    with pytest.raises(ValueError, match=r"item 2 of row 11"):
        target_ranks(scores, torch.tensor([1, 1]), first_row=10)
    excluded = torch.zeros_like(scores, dtype=torch.bool)
    excluded[1, 2] = True  # a non-finite score of an item that does not compete is fine
    assert target_ranks(scores, torch.tensor([1, 1]), excluded).tolist() == [1, 1]
    with pytest.raises(ValueError, match="row 1"):  # ... unless it is the target's
        target_ranks(scores, torch.tensor([1, 2]), excluded)


def test_a_nan_or_constant_model_cannot_rank_targets_first():
    histories, targets = [np.array([1, 2]), np.array([3])], np.array([4, 5])
    kw = dict(num_items=6, max_len=4, batch_size=1)
    with pytest.raises(ValueError, match="row 1"):  # batch_size 1: the row is the user's index, not the batch's
        rank_targets(NanWhenSeen(3), histories, targets, **kw)
    constant = rank_targets_both(FixedScores([0.0] * 6), histories, targets, **kw)
    assert constant.unmasked.tolist() == [5, 5]  # items 1..5 compete
    assert constant.masked.tolist() == [3, 4]  # minus the user's history


def test_masked_and_unmasked_ranks_differ_exactly_by_the_history_scored_above():
    model = FixedScores([-1e9, 0.9, 0.8, 0.7, 0.6, 0.5])
    histories = [np.array([1, 3]), np.array([4, 2]), np.array([5]), np.array([1, 2, 3, 5])]
    targets = np.array([4, 2, 1, 4])  # user 1 re-consumes item 2; user 3's history is longer than max_len
    ranks = rank_targets_both(model, histories, targets, num_items=6, max_len=2, batch_size=3)
    assert ranks.unmasked.tolist() == [4, 2, 1, 4]
    assert ranks.masked.tolist() == [2, 2, 1, 1]  # user 0: items 1, 3 removed; user 1: its target stays
    assert rank_targets(model, histories, targets, num_items=6, max_len=2, batch_size=3,
                        mask_history=False).tolist() == ranks.unmasked.tolist()
    assert ranks.of(protocols(True)[0]) is ranks.masked and protocols(False) == ("unmasked", "masked")


def test_eval_mask_history_defaults_true_and_errors_name_the_key():
    assert build_config({}).eval.mask_history is True
    assert build_config({"eval": {"mask-history": False}}).eval.mask_history is False
    with pytest.raises(ConfigError, match="eval.mask-history"):
        build_config({"eval": {"mask-history": "sometimes"}})
    with pytest.raises(ConfigError, match="eval.mask-histroy"):
        build_config({}, ["eval.mask-histroy=false"])


def test_the_evaluate_reply_carries_both_ranks():
    assert decode_rank(SimpleNamespace(content=encode_rank(3, 17))) == (3, 17)
    with pytest.raises(ValueError, match="rank-unmasked"):
        decode_rank(SimpleNamespace(content=RecordDict({"metrics": MetricRecord({"rank": 3})})))


def _metrics_json(tmp_path, name, **eval_section):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=10, items=30), privacy={"mode": "none"},
                      federated={"num-server-rounds": 2, "eval-every": 1}, **eval_section)
    simulate(cfg, tmp_path / name, progress=False)
    return json.loads((tmp_path / name / "metrics.json").read_text())


def test_both_protocols_reach_metrics_json_and_swap_with_the_setting(tmp_path):
    masked = _metrics_json(tmp_path, "masked")
    assert masked["protocol"] == "masked" and masked["evaluated_devices"] == 10
    for k, v in masked["metrics"].items():  # masking only removes competitors
        assert v >= masked["metrics_unmasked"][k]
    assert masked["metrics"] != masked["metrics_unmasked"]  # synthetic histories hold popular items
    unmasked = _metrics_json(tmp_path, "unmasked", eval={"mask-history": False})
    assert unmasked["protocol"] == "unmasked"
    assert unmasked["metrics"] == masked["metrics_unmasked"] and unmasked["metrics_masked"] == masked["metrics"]
    row = point_row("p", {}, masked)
    assert row["protocol"] == "masked" and row["other_ndcg@10"] == masked["metrics_unmasked"]["ndcg@10"]


def test_train_central_reports_both_protocols_and_the_cli_shows_both_rows(tmp_path):
    csv = synthetic_csv(tmp_path / "s.csv", users=20, items=30)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["train-central", "--dataset", str(csv), "--model", "pop", "--out", str(out),
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    for row in ("test (masked)", "test (unmasked)", "valid (masked)", "valid (unmasked)"):
        assert row in res.output
    data = json.loads(out.read_text())
    assert data["protocol"] == "masked" and set(data["valid_metrics_unmasked"]) == set(data["valid_metrics"])
    ranks = Ranks(np.array(data["test_ranks"]), np.array(data["test_ranks_unmasked"]))
    assert (ranks.masked <= ranks.unmasked).all()
    assert data["metrics"] == summarize(ranks.masked) and data["metrics_unmasked"] == summarize(ranks.unmasked)
