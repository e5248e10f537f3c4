"""What leaves a device under DP does not depend on its data except through the clipped, noised update:
one more training window changes neither the weight, nor the fields, nor the size of the reply."""

from __future__ import annotations

import numpy as np
import pytest

from client.round import HE_VISIBLE_METRICS, DeviceContext, RoundInput, train_round
from client.store import DeviceStore
from server.job import prepare_keys
from shared_models.datasets.population import DeviceData, population
from tests.fed_helpers import synthetic_csv, tiny_config


@pytest.mark.parametrize("he", [False, True])
def test_one_more_window_changes_no_count_bearing_field(tmp_path, he):
    he_cfg = {"enabled": True} if he else {"enabled": False}
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv"), he=he_cfg)
    pop = population(cfg)
    keys = prepare_keys(cfg, pop, tmp_path)
    base = pop.devices[0]
    window = cfg.model.max_len + 1
    short = DeviceData(base.device_id, base.train[-window:], base.valid, base.test, base.num_items)  # 1 window
    longer = DeviceData(base.device_id, np.concatenate([base.train[-window:], base.train[-window:]]), base.valid,
                        base.test, base.num_items)  # 2 windows
    replies = []
    for name, data in (("one", short), ("two", longer)):
        device = DeviceContext(data, DeviceStore(tmp_path / name), pop.text, pop.max_interactions, keys)
        replies.append(train_round(RoundInput(device, cfg, None if he else _initial(cfg, pop), 1, node=0)))
    a, b = replies
    assert not a.refused and not b.refused
    assert a.num_examples == b.num_examples == (0 if he else 1)  # fixed weight (inside the ciphertext under HE)
    assert set(a.metrics) == set(b.metrics) and set(a.metrics) <= set(HE_VISIBLE_METRICS)
    if he:
        assert len(a.payload) == len(b.payload)
    else:
        assert list(a.shared) == list(b.shared)


def _initial(cfg, pop):
    from shared_models.model.state import initial_shared

    return initial_shared(cfg, pop.num_items, pop.text)
