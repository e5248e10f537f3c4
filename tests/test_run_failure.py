"""A run that released no aggregate, or evaluated no device, is an error: metrics.json records why, simulate
raises RunFailed, ``fedinterest simulate`` prints it and exits 2 (never exit 0 with all-zero metrics)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from server.job import RunFailed, failure_reason
from server.loop import RoundStats
from simulations.cli.main import app
from simulations.simulate import simulate
from tests.fed_helpers import TINY_MODEL, synthetic_csv, tiny_config


def _stats(valid: int) -> RoundStats:
    return RoundStats(round=1, sampled=3, valid=valid, refused=0, failed=3 - valid, rejected=0, loss=0.0,
                      epsilon_max=0.0, epsilon_mean=0.0, wall_s=0.0)


def test_failure_reason_names_what_is_missing(tmp_path):
    cfg = tiny_config(tmp_path / "u.csv", federated={"min-train-nodes": 2})
    assert "no round released" in failure_reason(cfg, [_stats(1), _stats(0)], {"evaluated": 5.0})
    assert "no round released" in failure_reason(cfg, [], {"evaluated": 5.0})
    assert "no device was evaluated" in failure_reason(cfg, [_stats(2)], {})
    assert failure_reason(cfg, [_stats(0), _stats(2)], {"evaluated": 1.0}) == ""


def test_a_run_where_every_device_refuses_raises_after_writing_metrics(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv"), privacy={"target-epsilon": 0.01},
                      federated={"num-server-rounds": 1})
    with pytest.raises(RunFailed, match="no round released an aggregate"):
        simulate(cfg, tmp_path / "run", progress=False)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "no round released" in written["failure"]
    with pytest.raises(RunFailed):  # a rerun does not turn the finished failure into a success
        simulate(cfg, tmp_path / "run", progress=False)


def test_cli_simulate_exits_2_and_says_why(tmp_path):
    csv = synthetic_csv(tmp_path / "s.csv")
    model = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY_MODEL.items())
    toml = tmp_path / "c.toml"
    toml.write_text(f'[data]\ndataset = "{csv}"\n[model]\n{model}\n[federated]\nbackend = "inline"\n'
                    'num-server-rounds = 1\nclients-per-round = 3\nmin-train-nodes = 1\neval-every = 0\n'
                    'batch-size = 4\n[privacy]\nmode = "example"\ntarget-epsilon = 0.01\n[he]\nenabled = false\n')
    res = CliRunner().invoke(app, ["simulate", "--config", str(toml), "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 2, res.output
    assert "the run failed" in res.output and "no round released" in res.output
