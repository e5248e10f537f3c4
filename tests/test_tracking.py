"""Tracking: TensorBoard event files (read back with TensorBoard's EventAccumulator), --no-tracking, MLflow."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from simulations.central import train_central
from simulations.cli.main import app
from simulations.simulate import simulate
from shared_models.tracking import HPARAMS_RUN, TRACKING_DIR
from tests.fed_helpers import synthetic_csv, tiny_config

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard is not installed (pip install tensorboard)")

ROUND_TAGS = {"train/loss", "privacy/epsilon_max", "privacy/epsilon_mean", "devices/sampled",
              "devices/participants", "devices/refused", "devices/failed", "devices/rejected", "bytes/up",
              "bytes/down", "time/round_s", "time/aggregate_s", "valid/recall@10", "valid/ndcg@10"}


def _scalars(log_dir: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(log_dir))
    acc.Reload()
    return acc


def _series(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_simulate_writes_round_scalars_matching_history_and_hparams(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=10, items=30),
                      federated={"num-server-rounds": 3, "eval-every": 1})
    run = tmp_path / "run"
    result = simulate(cfg, run, progress=False)
    acc = _scalars(run / TRACKING_DIR)
    # under DP a device reports no training loss (it is computed on private data outside the mechanism)
    assert ROUND_TAGS - {"train/loss"} <= set(acc.Tags()["scalars"]) and "train/loss" not in acc.Tags()["scalars"]
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert _series(acc, "devices/participants") == [(int(r["round"]), float(r["valid"])) for r in rows]
    eps = [v for _, v in _series(acc, "privacy/epsilon_max")]
    assert eps == pytest.approx([float(r["epsilon_max"]) for r in rows], rel=1e-6)
    assert eps[0] > 0 and eps == sorted(eps)  # spent privacy only grows
    assert [v for _, v in _series(acc, "valid/recall@10")] == pytest.approx([float(r["recall@10"]) for r in rows])
    # plaintext: every round downloads the model to each sampled device and uploads it from each participant
    model_bytes = sum(a.nbytes for a in np.load(run / "global_shared.npz").values())
    assert [v for _, v in _series(acc, "bytes/down")] == [model_bytes * float(r["sampled"]) for r in rows]
    assert [v for _, v in _series(acc, "bytes/up")] == [model_bytes * float(r["valid"]) for r in rows]
    hp = _scalars(run / TRACKING_DIR / HPARAMS_RUN)
    assert _series(hp, "final/recall@10")[0][1] == pytest.approx(result["metrics"]["recall@10"])
    assert _series(hp, "final/epsilon")[0][1] == pytest.approx(result["privacy"]["epsilon"])
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hp.PluginTagToContent("hparams"))
    assert json.loads((run / "config.json").read_text())["tracking"]["tensorboard"] is True


def test_no_tracking_flag_writes_no_event_files_and_is_recorded(tmp_path):
    data = synthetic_csv(tmp_path / "s.csv", users=8, items=30)
    conf = tmp_path / "tiny.toml"
    conf.write_text(f'[data]\ndataset = "{data}"\n[model]\nhidden = 8\nmax-len = 12\nshort-len = 4\n'
                    'num-layers = 1\nnum-heads = 1\ninner = 16\n[federated]\nbackend = "inline"\n'
                    'num-server-rounds = 1\nclients-per-round = 3\nmin-train-nodes = 1\neval-every = 0\n'
                    '[privacy]\nmode = "none"\n[he]\nenabled = false\n')
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["simulate", "--config", str(conf), "--out", str(out), "--quiet", "--no-tracking"])
    assert res.exit_code == 0, res.output
    assert (out / "metrics.json").exists() and not (out / TRACKING_DIR).exists()
    assert not list(out.rglob("events.out.tfevents.*"))
    assert json.loads((out / "config.json").read_text())["tracking"]["tensorboard"] is False
    # the same run with tracking on is the same finished run (tracking is not part of what it computes)
    again = CliRunner().invoke(app, ["simulate", "--config", str(conf), "--out", str(out), "--quiet"])
    assert again.exit_code == 0, again.output


def test_train_central_tracks_every_epoch(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=10, items=30),
                      train={"epochs": 3, "patience": 5, "batch-size": 8})
    track = tmp_path / TRACKING_DIR / "central"
    result = train_central(cfg, progress=False, track_dir=track)
    acc = _scalars(track)
    assert {"train/loss", "valid/ndcg@10", "valid/recall@10", "time/epoch_s"} <= set(acc.Tags()["scalars"])
    assert _series(acc, "train/loss") == [(h["epoch"], pytest.approx(h["loss"])) for h in result["history"]]
    hp = _scalars(track / HPARAMS_RUN)
    assert _series(hp, "final/ndcg@10")[0][1] == pytest.approx(result["metrics"]["ndcg@10"])


def test_mlflow_file_store_gets_the_same_round_metrics(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'fedinterest[mlflow]')")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    uri = (tmp_path / "mlruns").as_uri()
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=10, items=30),
                      federated={"num-server-rounds": 2, "eval-every": 1},
                      tracking={"tensorboard": False, "mlflow-uri": uri})
    run = tmp_path / "run"
    result = simulate(cfg, run, progress=False)
    assert not (run / TRACKING_DIR).exists()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("fedinterest")
    (found,) = client.search_runs([exp.experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    rows = list(csv.DictReader((run / "history.csv").open()))
    history = client.get_metric_history(found.info.run_id, "devices/participants")
    assert sorted((m.step, m.value) for m in history) == [(int(r["round"]), float(r["valid"])) for r in rows]
    assert {"valid/recall_at_10", "privacy/epsilon_max", "bytes/up", "time/round_s"} <= set(found.data.metrics)
    assert found.data.metrics["final/recall_at_10"] == pytest.approx(result["metrics"]["recall@10"])
    assert found.data.params["federated.num_server_rounds"] == "2"
    assert not math.isnan(found.data.metrics["final/epsilon"])


def test_mlflow_uri_without_mlflow_is_a_config_error_naming_the_key(tmp_path, monkeypatch):
    import builtins

    from shared_models.config import ConfigError
    from shared_models.tracking import open_tracker

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name.startswith("mlflow"):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    cfg = tiny_config(tmp_path / "unused.csv", tracking={"tensorboard": False, "mlflow-uri": "file:///x"})
    with pytest.raises(ConfigError, match="tracking.mlflow_uri"):
        open_tracker(cfg, tmp_path / "tb", run_name="r")
