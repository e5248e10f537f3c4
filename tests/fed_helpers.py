"""Shared builders for the federated tests: a tiny synthetic population and a small model config."""

from __future__ import annotations

from pathlib import Path

from shared_models.config import Config, build_config
from shared_models.datasets import make_synthetic, write_csv

TINY_MODEL = {"hidden": 16, "max-len": 12, "short-len": 4, "num-layers": 1, "num-heads": 2, "inner": 32,
              "dropout": 0.0}


def synthetic_csv(path: Path, *, users: int = 12, items: int = 40, seed: int = 0) -> Path:
    write_csv(make_synthetic(num_users=users, num_items=items, seed=seed), path)
    return path


def tiny_config(dataset: Path, **sections) -> Config:
    data = {"data": {"dataset": str(dataset)}, "model": dict(TINY_MODEL),
            "federated": {"backend": "inline", "num-server-rounds": 2, "clients-per-round": 4,
                          "min-train-nodes": 1, "eval-every": 0, "batch-size": 4, "lr": 0.01},
            "privacy": {"mode": "example", "noise-multiplier": 1.0, "max-grad-norm": 1.0,
                        "target-epsilon": 50.0, "delta": 1e-5, "reproducible-noise": True},
            "he": {"enabled": False}}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return build_config(data)


def copy_run(src: Path, dst: Path) -> Path:
    """Copy a run directory and the keys beside it (``RUN_DIR.keys``) to ``dst`` and ``dst.keys``."""
    import shutil

    from shared_models.paths import run_keys_dir

    shutil.copytree(src, dst)
    if run_keys_dir(src).is_dir():
        shutil.copytree(run_keys_dir(src), run_keys_dir(dst))
    return Path(dst)


def server_key_path(run: Path, *, public: bool = False) -> Path:
    """The run's server signing key (or its public half), in the keys directory beside the run."""
    from shared_models.paths import run_keys_dir

    return run_keys_dir(run) / "server" / ("signing_ed25519.pub.pem" if public else "signing_ed25519.pem")


class Killed(Exception):
    """A simulated crash (the process dies where a patched function raises it)."""


def sampling_that_dies_at(call: int):
    """A stand-in for ``server.loop.sample_nodes`` that raises ``Killed`` on its ``call``-th use (call 3: the
    run dies before round 3 samples its devices) and samples as usual otherwise."""
    import server.loop as loop

    real, calls = loop.sample_nodes, {"n": 0}

    def sample(nodes, c, rng):
        calls["n"] += 1
        if calls["n"] == call:
            raise Killed()
        return real(nodes, c, rng)
    return sample
