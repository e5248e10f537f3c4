"""Synthetic devices for bench_secagg.py: fixed random "updates", their weights and the plaintext reference.

Device "training" is a no-op: device d returns the fixed random vector N(0, std^2) seeded by (seed, d) with
weight (num_examples) U[min_weight, max_weight], so only the cost of the aggregation protocol is compared.
No Flower import here: the parent process (table, in-process CKKS) uses this module too.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np


def device_vector(seed: int, d: int, n: int, std: float) -> np.ndarray:
    """The fixed float32 "update" of device ``d``: N(0, std^2) of length ``n``, seeded by (seed, d)."""
    return np.random.default_rng([seed, d]).normal(0.0, std, n).astype(np.float32)


def device_weights(args: argparse.Namespace) -> np.ndarray:
    """The integer weight (num_examples) of every device, U[min_weight, max_weight]."""
    rng = np.random.default_rng([args.seed, 10**6])
    return rng.integers(args.min_weight, args.max_weight + 1, args.devices)


def plain_average(args: argparse.Namespace) -> np.ndarray:
    """Float64 weighted average of all device vectors: the reference for the relative error."""
    w = device_weights(args)
    acc = np.zeros(args.params, dtype=np.float64)
    for d in range(args.devices):
        acc += float(w[d]) * device_vector(args.seed, d, args.params, args.std)
    return acc / w.sum()


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """Relative L2 error of ``got`` against the float64 reference ``ref``."""
    return float(np.linalg.norm(np.asarray(got, dtype=np.float64) - ref) / np.linalg.norm(ref))


@dataclass(frozen=True)
class Workload:
    """What a simulated device needs to "train": model size, seed, spread and the weights of all devices.

    Picklable (the Ray actors receive it inside the ClientApp).
    """

    params: int
    seed: int
    std: float
    weights: tuple[int, ...]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Workload:
        """Build the workload from the command-line arguments."""
        return cls(params=args.params, seed=args.seed, std=args.std,
                   weights=tuple(int(w) for w in device_weights(args)))

    def vector(self, pid: int) -> np.ndarray:
        """Device ``pid``'s update ("training")."""
        return device_vector(self.seed, pid, self.params, self.std)
