"""The cohort backend (vectorized DP-SGD over devices) gives the same run as one device at a time."""

import pytest

from shared_models.config import ConfigError
from simulations.simulate import simulate
from tests.fed_helpers import synthetic_csv, tiny_config


@pytest.mark.parametrize("he", [False, True])
def test_cohort_backend_equals_the_per_device_path(tmp_path, he):
    csv = synthetic_csv(tmp_path / "s.csv", users=10)
    common = dict(federated={"num-server-rounds": 2, "clients-per-round": 6, "cohort-size": 4, "optimizer": "sgd"},
                  he={"enabled": he})
    ref = simulate(tiny_config(csv, **common), tmp_path / "inline", progress=False)
    common["federated"]["backend"] = "cohort"
    vec = simulate(tiny_config(csv, **common), tmp_path / "cohort", progress=False)
    assert vec["metrics"] == pytest.approx(ref["metrics"], abs=1e-9)
    assert vec["privacy"]["epsilon"] == pytest.approx(ref["privacy"]["epsilon"])
    assert vec["timing"]["client_updates"] == ref["timing"]["client_updates"] == 12


def test_cohort_backend_requires_dp_and_no_dropout(tmp_path):
    csv = synthetic_csv(tmp_path / "s.csv", users=6)
    with pytest.raises(ConfigError, match="privacy.mode"):
        tiny_config(csv, federated={"backend": "cohort"}, privacy={"mode": "none"})
    with pytest.raises(ConfigError, match="model.dropout"):
        tiny_config(csv, federated={"backend": "cohort"}, model={"dropout": 0.1})
