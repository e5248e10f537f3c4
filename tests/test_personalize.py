"""eval.personalize_epochs (joint DP): a device fine-tunes its own copy of the received model on its own history
before it ranks; the received weights, the device's store and everything it sends stay as they were."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from client.device import device_evaluate, device_train, personalize
from client.store import DeviceStore
from shared_models.config import ConfigError
from shared_models.datasets.population import population
from shared_models.model.state import build_device_model, initial_shared
from tests.fed_helpers import synthetic_csv, tiny_config


def _setup(tmp_path, **eval_section):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv"), privacy={"mode": "none"}, eval=eval_section)
    pop = population(cfg)
    return cfg, pop, initial_shared(cfg, pop.num_items, None)


def test_fine_tuning_moves_only_the_device_copy_and_changes_its_ranking(tmp_path):
    cfg, pop, shared = _setup(tmp_path, **{"personalize-epochs": 5, "personalize-lr": 0.05})
    device = pop.devices[0]
    model = build_device_model(cfg, pop.num_items, None, device.device_id)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in shared.items()}, strict=False)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    personalize(model, device.train, cfg=cfg, seed=0)
    assert not model.training
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    received = {k: v.copy() for k, v in shared.items()}
    stores = {d.device_id: DeviceStore(tmp_path / d.device_id) for d in pop.devices}
    for d in pop.devices:  # a trained round leaves each device its personal weights and ledger
        device_train(data=d, store=stores[d.device_id], global_shared=shared, cfg=cfg, round_id=1)
    kept = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.parent != tmp_path}
    assert any(p.suffix == ".pt" for p in kept)
    tuned = [device_evaluate(data=d, store=stores[d.device_id], global_shared=shared, cfg=cfg, stage="test")
             for d in pop.devices]
    plain_cfg, _, _ = _setup(tmp_path)
    plain = [device_evaluate(data=d, store=stores[d.device_id], global_shared=shared, cfg=plain_cfg, stage="test")
             for d in pop.devices]
    assert tuned != plain  # the fine-tuned copy ranks differently
    assert all(np.array_equal(received[k], shared[k]) for k in shared)  # the received weights are untouched
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.parent != tmp_path}
    assert after == kept  # nothing of the fine-tuned copy is stored: the device's state is byte for byte the same


def test_zero_epochs_or_no_window_leaves_the_model_as_received(tmp_path):
    cfg, pop, _ = _setup(tmp_path)
    model = build_device_model(cfg, pop.num_items, None, "u")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    personalize(model, pop.devices[0].train, cfg=cfg, seed=0)
    tuned_cfg, _, _ = _setup(tmp_path, **{"personalize-epochs": 3})
    personalize(model, np.array([5], dtype=np.int64), cfg=tuned_cfg, seed=0)  # one item: no window to fit
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("key,value,needle", [("personalize-epochs", -1, ">= 0"), ("personalize-lr", 0.0, "> 0")])
def test_config_names_a_bad_personalization_key(tmp_path, key, value, needle):
    with pytest.raises(ConfigError, match=key.replace("-", "_")) as err:
        _setup(tmp_path, **{key: value})
    assert needle in str(err.value)
