#!/usr/bin/env python
"""Benchmark on-device recommendation (a script, not a test), single-threaded.

    python benchmarks/bench_recommend.py --out runs/bench-recommend.json

Scenarios, each in its own subprocess (so peak RSS is per scenario):
- ``ml100k``: a device initialised from ML-100K (user with >= --history interactions), default model
  (D=64, T=50, 2 layers), weights = the initial shared model (latency does not depend on training);
- ``synth100k``: a synthetic 100,000-item catalogue, same model, --history random interactions.

Per scenario: recommend() p50/p95 ms with the model loaded (reads the SQLite history, re-encodes, top-10 of
unseen items), the same with --explain, the exported TorchScript call alone (fp32 and int8), exported file
sizes, model load time, peak RSS (resource.getrusage) and the peak Python heap (tracemalloc; torch tensors are
not traced by it). Targets: ML-100K p50 <= 5 ms, p95 <= 15 ms; 100k items p50 <= 20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SCENARIOS = ("ml100k", "synth100k")
TARGETS = {"ml100k": (5.0, 15.0), "synth100k": (20.0, None)}


def _percentiles(fn, n: int, warmup: int = 10) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p95_ms": round(float(np.percentile(times, 95)), 3),
            "min_ms": round(float(np.min(times)), 3)}


def _make_state(scenario: str, root: Path, history: int, seed: int) -> Path:
    from client.runtime import add_interaction, init_device

    state = root / scenario
    if scenario == "ml100k":
        from shared_models.datasets import load_interactions

        inter = load_interactions("ml-100k")
        counts = np.bincount(inter.users)
        user = inter.user_ids[int(np.flatnonzero(counts >= history)[0])]
        init_device(state, user_id=user, dataset="ml-100k")
        return state
    cat = root / "catalogue.csv"
    cat.write_text("item,title\n" + "".join(f"i{n},Item {n}\n" for n in range(100_000)))
    init_device(state, user_id="bench", catalogue_csv=cat)
    rng = np.random.default_rng(seed)
    for n, item in enumerate(rng.choice(100_000, size=history, replace=False)):
        add_interaction(state, f"i{item}", float(n))
    return state


def run_one(scenario: str, *, n: int, history: int, seed: int) -> dict:
    """Measure one scenario in this process."""
    import torch

    from client.export import export_model, load_exported
    from client.recommend import Recommender
    from shared_models.train.sequences import left_pad

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        state = _make_state(scenario, Path(tmp), history, seed)
        t0 = time.perf_counter()
        rec = Recommender(state)
        rec.recommend(10)  # builds the frozen TorchScript fast path
        load_s = time.perf_counter() - t0
        tracemalloc.start()
        out = {"scenario": scenario, "num_items": rec.catalogue.num_items - 1, "history": len(rec.history()),
               "model_load_s": round(load_s, 3), "recommend": _percentiles(lambda: rec.recommend(10), n),
               "recommend_explain": _percentiles(lambda: rec.recommend(10, explain=True), max(20, n // 5))}
        out["python_heap_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 2)
        tracemalloc.stop()
        x = torch.from_numpy(left_pad(rec.history(), rec.cfg.model.max_len)).unsqueeze(0)
        for name, int8 in (("fp32", False), ("int8", True)):
            path = export_model(state, Path(tmp) / f"{name}.pt", int8=int8)
            module, _ = load_exported(path)
            with torch.inference_mode():
                out[f"exported_{name}"] = {"size_mb": round(path.stat().st_size / 1e6, 3),
                                           **_percentiles(lambda: module(x), n)}
        rec.close()
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    p50, p95 = TARGETS[scenario]
    out["meets_target"] = out["recommend"]["p50_ms"] <= p50 and (p95 is None or out["recommend"]["p95_ms"] <= p95)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    ap.add_argument("--n", type=int, default=300, help="timed calls per measurement")
    ap.add_argument("--history", type=int, default=50, help="interactions on the device")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    ap.add_argument("--one", choices=SCENARIOS, help=argparse.SUPPRESS)  # internal: run one scenario, print JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, n=args.n, history=args.history, seed=args.seed)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results = []
    for sc in args.scenarios:
        proc = subprocess.run([sys.executable, __file__, "--one", sc, "--n", str(args.n), "--history",
                               str(args.history), "--seed", str(args.seed)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"scenario {sc} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1], indent=2), flush=True)
    report = {"load_average": os.getloadavg(), "cpus": os.cpu_count(), "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
