"""Server loop over the inline transport: equivalence with centralized training, failures, refusals."""

import numpy as np
import pytest
import torch

from client.device import load_weights
from client.store import DeviceStore
from server.loop import PlainFedAvg, run_rounds
from shared_models.train.sequences import build_windows
from shared_models.datasets.population import DeviceData, Population, population
from shared_models.model.state import build_device_model, initial_shared
from simulations.backends.inline import InlineTransport
from tests.fed_helpers import synthetic_csv, tiny_config


def test_one_client_full_participation_equals_centralized_sgd(tmp_path):
    """1 device, no DP, full batch, SGD: R federated rounds == R centralized full-batch steps."""
    rounds = 3
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=4), federated={
        "num-server-rounds": rounds, "clients-per-round": 1, "optimizer": "sgd", "lr": 0.5, "batch-size": 64},
        privacy={"mode": "none"})
    full = population(cfg)
    pop = Population([full.devices[0]], full.num_items, None, len(full.devices[0].train))
    shared0 = initial_shared(cfg, pop.num_items, None)
    strategy = PlainFedAvg(shared0)
    stats = run_rounds(cfg, InlineTransport(cfg, pop, tmp_path / "run"), strategy)
    final = strategy.shared
    assert [s.valid for s in stats] == [1] * rounds

    dev = pop.devices[0]
    ref = build_device_model(cfg, pop.num_items, None, dev.device_id)
    load_weights(ref, shared0, DeviceStore(tmp_path / "empty"))
    w = build_windows([dev.train], max_len=cfg.model.max_len)
    batch = {"inputs": torch.from_numpy(w.inputs), "targets": torch.from_numpy(w.targets)}
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for _ in range(rounds):
        opt.zero_grad()
        ref.calculate_loss(batch).backward()
        opt.step()
    params = dict(ref.named_parameters())
    for k, v in final.items():
        np.testing.assert_allclose(v, params[k].detach().numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
    assert any(not np.allclose(v, shared0[k]) for k, v in final.items())


def test_failing_device_does_not_stop_the_round(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv"), federated={"clients-per-round": 4, "num-server-rounds": 1})
    good = population(cfg)
    bad = DeviceData("broken", np.array([1, 2, 99_999, 3]), 1, 2, good.num_items)
    pop = Population([bad] + good.devices[:3], good.num_items, None, good.max_interactions)
    shared0 = initial_shared(cfg, pop.num_items, None)
    strategy = PlainFedAvg(shared0)
    stats = run_rounds(cfg, InlineTransport(cfg, pop, tmp_path / "run"), strategy)
    final = strategy.shared
    assert (stats[0].failed, stats[0].valid) == (1, 3)
    assert any(not np.array_equal(final[k], shared0[k]) for k in final)


def test_refusals_are_counted_and_the_model_is_kept_when_too_few_train(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv"),
                      federated={"clients-per-round": 3, "num-server-rounds": 1, "min-train-nodes": 1},
                      privacy={"target-epsilon": 0.1})
    pop = population(cfg)
    shared0 = initial_shared(cfg, pop.num_items, None)
    strategy = PlainFedAvg(shared0)
    stats = run_rounds(cfg, InlineTransport(cfg, pop, tmp_path / "run"), strategy)
    final = strategy.shared
    assert (stats[0].refused, stats[0].valid) == (3, 0)
    assert all(np.array_equal(final[k], shared0[k]) for k in final)


@pytest.mark.parametrize("personal", [True, False])
def test_personal_short_term_flag_decides_what_is_federated(tmp_path, personal):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv"), federated={"personal-short-term": personal})
    shared = initial_shared(cfg, population(cfg).num_items, None)
    assert any(k.startswith("short.") for k in shared) is (not personal)
