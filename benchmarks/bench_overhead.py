#!/usr/bin/env python
"""Framework overhead of one full-participation federated round (a script, not a test).

    python benchmarks/bench_overhead.py                         # ML-100K, all 943 devices, DP + HE (~20 min)
    python benchmarks/bench_overhead.py --devices 200           # the first 200 users only
    python benchmarks/bench_overhead.py --set he.enabled=false  # any dotted config override

Measured in one run, with the config of --config (default ``simulations/configs/ml100k-dp.toml``) forced to
two rounds, every device sampled, no validation:

flower round   the wall time of round 2 (Ray actors already up and holding their data) in a real Flower
               simulation (Ray backend, ``federated.num-cpus`` per device): history.csv ``wall_s`` (sampling,
               messages, device decryption + training + encryption, verification and the encrypted sum),
               plus the whole ``simulate`` wall time (start-up, round 1, final test) for reference.
compute bound  every device's standalone round 2 (``client.round.train_round`` on the run's final global
               state: decrypt, DP-SGD, encrypt, sign; one thread, same keys and data, fresh device state)
               timed one after the other, summed and divided by the number of devices Ray runs at once
               (CPUs / ``federated.num-cpus``): what the round would take with zero framework overhead.

overhead = flower round / compute bound (target <= 1.33, i.e. framework overhead <= 25% of the round).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.round import DeviceContext, RoundInput, train_rounds  # noqa: E402
from client.store import DeviceStore  # noqa: E402
from shared_models.config import Config, load_config  # noqa: E402
from shared_models.datasets.population import population  # noqa: E402
from server.job import prepare_keys  # noqa: E402
from simulations.simulate import simulate  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="simulations/configs/ml100k-dp.toml")
    p.add_argument("--devices", type=int, default=0, help="first N users only (0 = all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="dotted override")
    p.add_argument("--out", default="runs/bench-overhead", help="run directory of the Flower round")
    return p.parse_args(argv)


def round_config(args: argparse.Namespace) -> Config:
    # server-average 0: the shipped global is then the latest sum, what round 3's devices would train from
    forced = ["federated.num-server-rounds=2", "federated.eval-every=0", "federated.backend=ray",
              "federated.server-average=0",
              f"data.max-users={args.devices}", "federated.clients-per-round=100000"]
    cfg = load_config(args.config, [*args.overrides, *forced])
    n = len(population(cfg).devices)  # clients_per_round above the population = everyone
    return load_config(args.config, [*args.overrides, *forced[:-1], f"federated.clients-per-round={n}"])


def flower_round(cfg: Config, out: Path) -> tuple[float, float]:
    """(round 2 wall s from history.csv, whole simulate wall s)."""
    t0 = time.perf_counter()
    simulate(cfg, out, progress=True, resume=False)
    total = time.perf_counter() - t0
    with (out / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return float(rows[1]["wall_s"]), total


def final_global(cfg: Config, out: Path):
    """What round 3's devices would receive: the encrypted sum (HE) or the plaintext weights."""
    if cfg.he.enabled:
        return (out / "global_sum.ckks").read_bytes()
    with np.load(out / "global_shared.npz") as z:
        return {k: z[k] for k in z.files}


def standalone_rounds(cfg: Config, keys_dir: str, received) -> list[float]:
    """Each device's round 2 alone, one thread, fresh state, decrypting the same global state."""
    torch.set_num_threads(1)
    pop = population(cfg)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for node, data in enumerate(pop.devices):
            t0 = time.perf_counter()
            device = DeviceContext(data, DeviceStore(Path(tmp) / data.device_id), pop.text, pop.max_interactions,
                                   keys_dir)
            rep = train_rounds([RoundInput(device, cfg, received, 2, node)])[0]
            times.append(time.perf_counter() - t0)
            if rep.error:
                raise RuntimeError(f"device {data.device_id}: {rep.error}")
            if node % 100 == 0:
                print(f"  standalone: {node + 1}/{len(pop.devices)} devices, {sum(times):.1f} s so far", flush=True)
    return times


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("FEDINTEREST_CACHE", str(Path.home() / ".cache" / "fedinterest"))
    cfg = round_config(args)
    out = Path(args.out)
    n = len(population(cfg).devices)
    print(f"{n} devices, full participation, DP {cfg.privacy.mode}, HE {cfg.he.enabled}; Flower round ...")
    round_s, simulate_s = flower_round(cfg, out)
    cpus = os.cpu_count() or 1
    workers = max(1.0, cpus / cfg.federated.num_cpus)
    print(f"Flower round {round_s:.1f} s (simulate incl. start-up and final test {simulate_s:.1f} s); "
          f"standalone device rounds ...")
    times = standalone_rounds(cfg, prepare_keys(cfg, population(cfg), out), final_global(cfg, out))
    bound = sum(times) / workers
    result = {"devices": n, "cpus": cpus, "parallel_devices": workers, "flower_round_s": round_s,
              "simulate_s": simulate_s, "device_round_s_sum": sum(times),
              "device_round_s_mean": sum(times) / n, "compute_bound_s": bound, "overhead_ratio": round_s / bound,
              "overhead_share": 1 - bound / round_s, "client_updates_per_s": n / round_s,
              "config": {"privacy": cfg.privacy.mode, "he": cfg.he.enabled, "local_epochs": cfg.federated.local_epochs}}
    print(json.dumps(result, indent=2))
    (out / "overhead.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
