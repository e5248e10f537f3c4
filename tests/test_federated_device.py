"""Device-side invariants: personal weights stay, ledger composes and persists, budget refusals."""

import numpy as np
import pytest
import torch

from client.device import device_evaluate, device_train, dp_plan
from client.store import DeviceStore
from shared_models.privacy import RDPAccountant
from shared_models.train.sequences import build_windows
from shared_models.datasets.population import DeviceData, population
from shared_models.model.state import initial_shared
from tests.fed_helpers import synthetic_csv, tiny_config


@pytest.fixture
def setup(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "synth.csv"))
    pop = population(cfg)
    return cfg, pop, initial_shared(cfg, pop.num_items, pop.text), tmp_path


def test_reply_carries_only_shared_parameters(setup):
    cfg, pop, shared, tmp = setup
    out = device_train(data=pop.devices[0], store=DeviceStore(tmp / "d0"), global_shared=shared, cfg=cfg, round_id=1)
    assert not out.refused and out.num_examples > 0
    assert set(out.shared) == set(shared)
    assert not any(k.startswith(("short.", "gate.")) for k in out.shared)
    personal = torch.load(tmp / "d0" / "personal.pt", weights_only=True)
    assert personal and all(k.startswith(("short.", "gate.")) for k in personal)
    assert any(not np.array_equal(out.shared[k], shared[k]) for k in shared)  # it trained


def test_ledger_composes_over_rounds_and_survives_restart(setup):
    cfg, pop, shared, tmp = setup
    dev = pop.devices[1]
    for r in (1, 2):
        device_train(data=dev, store=DeviceStore(tmp / "d1"), global_shared=shared, cfg=cfg, round_id=r)
    ledger = DeviceStore(tmp / "d1").ledger(cfg.privacy, delta=cfg.privacy.delta)  # a fresh process would do this
    n = len(build_windows([dev.train], max_len=cfg.model.max_len))
    q, steps = dp_plan(n, batch_size=cfg.federated.batch_size, epochs=cfg.federated.local_epochs)
    acc = RDPAccountant()
    acc.step(noise_multiplier=1.0, sample_rate=q, num_steps=2 * steps)
    one = RDPAccountant()
    one.step(noise_multiplier=1.0, sample_rate=q, num_steps=steps)
    assert ledger.total_steps == 2 * steps
    assert ledger.epsilon() == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-9)
    assert ledger.epsilon() > one.get_epsilon(delta=1e-5)


def test_device_declines_past_its_budget(setup):
    cfg, pop, shared, tmp = setup
    cfg.privacy.target_epsilon = 0.5  # one full-batch step at sigma 1 already costs more
    out = device_train(data=pop.devices[2], store=DeviceStore(tmp / "d2"), global_shared=shared, cfg=cfg, round_id=1)
    assert out.refused and "budget" in out.reason and not out.shared
    assert not (tmp / "d2" / "personal.pt").exists()


def test_personal_state_survives_restart_and_is_used(setup):
    cfg, pop, shared, tmp = setup
    dev = pop.devices[3]
    device_train(data=dev, store=DeviceStore(tmp / "d3"), global_shared=shared, cfg=cfg, round_id=1)
    rank_trained = device_evaluate(data=dev, store=DeviceStore(tmp / "d3"), global_shared=shared, cfg=cfg, stage="test")
    (tmp / "d3" / "personal.pt").rename(tmp / "d3" / "moved.pt")
    rank_fresh = device_evaluate(data=dev, store=DeviceStore(tmp / "d3"), global_shared=shared, cfg=cfg, stage="test")
    (tmp / "d3" / "moved.pt").rename(tmp / "d3" / "personal.pt")
    rank_again = device_evaluate(data=dev, store=DeviceStore(tmp / "d3"), global_shared=shared, cfg=cfg, stage="test")
    assert rank_again == rank_trained
    masked, unmasked = rank_fresh  # (history masked, unmasked): masking only removes competitors
    assert 1 <= masked <= unmasked <= pop.num_items - 1
    stored = DeviceStore(tmp / "d3").load_personal()
    assert stored is not None and "gate.w.weight" in stored


def test_bad_item_in_device_data_raises_clearly(setup):
    cfg, pop, shared, tmp = setup
    bad = DeviceData(device_id="bad", train=np.array([1, 2, 10_000, 3, 4]), valid=1, test=2, num_items=pop.num_items)
    with pytest.raises(ValueError, match="device bad: item index 10000 outside the catalogue"):
        device_train(data=bad, store=DeviceStore(tmp / "bad"), global_shared=shared, cfg=cfg, round_id=1)


@pytest.mark.parametrize("n, batch", [(1, 16), (3, 16), (17, 16), (40, 16), (40, 7)])
def test_budget_precheck_plans_exactly_what_opacus_does(n, batch):
    """``dp_plan`` (used to refuse before training) must predict Opacus' sample rate and step count."""
    from shared_models.config import ModelConfig
    from shared_models.train.dp_training import train_local_dp
    from shared_models.model.interest import InterestModel
    from shared_models.train.sequences import Windows

    rng = np.random.default_rng(0)
    w = Windows(rng.integers(1, 20, (n, 6)), rng.integers(1, 20, (n, 6)))
    model = InterestModel(ModelConfig(kind="long", hidden=8, max_len=6, num_heads=2, inner=8, num_layers=1), 20)
    res = train_local_dp(model, w, epochs=2, lr=0.01, batch_size=batch, noise_multiplier=1.0, max_grad_norm=1.0,
                         seed=0)
    assert dp_plan(n, batch_size=batch, epochs=2) == (pytest.approx(res.sample_rate), res.steps)


def test_dp_noise_seed_comes_from_a_device_secret(tmp_path):
    """Nobody who knows the run seed, round and device id can regenerate a device's DP noise."""
    a, b = DeviceStore(tmp_path / "a"), DeviceStore(tmp_path / "b")
    assert a.noise_seed(3) == a.noise_seed(3)  # stable for a resumed round on the same device
    assert a.noise_seed(3) != a.noise_seed(4)
    assert a.noise_seed(3) != b.noise_seed(3)  # same round, different secret
    assert (tmp_path / "a" / "noise_secret.bin").stat().st_mode & 0o777 == 0o600
    assert DeviceStore(tmp_path / "a").noise_seed(3) == a.noise_seed(3)  # survives a restart


def test_secret_noise_makes_two_identical_devices_train_differently(setup):
    cfg, pop, shared, tmp = setup
    cfg.privacy.reproducible_noise = False
    outs = [device_train(data=pop.devices[0], store=DeviceStore(tmp / f"s{i}"), global_shared=shared, cfg=cfg,
                         round_id=1) for i in range(2)]
    assert any(not np.array_equal(outs[0].shared[k], outs[1].shared[k]) for k in shared)
    cfg.privacy.reproducible_noise = True
    outs = [device_train(data=pop.devices[0], store=DeviceStore(tmp / f"r{i}"), global_shared=shared, cfg=cfg,
                         round_id=1) for i in range(2)]
    assert all(np.array_equal(outs[0].shared[k], outs[1].shared[k]) for k in shared)
