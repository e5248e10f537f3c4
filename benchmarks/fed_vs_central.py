#!/usr/bin/env python
"""Federated vs centralized on the same users: per-user test metrics and a paired bootstrap of their ratio.

A Recall@10 over 943 users has a standard error of about 0.012 on its own, but the federated and the
centralized model are tested on the same users, so the ratio of their means is much better determined when
users are resampled jointly. For each federated run directory (plaintext runs: ``global_shared.npz``), this
re-ranks every device's test item with the shipped model and the device's own stored state (checking that
the result equals the run's metrics.json), averages each user's metric over the given runs (seeds) and over
the centralized runs, and prints mean(federated) / mean(centralized) with a 95% interval.

    python benchmarks/fed_vs_central.py --runs runs/ema-seed{0,1,2}/fed-sgd-fedadam-shared-short \
        --central runs/bench-central/long-short-seed{0,1,2}.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.device import device_evaluate  # noqa: E402
from client.store import DeviceStore  # noqa: E402
from shared_models.config import build_config  # noqa: E402
from shared_models.train.metrics import METRIC_NAMES, paired_bootstrap_ratio, per_user_metrics, summarize  # noqa: E402
from shared_models.datasets.population import population  # noqa: E402
from shared_models.paths import device_state_dir

BOOTSTRAP_SAMPLES = 2000
TOLERANCE = 1e-9  # recomputed metrics vs metrics.json


def federated_test_ranks(run: Path) -> np.ndarray:
    """(U,) test rank of every device, in population order, with the run's shipped model."""
    model_path = run / "global_shared.npz"
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: not a finished plaintext run (HE runs ship only an encrypted sum)")
    cfg = build_config(json.loads((run / "config.json").read_text()))
    pop = population(cfg)
    with np.load(model_path) as z:
        shared = {k: z[k] for k in z.files}
    column = 0 if cfg.eval.mask_history else 1  # device_evaluate: (masked, unmasked); metrics.json follows the run
    ranks = np.array([device_evaluate(data=d, store=DeviceStore(device_state_dir(run, d.device_id)),
                                      global_shared=shared, cfg=cfg, stage="test", text=pop.text)[column]
                      for d in pop.devices])
    reported = json.loads((run / "metrics.json").read_text())["metrics"]
    recomputed = summarize(ranks)
    bad = {k: (recomputed[k], reported[k]) for k in METRIC_NAMES if abs(recomputed[k] - reported[k]) > TOLERANCE}
    if bad:
        raise ValueError(f"{run}: re-ranking does not reproduce metrics.json: {bad}")
    return ranks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", type=Path, required=True, help="federated run directories (seeds)")
    ap.add_argument("--central", nargs="+", type=Path, required=True, help="bench_central JSONs (seeds)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = ap.parse_args()
    fed = [per_user_metrics(federated_test_ranks(r)) for r in args.runs]
    central = [per_user_metrics(np.asarray(json.loads(p.read_text())["test_ranks"])) for p in args.central]
    if len({len(m["recall@10"]) for m in fed + central}) != 1:
        raise ValueError("federated and centralized runs cover different numbers of users")
    print(f"{len(args.runs)} federated run(s) vs {len(args.central)} centralized run(s), "
          f"{len(fed[0]['recall@10'])} users, {BOOTSTRAP_SAMPLES} paired resamples")
    print("| metric | federated | centralized | ratio | 95% interval |\n|---|---|---|---|---|")
    for name in METRIC_NAMES:
        a = np.mean([m[name] for m in fed], axis=0)  # each user's metric, averaged over seeds
        b = np.mean([m[name] for m in central], axis=0)
        ratio, lo, hi = paired_bootstrap_ratio(a, b, num_samples=BOOTSTRAP_SAMPLES, seed=args.seed)
        print(f"| {name} | {a.mean():.4f} | {b.mean():.4f} | {ratio:.3f} | [{lo:.3f}, {hi:.3f}] |")


if __name__ == "__main__":
    main()
