#!/usr/bin/env python
"""What DP costs a device: one local round under each privacy mode, against the non-private round.

    python benchmarks/bench_device_cost.py                        # demo config, 60 ML-100K devices, 1 thread
    python benchmarks/bench_device_cost.py --devices 200 --set model.content=false

Times ``client.device.device_train`` (load the global shared weights and the personal ones, train on the
device's windows, privatize, keep the ledger and personal weights): the part of a round a privacy mode
changes. Decryption, encryption and signing are the same in every mode and are left out (bench_he.py).
Every mode trains the same devices from the same global model; each device's state starts fresh. Prints
the median and total per mode and the ratio to mode ``none`` (target: a DP round <= 1.5x the non-private one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.device import device_train  # noqa: E402
from client.store import DeviceStore  # noqa: E402
from shared_models.config import load_config  # noqa: E402
from shared_models.config_checks import PRIVACY_MODES  # noqa: E402
from shared_models.datasets.population import population  # noqa: E402
from shared_models.model.state import initial_shared  # noqa: E402

MODE_OVERRIDES = {  # what each mode needs beyond the config (example-level DP has no prior)
    "none": ["privacy.mode=none"],
    "user": ["privacy.mode=user"],
    "example": ["privacy.mode=example", "privacy.prior=false", "privacy.target-epsilon=1000"],
    "window": ["privacy.mode=window", "privacy.prior=false", "federated.personal-short-term=false"],
}


def time_modes(modes: list[str], args, devices: list[int]) -> dict[str, list[float]]:
    """Seconds of ``device_train`` per device and mode; modes interleaved device by device, so load on the
    machine affects them alike."""
    setups = {}
    for mode in modes:
        cfg = load_config(args.config, [*args.set, *MODE_OVERRIDES[mode]])
        pop = population(cfg)
        setups[mode] = (cfg, pop, initial_shared(cfg, pop.num_items, pop.text))
    times: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for i in devices:
            for mode, (cfg, pop, shared) in setups.items():
                d = pop.devices[i]
                t0 = time.perf_counter()
                device_train(data=d, store=DeviceStore(Path(tmp) / mode / d.device_id), global_shared=shared,
                             cfg=cfg, round_id=1, text=pop.text, max_interactions=pop.max_interactions)
                times[mode].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="simulations/configs/smoke.toml")
    ap.add_argument("--devices", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="dotted override, repeatable")
    args = ap.parse_args()
    torch.set_num_threads(1)
    modes = [m for m in MODE_OVERRIDES if m in PRIVACY_MODES]
    n = len(population(load_config(args.config, args.set)).devices)
    devices = sorted(np.random.default_rng(args.seed).choice(n, size=min(args.devices, n), replace=False).tolist())
    print(f"{len(devices)} devices, 1 thread, config {args.config} {' '.join(args.set)}")
    print(f"{'mode':<9}{'median s':>10}{'total s':>10}{'x none (total)':>16}")
    times = time_modes(modes, args, devices)
    base = sum(times["none"])
    for mode, t in times.items():
        print(f"{mode:<9}{statistics.median(t):>10.3f}{sum(t):>10.2f}{sum(t) / base:>16.2f}")

if __name__ == "__main__":
    main()
