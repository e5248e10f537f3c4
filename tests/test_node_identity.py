"""Device identity survives relaunches: each node names its device when the server asks (a QUERY message),
and node index i is the node of the population's i-th device whatever Flower's node ids are this launch."""

from __future__ import annotations

import json

import pytest
from flwr.app import ConfigRecord, RecordDict

from server.grid_transport import GridTransport
from shared_models.messages import CONFIG, KEY_DEVICE_ID, encode_identity
from simulations.simulate import simulate
from tests.fed_helpers import synthetic_csv, tiny_config
from tests.hostile_grid import FakeMessage, HostileGrid

DEVICES = ["u0", "u1", "u2", "u3"]


@pytest.fixture
def fake_link(monkeypatch):
    monkeypatch.setattr("server.grid_transport.Message", FakeMessage)
    monkeypatch.setattr("server.grid_transport.PULL_S", 0.0)


def _grid(names: dict[int, RecordDict]) -> HostileGrid:
    grid = HostileGrid(0, lambda dst, msg: RecordDict(), lambda dst, msg: names[dst])
    grid.ids = list(names)
    return grid


@pytest.mark.parametrize("launch", [{50: "u2", 7: "u0", 23: "u1", 99: "u3"}, {3: "u3", 8: "u1", 1: "u2", 4: "u0"}])
def test_node_index_is_the_device_index_on_every_launch(tmp_path, fake_link, launch):
    grid = _grid({node: encode_identity(dev) for node, dev in launch.items()})
    transport = GridTransport(grid, tiny_config(tmp_path / "u.csv"), str(tmp_path), expected_nodes=4, timeout_s=5.0,
                              device_order=DEVICES)
    assert [launch[node] for node in transport._ids] == DEVICES


def test_nodes_that_lie_or_stay_silent_come_after_the_known_devices(tmp_path, fake_link):
    names = {9: encode_identity("u1"), 5: encode_identity("u1"), 6: RecordDict({CONFIG: ConfigRecord({KEY_DEVICE_ID: 3})}),
             2: encode_identity("stranger"), 4: encode_identity("u0")}
    transport = GridTransport(_grid(names), tiny_config(tmp_path / "u.csv"), str(tmp_path), expected_nodes=5,
                              timeout_s=5.0, device_order=DEVICES)
    assert transport._ids[:2] == [4, 5]  # u0, then the first node (by id) to claim u1
    assert transport._ids[2:] == [2, 6, 9]  # the duplicate claim, the malformed and the unknown: by node id


@pytest.mark.slow
def test_two_ray_runs_with_the_same_seed_train_the_same_devices_and_agree(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=8, items=30),
                      federated={"backend": "ray", "num-server-rounds": 2, "clients-per-round": 3})
    runs = [simulate(cfg, tmp_path / f"run{i}", progress=False) for i in range(2)]
    trained = [sorted(p.parent.name for p in (tmp_path / f"run{i}" / "devices").glob("*/ledger.json")
                      if json.loads(p.read_text())["rounds"]) for i in range(2)]
    assert trained[0] == trained[1]
    assert runs[0]["metrics"] == runs[1]["metrics"]


@pytest.mark.slow
def test_a_resumed_he_ray_run_rejects_no_honest_update(tmp_path, monkeypatch):
    import csv

    import server.job as job

    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=8, items=30),
                      federated={"backend": "ray", "num-server-rounds": 3, "clients-per-round": 5},
                      he={"enabled": True})
    real_save, calls = job.save_checkpoint, {"n": 0}

    def dies_at_second_checkpoint(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")  # the ServerApp thread dies after round 2 is logged
        return real_save(*args, **kwargs)

    monkeypatch.setattr(job, "save_checkpoint", dies_at_second_checkpoint)
    with pytest.raises(BaseException):
        simulate(cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(job, "save_checkpoint", real_save)
    result = simulate(cfg, tmp_path / "run", progress=False)  # a fresh launch: new Flower node ids
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert [int(r["round"]) for r in rows] == [1, 2, 3]
    assert [int(r["rejected"]) for r in rows] == [0, 0, 0]
    assert result["he"]["sum_checks"] == 3  # each round's sum confirmed by a key holder over the Grid
