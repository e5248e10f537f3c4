"""End-to-end simulations on a tiny synthetic population, checking real numbers."""

import csv
import json

import numpy as np
import pytest

from shared_models.train.evaluation import evaluate_split
from shared_models.model.popularity import PopularityModel
from shared_models.privacy import PrivacyLedger
from shared_models.datasets.load import load_split
from simulations.simulate import simulate
from shared_models.paths import run_keys_dir
from tests.fed_helpers import synthetic_csv, tiny_config

CONTRACT_PRIVACY = {"mode", "unit", "epsilon", "delta", "target_epsilon", "noise_multiplier", "max_grad_norm",
                    "sample_rate", "steps", "epsilon_mean", "refusals"}


def test_inline_federated_learns_planted_structure_beyond_popularity(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=30, items=40),
                      federated={"num-server-rounds": 5, "clients-per-round": 30, "local-epochs": 3},
                      privacy={"mode": "none"})
    result = simulate(cfg, tmp_path / "run", progress=False)
    split = load_split(cfg.data)
    pop, _ = evaluate_split(PopularityModel(split.train, split.num_items), split, stage="test", max_len=12,
                            batch_size=64)
    assert result["evaluated_devices"] == 30
    assert result["metrics"]["recall@10"] >= pop["recall@10"] + 0.2
    assert result["privacy"]["epsilon"] is None and result["privacy"]["unit"] is None


@pytest.mark.slow
def test_flower_ray_simulation_with_he_writes_the_contract_with_true_epsilon(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=8, items=30),
                      federated={"backend": "ray", "num-server-rounds": 2, "clients-per-round": 5, "eval-every": 2},
                      he={"enabled": True})
    run = tmp_path / "run"
    result = simulate(cfg, run, progress=False)
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["metrics"] == result["metrics"]
    # both ranks came back through the Flower evaluate reply: masking only removes competitors
    assert all(on_disk["metrics"][k] >= v for k, v in on_disk["metrics_unmasked"].items())
    assert on_disk["metrics_unmasked"]["recall@20"] > 0  # 20 of 29 competing items: some target gets in
    assert set(on_disk["privacy"]) >= CONTRACT_PRIVACY
    assert on_disk["privacy"]["unit"] == "window"
    assert (on_disk["rounds"], on_disk["clients_per_round"], on_disk["num_clients"]) == (2, 5, 8)
    assert on_disk["evaluated_devices"] == 8
    ledgers = [PrivacyLedger.open(p, delta=1e-5, unit="window", target_epsilon=50.0)
               for p in sorted((run / "devices").glob("*/ledger.json"))]
    assert 5 <= len(ledgers) <= 8
    eps = [led.epsilon() for led in ledgers]
    assert on_disk["privacy"]["epsilon"] == pytest.approx(max(eps))
    assert on_disk["privacy"]["epsilon_mean"] == pytest.approx(np.mean(eps))
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["round"]) for r in rows] == [1, 2]
    assert all(int(r["valid"]) == 5 for r in rows)
    assert rows[1]["recall@10"] != ""  # evaluated at round 2
    assert on_disk["timing"]["client_updates"] == 10
    he = on_disk["he"]
    assert he["enabled"] and he["rejected_updates"] == 0 and he["params_per_update"] > 0
    assert 0 < he["bytes_per_param"] < 20 and he["encrypt_s"] > 0 and he["decrypt_s"] > 0
    assert (run_keys_dir(run) / "server" / "ckks_public.tenseal").exists() and not (run / "global_shared.npz").exists()
    # the encrypted sum reached devices by reference: published once, named by its digest, equal to the final sum
    published = list((run / "broadcast").glob("*.bin"))
    final_sum = (run / "global_sum.ckks").read_bytes()
    assert 1 <= len(published) <= 2 and any(p.read_bytes() == final_sum for p in published)
