"""Every config shipped in simulations/configs loads and validates (sweeps expand every grid point), so a
renamed or re-ranged key cannot leave a documented command broken."""

from pathlib import Path

import pytest

from shared_models.config import load_config, read_toml
from simulations.sweep.grid import expand_grid
from simulations.sweep.spec import load_sweep

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "simulations" / "configs").glob("*.toml"))


def test_there_are_shipped_configs():
    assert {"smoke.toml", "window-ml100k.toml", "tradeoff-content-ml100k.toml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads(path):
    if "sweep" in read_toml(path):
        points = expand_grid(load_sweep(path))  # every point's config is validated
        assert points
    else:
        cfg = load_config(path)
        assert cfg.data.dataset
