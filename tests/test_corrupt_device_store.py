"""One corrupt device store (garbage personal.pt or ledger.json) fails that device only: the simulation
finishes its rounds, the other devices train and are evaluated, and metrics.json lists the unreadable ledger."""

from __future__ import annotations

import csv
import json

import server.job as job
from simulations.simulate import simulate
from tests.fed_helpers import synthetic_csv, tiny_config


def test_a_corrupt_ledger_and_personal_state_fail_only_their_devices(tmp_path, monkeypatch):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv"), federated={"num-server-rounds": 2, "clients-per-round": 12})
    run = tmp_path / "run"
    real_save = job.save_checkpoint
    corrupted = []

    def corrupt_after_round_1(*args, **kwargs):
        real_save(*args, **kwargs)
        if not corrupted:
            (run / "devices" / "u0" / "ledger.json").write_bytes(b"\x00garbage{")
            (run / "devices" / "u1" / "personal.pt").write_bytes(b"not a torch file")
            corrupted.append(True)

    monkeypatch.setattr(job, "save_checkpoint", corrupt_after_round_1)
    result = simulate(cfg, run, progress=False)
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["round"]) for r in rows] == [1, 2]
    assert int(rows[0]["failed"]) == 0 and int(rows[1]["failed"]) == 2 and int(rows[1]["valid"]) == 10
    assert result["privacy"]["unreadable_ledgers"] == ["devices/u0/ledger.json"]
    assert result["privacy"]["devices_trained"] == 11
    assert 10 <= result["evaluated_devices"] <= 11  # u1's personal state is unreadable: it cannot rank
    assert json.loads((run / "metrics.json").read_text())["privacy"]["unreadable_ledgers"]
