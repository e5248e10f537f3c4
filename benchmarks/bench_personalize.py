#!/usr/bin/env python
"""Joint-DP personalization, paired: each device's test rank with a finished run's shipped model as is, and
after the device fine-tunes its own copy on its own history (``eval.personalize-epochs``/``-lr``).

The same released model, the same users: only the on-device fine-tuning differs, so the paired interval
measures the lever and nothing else (a rerun with the option on would also redraw the DP noise). Plaintext
runs only (``global_shared.npz``); the fine-tuning is the same under CKKS, where a device decrypts first.

    python benchmarks/bench_personalize.py --runs runs/w-avg5-s0 runs/w-avg5-s1 --epochs 1 3 --lr 1e-3 1e-2
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.device import device_evaluate  # noqa: E402
from client.store import DeviceStore  # noqa: E402
from shared_models.config import build_config  # noqa: E402
from shared_models.datasets.population import population  # noqa: E402
from shared_models.paths import device_state_dir  # noqa: E402
from shared_models.train.metrics import paired_bootstrap, per_user_metrics, summarize  # noqa: E402

PROTOCOLS = ("masked", "unmasked")
TOLERANCE = 1e-9


def test_ranks(run: Path, *, epochs: int, lr: float) -> np.ndarray:
    """(U, 2) test ranks (masked, unmasked) of every device with the run's shipped model, fine-tuned on the
    device for ``epochs`` epochs at ``lr`` first (0: as shipped, checked against metrics.json)."""
    model_path = run / "global_shared.npz"
    if not model_path.is_file():
        raise SystemExit(f"{model_path}: not a finished plaintext run (run it with --set he.enabled=false)")
    config = json.loads((run / "config.json").read_text())
    if config.get("privacy", {}).get("prior"):
        raise SystemExit(f"{run}: the run released a popularity prior; this benchmark ranks without it")
    config.setdefault("eval", {}).update({"personalize-epochs": epochs, "personalize-lr": lr})
    cfg = build_config(config)
    pop = population(cfg)
    with np.load(model_path) as z:
        shared = {k: z[k] for k in z.files}
    ranks = np.array([device_evaluate(data=d, store=DeviceStore(device_state_dir(run, d.device_id)),
                                      global_shared=shared, cfg=cfg, stage="test", text=pop.text)
                      for d in pop.devices])
    if epochs == 0:
        reported = json.loads((run / "metrics.json").read_text())["metrics"]
        got = summarize(ranks[:, 0 if cfg.eval.mask_history else 1])
        if any(abs(got[k] - reported[k]) > TOLERANCE for k in reported):
            raise SystemExit(f"{run}: re-ranking does not reproduce metrics.json ({got} vs {reported})")
    return ranks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", type=Path, required=True, help="finished plaintext run directories")
    ap.add_argument("--epochs", nargs="+", type=int, default=[1, 3])
    ap.add_argument("--lr", nargs="+", type=float, default=[1e-3])
    ap.add_argument("--bootstrap-samples", type=int, default=2000)
    args = ap.parse_args()
    settings = [(0, 0.0)] + [(e, lr) for e, lr in itertools.product(args.epochs, args.lr) if e > 0]
    per_user = {}  # setting -> protocol -> {metric: per-user values averaged over runs}
    for epochs, lr in settings:
        ranks = [test_ranks(run, epochs=epochs, lr=lr or 1e-3) for run in args.runs]
        per_user[(epochs, lr)] = {p: {k: np.mean([per_user_metrics(r[:, i])[k] for r in ranks], axis=0)
                                      for k in ("recall@10", "ndcg@10")} for i, p in enumerate(PROTOCOLS)}
    print(f"{len(args.runs)} run(s), {len(per_user[(0, 0.0)]['masked']['ndcg@10'])} devices, test split\n")
    print("| fine-tuning on the device | masked R@10 | masked NDCG@10 | unmasked R@10 | unmasked NDCG@10 |")
    print("|---|---|---|---|---|")
    for (epochs, lr), m in per_user.items():
        name = "none (as shipped)" if not epochs else f"{epochs} epoch(s), lr {lr:g}"
        print(f"| {name} | " + " | ".join(f"{m[p][k].mean():.4f}" for p in PROTOCOLS
                                         for k in ("recall@10", "ndcg@10")) + " |")
    base = per_user[(0, 0.0)]
    for (epochs, lr), m in per_user.items():
        if epochs:
            parts = []
            for p in PROTOCOLS:
                d, lo, hi = paired_bootstrap(m[p]["ndcg@10"], base[p]["ndcg@10"], num_samples=args.bootstrap_samples,
                                             seed=0)
                parts.append(f"{p} {d:+.4f} [{lo:+.4f}, {hi:+.4f}]")
            print(f"- NDCG@10, {epochs} epoch(s) at lr {lr:g} minus as shipped: " + "; ".join(parts))


if __name__ == "__main__":
    main()
