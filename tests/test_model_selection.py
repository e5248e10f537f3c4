"""Federated early stopping (``federated.keep-best``, ``federated.patience``): the run tests and ships the global
state with the best validation NDCG@10, stops after ``patience`` evaluations without improvement, and a
resumed run keeps the same best state."""

from __future__ import annotations

import json

import numpy as np
import pytest

import server.loop as loop
from server.selection import SELECT_METRIC, ModelSelection
from shared_models.config import ConfigError
from simulations.simulate import simulate
from tests.fed_helpers import synthetic_csv, tiny_config

SCRIPT = [0.10, 0.30, 0.20, 0.25, 0.90]  # validation NDCG@10 after rounds 1..5: best after 2, then 2 stale


def test_selection_keeps_the_best_state_and_counts_stale_evaluations() -> None:
    sel = ModelSelection(patience=2)
    state = {"w": np.zeros(3)}
    assert sel.final_state("latest") == "latest"  # nothing evaluated yet
    assert sel.observe(1, {SELECT_METRIC: 0.1}, state)
    state["w"] += 1  # the strategy's arrays may change in place: the kept copy must not
    assert not sel.observe(2, {SELECT_METRIC: 0.1}, state) and sel.stale == 1 and not sel.stop_reason()
    assert not sel.observe(3, {"recall@10": 0.9}, state) and sel.stale == 1  # no NDCG@10: not an evaluation
    assert not sel.observe(4, {SELECT_METRIC: 0.05}, state)
    assert "not improved for 2 evaluations" in sel.stop_reason() and "after round 1" in sel.stop_reason()
    np.testing.assert_array_equal(sel.final_state(state)["w"], np.zeros(3))
    again = ModelSelection(patience=2)
    again.load_json(json.loads(json.dumps(sel.to_json())), sel.state)
    assert (again.best_round, again.best_value, again.stale) == (1, 0.1, 2) and again.stop_reason()
    assert not ModelSelection(patience=0, stale=100).stop_reason()  # patience 0: never stops


@pytest.mark.parametrize("sections,key", [
    ({"federated": {"keep-best": True, "eval-every": 0}}, "federated.keep_best"),
    ({"federated": {"patience": 3}}, "federated.patience"),
    ({"federated": {"keep-best": True, "eval-every": 1, "patience": -1}}, "federated.patience"),
    ({"federated": {"keep-best": True, "eval-every": 1}, "privacy": {"mode": "user"}}, "federated.keep_best"),
])
def test_bad_selection_settings_name_the_key(tmp_path, sections, key) -> None:
    with pytest.raises(ConfigError, match=key):
        tiny_config(synthetic_csv(tmp_path / "s.csv"), **sections)


def _scripted_validation(monkeypatch) -> None:
    real = loop.evaluate_nodes

    def scripted(cfg, transport, r, shared, stage, rng=None):
        out = real(cfg, transport, r, shared, stage, rng)  # the devices really evaluate
        return {**out, SELECT_METRIC: SCRIPT[r - 1]} if stage == "valid" else out

    monkeypatch.setattr(loop, "evaluate_nodes", scripted)


@pytest.mark.parametrize("he", [False, True])
def test_run_stops_on_patience_and_ships_the_best_round(tmp_path, monkeypatch, he) -> None:
    data = synthetic_csv(tmp_path / "s.csv", users=8)
    # everything federated: devices hold no personal weights that kept training after the best round
    common = {"clients-per-round": 4, "eval-every": 1, "personal-short-term": False}
    cfg = tiny_config(data, privacy={"mode": "none"}, he={"enabled": he},
                      federated={**common, "num-server-rounds": 5, "keep-best": True, "patience": 2})
    _scripted_validation(monkeypatch)
    result = simulate(cfg, tmp_path / "run", progress=False)
    assert result["rounds"] == 4  # stopped before round 5: rounds 3 and 4 did not beat round 2
    assert result["selection"] == {"metric": SELECT_METRIC, "best_round": 2, "best_value": 0.30, "patience": 2}
    ckpt = tmp_path / "run" / "checkpoint"
    if he:  # the blind server kept round 2's encrypted sum and ships it (encryption is randomised: no rerun)
        shipped = (tmp_path / "run" / "global_sum.ckks").read_bytes()
        latest = ckpt / json.loads((ckpt / "state.json").read_text())["files"] / "global.ckks"  # round 4's sum
        assert shipped == (ckpt / "best-000002.ckks").read_bytes() != latest.read_bytes()
        return
    two = simulate(tiny_config(data, privacy={"mode": "none"}, he={"enabled": False},
                               federated={**common, "num-server-rounds": 2}), tmp_path / "two", progress=False)
    with np.load(tmp_path / "run" / "global_shared.npz") as a, np.load(tmp_path / "two" / "global_shared.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)  # round 2's model
    assert result["metrics"] == two["metrics"]  # the final test evaluated that model


def test_resumed_run_keeps_the_best_state(tmp_path, monkeypatch) -> None:
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=8), privacy={"mode": "none"},
                      federated={"clients-per-round": 4, "eval-every": 1, "num-server-rounds": 5,
                                 "keep-best": True, "patience": 2})
    _scripted_validation(monkeypatch)
    reference = simulate(cfg, tmp_path / "uninterrupted", progress=False)
    real_sample, calls = loop.sample_nodes, {"n": 0}

    def dies_in_round_4(nodes, c, rng):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_sample(nodes, c, rng)

    monkeypatch.setattr(loop, "sample_nodes", dies_in_round_4)
    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(loop, "sample_nodes", real_sample)
    resumed = simulate(cfg, tmp_path / "run", progress=False)
    assert resumed["selection"] == reference["selection"] and resumed["metrics"] == reference["metrics"]
    assert resumed["rounds"] == reference["rounds"] == 4


def test_a_best_written_by_a_crashed_round_is_never_taken_for_the_committed_one(tmp_path) -> None:
    from server.loop import PlainFedAvg, RoundStats
    from server.checkpoint import load_checkpoint, save_checkpoint

    def stats(last: int) -> list[RoundStats]:
        return [RoundStats(r, 1, 1, 0, 0, 0, 0.0, 0.0, 0.0, 0.0) for r in range(1, last + 1)]

    strategy = PlainFedAvg({"w": np.zeros(2, np.float32)})
    sel = ModelSelection(patience=3)
    sel.observe(2, {SELECT_METRIC: 0.5}, {"w": np.full(2, 2.0, np.float32)})
    save_checkpoint(tmp_path, strategy, stats(2), {}, sel)  # round 2: the new best is written
    save_checkpoint(tmp_path, strategy, stats(3), {}, sel)  # round 3: no new best, nothing rewritten
    ckpt = tmp_path / "checkpoint"
    np.savez(ckpt / "best-000004.npz", w=np.full(2, 4.0, np.float32))  # round 4 found a best, then crashed
    resumed = ModelSelection(patience=3)
    assert load_checkpoint(tmp_path, PlainFedAvg({"w": np.zeros(2, np.float32)}), {}, resumed)[0] == 3
    assert resumed.best_round == 2 and resumed.stale == 0
    np.testing.assert_array_equal(resumed.final_state(None)["w"], [2.0, 2.0])
    save_checkpoint(tmp_path, strategy, stats(4), {}, resumed)  # the replayed round 4: no new best this time
    assert sorted(f.name for f in ckpt.glob("best-*")) == ["best-000002.npz"]
