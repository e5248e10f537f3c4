#!/usr/bin/env python
"""Device-rounds per second: one-device-at-a-time DP-SGD (``train_local_dp``) vs the vectorized cohort
(``train_cohort_dp``) on the same synthetic devices (a script, not a test).

    python benchmarks/bench_cohort.py                               # CPU, scaled down (~1-2 min on 2 cores)
    python benchmarks/bench_cohort.py --devices 10000 --device cuda # the GPU configuration (one round)

Every device holds one synthetic history (length uniform in [--min-len, --max-hist]) over --items items,
cut into disjoint windows of --max-len, and trains the whole long-short model (dropout 0) from the same
global weights for --epochs local epochs of DP-SGD (Poisson rate from --batch-size, clip --clip, noise
--sigma, --optimizer). A device-round = one device's local training in one round.

per-device  ``train_local_dp`` in a loop (model copy + load weights + Opacus), timed on the first
            --baseline-devices devices (all devices on CPU by default) and reported per device-round.
cohort      ``train_cohort_dp`` over ALL devices in chunks of --cohort-size devices (0 = as many as fit
            --mem-gb by a per-sample-gradient estimate). --rng exact replays each device's Opacus RNG
            stream (CPU default); --rng fast draws masks and noise on the compute device (GPU default).
With --rng exact, ``max |diff|`` is the largest parameter difference between the two paths on the
baseline devices (same seeds, so it should be ~1e-7).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared_models.train.cohort import CohortDeviceResult, device_plan, train_cohort_dp  # noqa: E402
from shared_models.config import ModelConfig  # noqa: E402
from shared_models.train.dp_training import train_local_dp  # noqa: E402
from shared_models.model.interest import InterestModel  # noqa: E402
from shared_models.train.sequences import Windows, build_windows  # noqa: E402

GPU_DEFAULTS = dict(items=2000, hidden=64, max_len=50, min_len=20, max_hist=120, cohort_size=0, mem_gb=40.0,
                    baseline_devices=20, rng="fast")
CPU_DEFAULTS = dict(items=40, hidden=16, max_len=8, min_len=6, max_hist=30, cohort_size=0, mem_gb=2.0,
                    baseline_devices=0, rng="exact")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--devices", type=int, default=1024)
    for name in ("items", "hidden", "max-len", "min-len", "max-hist", "cohort-size", "baseline-devices"):
        p.add_argument(f"--{name}", type=int, default=None, help="default depends on --device")
    p.add_argument("--mem-gb", type=float, default=None, help="memory budget for one cohort (auto size)")
    p.add_argument("--rng", choices=["exact", "fast"], default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for k, v in (GPU_DEFAULTS if args.device == "cuda" else CPU_DEFAULTS).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.baseline_devices <= 0:
        args.baseline_devices = args.devices
    return args


def make_devices(args: argparse.Namespace) -> tuple[InterestModel, dict[str, torch.Tensor], list[Windows]]:
    """The model template, the global weights, and every device's windows."""
    cfg = ModelConfig(kind="long-short", hidden=args.hidden, max_len=args.max_len,
                      short_len=min(4, args.max_len), num_layers=1, num_heads=2, inner=2 * args.hidden,
                      dropout=0.0)
    torch.manual_seed(args.seed)
    model = InterestModel(cfg, args.items)
    rng = np.random.default_rng(args.seed)
    windows = [build_windows([rng.integers(1, args.items, size=int(rng.integers(args.min_len, args.max_hist + 1)))],
                             max_len=args.max_len) for _ in range(args.devices)]
    return model, {n: p.detach().clone() for n, p in model.named_parameters()}, windows


def auto_cohort_size(args: argparse.Namespace, model: InterestModel, windows: list[Windows]) -> int:
    """Devices per cohort so that ~8 (K, B, P) float32 tensors (per-sample grads, their clipped copies,
    activations) fit --mem-gb; B = the largest expected Poisson batch plus 4 standard deviations."""
    if args.cohort_size > 0:
        return args.cohort_size
    P = sum(p.numel() for p in model.parameters())
    eb = max(device_plan(len(w), args.batch_size).expected_batch for w in windows)
    B = eb + 4 * math.sqrt(eb) + 1
    return max(1, min(args.devices, int(args.mem_gb * 2**30 / (8 * 4 * P * B))))


def run_per_device(args, model, global_w, windows) -> tuple[float, list[dict[str, torch.Tensor]]]:
    out = []
    t0 = time.perf_counter()
    for k in range(args.baseline_devices):
        m = copy.deepcopy(model).to(args.device)
        with torch.no_grad():
            for n, p in m.named_parameters():
                p.copy_(global_w[n])
        train_local_dp(m, windows[k], epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                       noise_multiplier=args.sigma, max_grad_norm=args.clip, seed=args.seed + k,
                       optimizer=args.optimizer, device=args.device)
        out.append({n: p.detach().cpu() for n, p in m.named_parameters()})
    _sync(args.device)
    return time.perf_counter() - t0, out


def run_cohort(args, model, global_w, windows, size: int) -> tuple[float, list[CohortDeviceResult]]:
    """Cohorts of devices with similar window counts (as the cohort transport forms them); results in device order."""
    out: dict[int, CohortDeviceResult] = {}
    order = sorted(range(args.devices), key=lambda k: len(windows[k]))
    t0 = time.perf_counter()
    for start in range(0, args.devices, size):
        ids = order[start:start + size]
        chunk = [windows[k] for k in ids]
        stacked = {n: p.to(args.device).expand(len(chunk), *p.shape) for n, p in global_w.items()}  # (K, ...)
        res = train_cohort_dp(model, stacked, chunk, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                              noise_multiplier=args.sigma, max_grad_norm=args.clip,
                              seeds=[args.seed + k for k in ids], optimizer=args.optimizer,
                              exact_rng=args.rng == "exact", device=args.device)
        out.update(zip(ids, res))
    _sync(args.device)
    return time.perf_counter() - t0, [out[k] for k in range(args.devices)]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model, global_w, windows = make_devices(args)
    size = auto_cohort_size(args, model, windows)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"devices {args.devices}, items {args.items}, hidden {args.hidden}, max-len {args.max_len}, "
          f"windows/device {np.mean([len(w) for w in windows]):.2f}, params {n_params}, "
          f"cohort size {size}, rng {args.rng}, device {args.device}, threads {args.threads}", flush=True)
    t_dev, ref = run_per_device(args, model, global_w, windows)
    t_coh, res = run_cohort(args, model, global_w, windows, size)
    per_dev_rate, coh_rate = args.baseline_devices / t_dev, args.devices / t_coh
    diff = max(float((r[n] - res[k].params[n]).abs().max()) for k, r in enumerate(ref) for n in r)
    print(f"\n{'path':<11} {'device-rounds':>13} {'seconds':>9} {'rounds/s':>9} {'speedup':>8}")
    print(f"{'per-device':<11} {args.baseline_devices:>13} {t_dev:>9.2f} {per_dev_rate:>9.2f} {1.0:>8.2f}")
    print(f"{'cohort':<11} {args.devices:>13} {t_coh:>9.2f} {coh_rate:>9.2f} {coh_rate / per_dev_rate:>8.2f}")
    print(f"\nmax |diff| per-device vs cohort on {len(ref)} devices: {diff:.2e}"
          + ("" if args.rng == "exact" else " (rng fast: different noise streams, not comparable)"))


if __name__ == "__main__":
    main()
