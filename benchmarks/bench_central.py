"""Centralized benchmark on ML-100K: pop / long / short / long-short (± text embeddings), several seeds.

Prints mean ± std over seeds of the test metrics (full ranking), wall time, and a paired bootstrap 95%
interval of long-short minus long NDCG@10 over users. Each run's JSON goes to --out-dir, and finished runs
are reused, so an interrupted benchmark resumes.

    python benchmarks/bench_central.py --seeds 0 1 2 --out-dir runs/bench-central
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared_models.config import build_config  # noqa: E402
from shared_models.train.metrics import METRIC_NAMES, paired_bootstrap, per_user_metrics  # noqa: E402
from simulations.central import train_central  # noqa: E402

VARIANTS = {
    "pop": ["model.kind=pop"],
    "long": ["model.kind=long"],
    "short": ["model.kind=short"],
    "long-short": ["model.kind=long-short"],
    "long-short+text": ["model.kind=long-short", "model.text-embeddings=true"],
    "long+text": ["model.kind=long", "model.text-embeddings=true"],
}
BOOTSTRAP_SAMPLES = 2000


def run_one(name: str, seed: int, args) -> dict:
    path = args.out_dir / f"{name}-seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    overrides = VARIANTS[name] + [f"train.seed={seed}", f"train.patience={args.patience}",
                                  f"train.epochs={args.epochs}", f"train.threads={args.threads}",
                                  f'data.dataset="{args.dataset}"']
    result = train_central(build_config(overrides=overrides), progress=False)
    path.write_text(json.dumps(result))
    print(f"{name} seed {seed}: ndcg@10 {result['metrics']['ndcg@10']:.4f} recall@10 "
          f"{result['metrics']['recall@10']:.4f} ({result['wall_s']} s, best epoch {result['best_epoch']})", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--single-seed-variants", nargs="*", default=["pop", "short", "long-short+text", "long+text"],
                    help="variants run with the first seed only (to save time)")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", type=Path, default=Path("runs/bench-central"))
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results = {v: [run_one(v, s, args) for s in (args.seeds[:1] if v in args.single_seed_variants else args.seeds)]
               for v in args.variants}
    print_table(results)
    if "long-short" in results and "long" in results:
        print_bootstrap(results["long-short"], results["long"])


def print_table(results: dict[str, list[dict]]) -> None:
    print(f"\n| model | seeds | {' | '.join(METRIC_NAMES)} | wall s |")
    print("|---|---|" + "---|" * (len(METRIC_NAMES) + 1))
    for name, runs in results.items():
        cells = []
        for m in METRIC_NAMES:
            vals = np.array([r["metrics"][m] for r in runs])
            cells.append(f"{vals.mean():.4f} ± {vals.std(ddof=1):.4f}" if len(vals) > 1 else f"{vals[0]:.4f}")
        wall = np.mean([r["wall_s"] for r in runs])
        print(f"| {name} | {len(runs)} | {' | '.join(cells)} | {wall:.0f} |")


def print_bootstrap(a_runs: list[dict], b_runs: list[dict]) -> None:
    for a, b in zip(a_runs, b_runs):
        ua = per_user_metrics(np.array(a["test_ranks"]))["ndcg@10"]
        ub = per_user_metrics(np.array(b["test_ranks"]))["ndcg@10"]
        mean, lo, hi = paired_bootstrap(ua, ub, num_samples=BOOTSTRAP_SAMPLES, seed=a["config"]["train"]["seed"])
        print(f"seed {a['config']['train']['seed']}: long-short - long NDCG@10 = {mean:+.4f} "
              f"(95% paired bootstrap over users: [{lo:+.4f}, {hi:+.4f}])")


if __name__ == "__main__":
    main()
