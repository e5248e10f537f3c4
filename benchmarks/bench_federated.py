"""Federated benchmark on ML-100K (all 943 devices): non-private FedAvg, DP-SGD on devices, DP + CKKS.

Prints Recall@10 / NDCG@10 of each variant, epsilon (with delta and unit), rounds, clients per round, wall
time and client updates per second, and two ratios:
non-private federated vs centralized long-short (>= 0.90) and DP vs non-private federated (>= 0.70).
The centralized reference is read from bench_central.py's results (long-short, all seeds found).
Runs resume (simulate() continues a killed run), so rerunning the script only finishes what is missing.

    python benchmarks/bench_federated.py --out-dir runs/bench-fed --central-dir runs/bench-central
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared_models.config import load_config  # noqa: E402
from simulations.simulate import simulate  # noqa: E402

BASE = "simulations/configs/ml100k-dp.toml"
VARIANTS = {
    "fed": ["privacy.mode=none", "he.enabled=false"],
    "fed-shared-short": ["privacy.mode=none", "he.enabled=false", "federated.personal-short-term=false"],
    # server optimizers (Reddi et al. 2021) on the plaintext server; a blind server can only average
    "fed-fedavgm": ["privacy.mode=none", "he.enabled=false", "federated.server-optimizer=fedavgm",
                    "federated.server-lr=1.0", "federated.server-momentum=0.9"],
    "fed-fedadam": ["privacy.mode=none", "he.enabled=false", "federated.server-optimizer=fedadam",
                    "federated.server-lr=0.01", "federated.server-momentum=0.9", "federated.server-beta2=0.99"],
    # client SGD + server Adam, the pairing of Reddi et al. (local Adam restarts its moments every round)
    "fed-sgd-fedadam": ["privacy.mode=none", "he.enabled=false", "federated.optimizer=sgd", "federated.lr=0.5",
                        "federated.server-optimizer=fedadam", "federated.server-lr=0.01",
                        "federated.server-momentum=0.9", "federated.server-beta2=0.99"],
    "fed-sgd-fedadam-shared-short": ["privacy.mode=none", "he.enabled=false", "federated.optimizer=sgd",
                                     "federated.lr=0.5", "federated.server-optimizer=fedadam",
                                     "federated.server-lr=0.01", "federated.server-momentum=0.9",
                                     "federated.server-beta2=0.99", "federated.personal-short-term=false"],
    "fed-dp": ["he.enabled=false"],
    "fed-dp-he": [],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=BASE)
    ap.add_argument("--variants", nargs="+", default=["fed", "fed-shared-short", "fed-dp", "fed-dp-he"],
                    choices=list(VARIANTS))
    ap.add_argument("--backend", default="inline", help="inline (same device code, no Ray) or ray")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="extra dotted overrides for all")
    ap.add_argument("--out-dir", type=Path, default=Path("runs/bench-fed"))
    ap.add_argument("--central-dir", type=Path, default=Path("runs/bench-central"))
    args = ap.parse_args()
    results = {}
    for name in args.variants:
        cfg = load_config(args.config, [*VARIANTS[name], f"federated.backend={args.backend}", *args.overrides])
        results[name] = simulate(cfg, args.out_dir / name, progress=True)
    central = [json.loads(p.read_text())["metrics"] for p in sorted(args.central_dir.glob("long-short-seed*.json"))]
    print_table(results, central)


def print_table(results: dict, central: list[dict]) -> None:
    print("\n| variant | Recall@10 | NDCG@10 | epsilon (delta, unit) | rounds x clients | wall s | updates/s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        p = r["privacy"]
        eps = "∞ (no DP)" if p["mode"] == "none" else f"{p['epsilon']:.2f} ({p['delta']:.0e}, {p['unit']})"
        print(f"| {name} | {r['metrics']['recall@10']:.4f} | {r['metrics']['ndcg@10']:.4f} | {eps} | "
              f"{r['rounds']} x {r['clients_per_round']} | {r['timing']['wall_s']:.0f} | "
              f"{r['timing']['client_updates_per_s']:.2f} |")
    private = {n: r for n, r in results.items() if r["privacy"]["mode"] != "none"}
    public = {n: r for n, r in results.items() if r["privacy"]["mode"] == "none"}
    if central:
        c = float(np.mean([m["recall@10"] for m in central]))
        print(f"\ncentralized long-short Recall@10 (mean of {len(central)} seeds): {c:.4f}")
        for name, r in public.items():
            print(f"{name} / centralized: {r['metrics']['recall@10'] / c:.3f} (target >= 0.90)")
    if public:
        best = max(public, key=lambda n: public[n]["metrics"]["recall@10"])
        base = public[best]["metrics"]["recall@10"]
        for name, r in private.items():
            if base > 0:
                print(f"{name} / non-private federated ({best}): {r['metrics']['recall@10'] / base:.3f} "
                      "(target >= 0.70)")

if __name__ == "__main__":
    main()
