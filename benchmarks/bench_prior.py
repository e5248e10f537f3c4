"""Rank every device's test item by a run's released DP popularity prior alone (no trained model).

    python benchmarks/bench_prior.py RUN_DIR

Reads RUN_DIR/config.json and RUN_DIR/server/prior_sum.{ckks,npy}; under HE a device's key set
(RUN_DIR.keys, or he.keys_dir) decrypts the sum, as every device does. Prints the test metrics (history masked) beside
popularity on the same devices, and the prior's ε alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.prior import decode  # noqa: E402
from server.prior import saved_prior  # noqa: E402
from shared_models.config import build_config  # noqa: E402
from shared_models.datasets.population import population  # noqa: E402
from shared_models.paths import run_keys_dir  # noqa: E402
from shared_models.privacy import epsilon_from_history  # noqa: E402
from shared_models.train.metrics import summarize  # noqa: E402
from simulations.report.baselines import popularity_metrics  # noqa: E402


def prior_ranks(run_dir: Path) -> tuple[np.ndarray, dict]:
    cfg = build_config(json.loads((run_dir / "config.json").read_text()))
    released = saved_prior(cfg, run_dir)
    if released is None:
        raise SystemExit(f"{run_dir}: no released popularity prior (server/prior_sum.*)")
    pop = population(cfg)
    prior = decode(released, keys_dir=str(run_keys_dir(run_dir, cfg.he.keys_dir)), device_id=pop.devices[0].device_id).astype(np.float64)
    ranks = []
    for d in pop.devices:  # the target among unseen items; ties count against it
        scores = prior.copy()
        scores[0] = -np.inf
        scores[np.setdiff1d(np.append(d.train, d.valid), [d.test])] = -np.inf
        ranks.append(int(np.sum(scores >= scores[d.test])))
    return np.array(ranks), {"cfg": cfg}


def main() -> None:
    run_dir = Path(sys.argv[1])
    ranks, info = prior_ranks(run_dir)
    cfg = info["cfg"]
    eps = epsilon_from_history([(cfg.privacy.prior_noise_multiplier, 1.0, 1)], delta=cfg.privacy.delta)
    print(f"prior only ({len(ranks)} devices, prior alone eps {eps:.3f} at delta {cfg.privacy.delta:g}):")
    for name, metrics in (("prior", summarize(ranks)), ("popularity", popularity_metrics(cfg.to_dict())[0])):
        print(f"  {name:<11}" + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
