"""A killed run resumes after its last completed round and ends exactly where an uninterrupted run ends."""

import csv

import numpy as np
import pytest

import server.loop as loop
from simulations.simulate import simulate
from tests.fed_helpers import Killed, sampling_that_dies_at, server_key_path, synthetic_csv, tiny_config


@pytest.mark.parametrize("he,server_optimizer,ema,average", [
    (False, "fedavg", 0.0, 0), (True, "fedavg", 0.0, 0), (False, "fedadam", 0.5, 0), (False, "fedavg", 0.0, 2),
    (True, "fedavg", 0.0, 2)])
def test_resume_continues_to_the_same_final_metrics_without_double_spend(tmp_path, monkeypatch, he,
                                                                        server_optimizer, ema, average):
    # the CKKS average needs a running sum (user level): a blind server's FedAvg rounds would weight by size
    user = {"mode": "user", "user-noise-multiplier": 1.0, "user-clip": 0.5, "user-target-epsilon": 200.0}
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=10),
                      he={"enabled": he, **({"max-summands": 256, "max-weight": 1, "clip-range": 4.0}
                                           if he and average else {})},
                      privacy=user if he and average else {},
                      federated={"num-server-rounds": 3, "clients-per-round": 5,
                                 "server-optimizer": server_optimizer, "server-lr": 0.05, "server-ema": ema,
                                 "server-average": average, "min-train-nodes": 2 if he and average else 1})
    reference = simulate(cfg, tmp_path / "uninterrupted", progress=False)

    real_sample = loop.sample_nodes
    monkeypatch.setattr(loop, "sample_nodes", sampling_that_dies_at(3))
    with pytest.raises(Killed):
        simulate(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.setattr(loop, "sample_nodes", real_sample)
    resumed = simulate(cfg, tmp_path / "run", progress=False)
    assert resumed["metrics"] == reference["metrics"]
    if he and average:  # the shipped envelope adds the same two released sums: both were checkpointed
        assert len(list((tmp_path / "run" / "checkpoint").glob("recent-*.ckks"))) == 2
        a, b = (_decoded_shipped(cfg, tmp_path / name) for name in ("run", "uninterrupted"))
        assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-4  # each run's own keys; CKKS rounding
    if not he:  # the shipped model (the EMA / average), bit for bit: moments, EMA and window were checkpointed
        with np.load(tmp_path / "run" / "global_shared.npz") as a, \
                np.load(tmp_path / "uninterrupted" / "global_shared.npz") as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    assert resumed["privacy"]["epsilon"] == pytest.approx(reference["privacy"]["epsilon"])
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert [int(r["round"]) for r in rows] == [1, 2, 3]
    again = simulate(cfg, tmp_path / "run", progress=False)  # finished: returned as is
    assert again["timing"] == resumed["timing"]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from server.round_log import verify_log
    from shared_models.crypto import load_public_key

    key = load_public_key(server_key_path(tmp_path / "run", public=True), Ed25519PublicKey)
    check = verify_log(tmp_path / "run" / "round_log.jsonl", key, expected_rounds=3)
    assert check.ok and check.rounds == 3, check.reason


def _decoded_shipped(cfg, run):
    """The shipped global model of an HE run, decoded by its first device with that run's keys."""
    from client.round import DeviceContext, global_weights
    from client.store import DeviceStore
    from shared_models.crypto import unwrap_average
    from shared_models.datasets.population import population
    from shared_models.paths import run_keys_dir

    blob = (run / "global_sum.ckks").read_bytes()
    assert unwrap_average(blob)[1] == 2
    pop = population(cfg)
    device = DeviceContext(pop.devices[0], DeviceStore(run / "probe"), None, pop.max_interactions,
                           str(run_keys_dir(run)))
    return global_weights(cfg, blob, device)[0]


def test_a_re_asked_round_gives_the_identical_update_once_charged_and_older_rounds_are_refused(tmp_path):
    from client.device import device_train
    from client.store import DeviceStore
    from shared_models.datasets.population import population
    from shared_models.model.state import initial_shared

    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv"))
    pop = population(cfg)
    shared = initial_shared(cfg, pop.num_items, None)
    store = DeviceStore(tmp_path / "dev")
    first = device_train(data=pop.devices[0], store=store, global_shared=shared, cfg=cfg, round_id=4)
    eps = store.ledger(cfg.privacy, delta=1e-5).epsilon()
    again = device_train(data=pop.devices[0], store=store, global_shared=shared, cfg=cfg, round_id=4)
    assert not first.refused and not again.refused  # the round this device last sent: the same update again
    assert first.num_examples == again.num_examples
    assert all(np.array_equal(first.shared[k], again.shared[k]) for k in first.shared)
    assert store.ledger(cfg.privacy, delta=1e-5).epsilon() == eps  # charged once
    device_train(data=pop.devices[0], store=store, global_shared=shared, cfg=cfg, round_id=5)
    old = device_train(data=pop.devices[0], store=store, global_shared=shared, cfg=cfg, round_id=4)
    assert old.refused and "already trained in round 4" in old.reason  # not the last round sent: refused


def test_a_run_dir_of_another_config_or_without_checkpoint_is_never_mixed_in(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=8), federated={"num-server-rounds": 1,
                                                                             "clients-per-round": 4})
    simulate(cfg, tmp_path / "run", progress=False)
    other = tiny_config(synthetic_csv(tmp_path / "s.csv", users=8), federated={"num-server-rounds": 1,
                                                                               "clients-per-round": 3})
    with pytest.raises(ValueError, match="different config"):
        simulate(other, tmp_path / "run", progress=False)
    (tmp_path / "run" / "metrics.json").unlink()
    import shutil
    shutil.rmtree(tmp_path / "run" / "checkpoint")
    with pytest.raises(ValueError, match="without a server checkpoint"):
        simulate(cfg, tmp_path / "run", progress=False)
    fresh = simulate(other, tmp_path / "run", progress=False, resume=False)
    assert fresh["clients_per_round"] == 3


def test_user_level_resume_after_a_released_round_never_reuses_a_contribution(tmp_path, monkeypatch):
    """Killed after round 2 was released and charged but before its checkpoint: the resumed run re-asks
    round 2, every device that already sent a noisy delta for it refuses, and the ledger charges it once."""
    import json

    import server.job as sim

    user = {"mode": "user", "user-noise-multiplier": 1.0, "user-clip": 0.5, "user-target-epsilon": 100.0}
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=20), privacy=user,
                      federated={"num-server-rounds": 3, "clients-per-round": 8, "min-train-nodes": 2})
    real_save = sim.save_checkpoint
    calls = {"n": 0}

    def dies_at_second_checkpoint(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed()
        return real_save(*args, **kwargs)

    monkeypatch.setattr(sim, "save_checkpoint", dies_at_second_checkpoint)
    with pytest.raises(Killed):
        simulate(cfg, tmp_path / "run", progress=False)
    ledger = json.loads((tmp_path / "run" / "server" / "user_ledger.json").read_text())
    assert [e["round"] for e in ledger["rounds"]] == [1, 2]  # round 2 charged at release, before the crash
    monkeypatch.setattr(sim, "save_checkpoint", real_save)
    resumed = simulate(cfg, tmp_path / "run", progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert [int(r["round"]) for r in rows] == [1, 2, 3]
    rerun = rows[1]
    assert int(rerun["valid"]) == 0 and int(rerun["refused"]) == int(rerun["sampled"]) > 0  # all refuse
    ledger = json.loads((tmp_path / "run" / "server" / "user_ledger.json").read_text())
    assert [e["round"] for e in ledger["rounds"]] == [1, 2, 3] and resumed["privacy"]["steps"] == 3


def test_a_run_killed_after_its_devices_trained_a_round_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """The round in flight when the run died is asked again: devices that had trained it send the identical
    update (no second charge), so the resumed run aggregates every update and ends where a clean run ends."""
    import json

    import server.job as job

    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=10),
                      federated={"num-server-rounds": 3, "clients-per-round": 5})
    reference = simulate(cfg, tmp_path / "uninterrupted", progress=False)
    real_save, calls = job.save_checkpoint, {"n": 0}

    def dies_before_checkpoint_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed()
        return real_save(*args, **kwargs)

    monkeypatch.setattr(job, "save_checkpoint", dies_before_checkpoint_2)
    with pytest.raises(Killed):
        simulate(cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(job, "save_checkpoint", real_save)
    resumed = simulate(cfg, tmp_path / "run", progress=False)
    rows = {name: list(csv.DictReader((tmp_path / name / "history.csv").open())) for name in ("run", "uninterrupted")}
    assert [(r["valid"], r["refused"]) for r in rows["run"]] == [(r["valid"], r["refused"]) for r in rows["uninterrupted"]]
    assert resumed["metrics"] == reference["metrics"]
    ledgers = {name: {p.parent.name: json.loads(p.read_text())["rounds"]
                      for p in (tmp_path / name / "devices").glob("*/ledger.json")} for name in ("run", "uninterrupted")}
    strip = lambda rounds: [{k: v for k, v in r.items() if k != "recorded_at"} for r in rounds]  # noqa: E731
    assert {d: strip(r) for d, r in ledgers["run"].items()} == {d: strip(r) for d, r in ledgers["uninterrupted"].items()}


@pytest.mark.parametrize("he,ema,average", [(False, 0.5, 0), (False, 0.0, 2), (True, 0.0, 0)])
def test_a_crash_between_the_model_files_and_the_commit_point_resumes_from_the_committed_round(
        tmp_path, monkeypatch, he, ema, average):
    """Killed while round 2's checkpoint is half written (plaintext: its model on disk, its optimizer moments,
    EMA, average and state.json not; CKKS: its sum on disk, its state.json not): the resumed run starts from
    round 1's files, not a mix of rounds, and ends where an uninterrupted run ends."""
    import server.checkpoint as checkpoint

    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=10), he={"enabled": he},
                      federated={"num-server-rounds": 3, "clients-per-round": 5, "server-optimizer": "fedadam",
                                 "server-lr": 0.05, "server-ema": ema, "server-average": average}
                      if not he else {"num-server-rounds": 3, "clients-per-round": 5})
    reference = simulate(cfg, tmp_path / "uninterrupted", progress=False)

    real_write = checkpoint.atomic_write_bytes
    commits = {"n": 0}

    last = checkpoint.STATE if he else "server_optimizer.npz"

    def dies_at_the_second_commit(path, data):
        if path.name == last:
            commits["n"] += 1
            if commits["n"] == 2:
                raise Killed()
        return real_write(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", dies_at_the_second_commit)
    with pytest.raises(Killed):
        simulate(cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", real_write)
    resumed = simulate(cfg, tmp_path / "run", progress=False)
    assert resumed["metrics"] == reference["metrics"]
    leftovers = sorted(p.name for p in (tmp_path / "run" / "checkpoint").iterdir() if p.name.startswith("round-"))
    assert leftovers == ["round-000003"]  # the crashed attempt's files and earlier rounds' are gone


def test_a_checkpoint_written_before_round_folders_still_resumes(tmp_path, monkeypatch):
    """Older runs kept the round's files flat in checkpoint/ and state.json without "files": a resume reads
    them, and the next commit moves the state into a round folder."""
    import json
    import shutil

    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=10),
                      federated={"num-server-rounds": 3, "clients-per-round": 5, "server-optimizer": "fedadam",
                                 "server-lr": 0.05})
    reference = simulate(cfg, tmp_path / "uninterrupted", progress=False)
    real_sample = loop.sample_nodes
    monkeypatch.setattr(loop, "sample_nodes", sampling_that_dies_at(3))
    with pytest.raises(Killed):
        simulate(cfg, tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "checkpoint"
    state = json.loads((ckpt / "state.json").read_text())
    for f in (ckpt / state.pop("files")).iterdir():  # the older layout
        shutil.move(str(f), ckpt / f.name)
    (ckpt / "state.json").write_text(json.dumps(state))
    monkeypatch.setattr(loop, "sample_nodes", real_sample)
    assert simulate(cfg, tmp_path / "run", progress=False)["metrics"] == reference["metrics"]
    assert not (ckpt / "global.npz").exists() and (ckpt / "round-000003" / "global.npz").is_file()
