"""One-run empirical ε lower bound for ONE round of user-level DP (Steinke, Nasr & Jagielski 2023).

What is audited: one round of the device-side mechanism of ``privacy.mode = user | example+user`` at
sample rate 1, i.e. the Gaussian mechanism whose Poisson-subsampled composition the server's accountant
claims. The code path is the devices' own: :func:`shared_models.privacy.user_level.privatize_delta` with the
run's ``user_clip``, ``user_noise_multiplier`` and ``min_train_nodes``, then the plain sum the server
releases (``server_lr * sum / clients_per_round`` is post-processing and does not change the guesses).

Canary clients: ``m`` canary devices, each included independently with probability 1/2 (add/remove of one
device, the relation the ledger accounts). Canary ``i``'s shared-model delta is a fixed random direction
``u_i`` in dimension ``d = DIM_PER_CANARY * m`` (so the directions are nearly orthogonal) scaled to
``CANARY_NORM_FACTOR * user_clip``, so every canary is clipped. Two designs:

* ``"worst-case"`` (default): the canaries collude with the server and add no noise share (they only run
  the devices' clipping, ``user_level.clip_l2``), and exactly ``min_train_nodes`` honest devices run
  ``privatize_delta`` on a zero delta, i.e. add only their noise share. The sum then carries noise of std
  ``z * user_clip``, the least the guarantee allows, so this audits the claimed per-round mechanism exactly;
* ``"distributed"``: every included canary adds its own share (the honest path; the sum's noise multiplier
  is ``z * sqrt(included / min_train_nodes)``, larger than the claim: a weaker audit).

Score of canary ``i``: ``<released sum, u_i>``; the guess rule and the bound are those of
:mod:`simulations.audit.empirical` (top/bottom :data:`GUESS_FRACTION` of the scores). The bound is compared
with the accountant's ε of the audited mechanism: one Gaussian step of noise multiplier z at q = 1.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, ContextManager

import numpy as np

from shared_models.privacy import epsilon_from_history
from shared_models.privacy import user_level, window_level
from shared_models.privacy.user_level import privatize_delta
from simulations.audit.bound import GUESS_FRACTION, count_correct, epsilon_lower_bound, gaussian_epsilon_estimate

DEFAULT_USER_CANARIES = 1000
DIM_PER_CANARY = 50
"""d = 50 m: the cross-talk between canary directions has std sqrt(m / 2 / d) = 0.1 clip."""
CANARY_NORM_FACTOR = 2.0
"""Canary deltas have L2 norm 2 * user_clip: clipping must bring each back to user_clip."""
BLOCK = 100
"""Canary directions are generated (twice: sum, then scores) in blocks of this many rows."""
SEED_OFFSET = 7_331
DESIGNS = ("worst-case", "distributed")


@dataclass(frozen=True)
class UserEmpiricalResult:
    """The audit.json ``empirical`` block of a user-level run (``epsilon_lower`` and ``confidence`` first)."""

    epsilon_lower: float
    confidence: float
    delta: float
    unit: str
    design: str
    canaries: int
    included: int
    guesses: int
    correct: int
    dimension: int
    mechanism_epsilon: float  # accountant's ε of one Gaussian step at q = 1 and the run's z (inf if z = 0)
    noise_multiplier: float
    clip: float
    min_train_nodes: int
    effective_noise_multiplier: float  # of the audited sum: z (worst-case) or z * sqrt(included / min_train_nodes)
    max_clipped_norm: float  # largest canary norm after clipping (worst-case design; else nan)
    score_gap: float  # mean score of included minus excluded canaries, in units of clip (information)
    wall_s: float
    # Gaussian-fit estimate (Andrew et al. 2024), not a bound: not capped by the canary count
    epsilon_estimate: float = math.nan

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _one_blas_thread() -> ContextManager[Any]:
    """One BLAS thread: thousands of small norms and products are far slower with threads on a busy CPU."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional: only slower without it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _directions(seed: int, block: int, rows: int, d: int) -> np.ndarray:
    """Unit rows ``block * BLOCK .. + rows`` of the canary directions (regenerated identically on demand)."""
    u = np.random.default_rng([seed, block]).standard_normal((rows, d), dtype=np.float32).astype(np.float64)
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def _blocks(m: int):
    for b, start in enumerate(range(0, m, BLOCK)):
        yield b, start, min(BLOCK, m - start)


def _released_sum(included: np.ndarray, *, seed: int, d: int, clip: float, z: float, mtn: int, design: str,
                  rng: np.random.Generator, privatize: Callable) -> tuple[np.ndarray, float]:
    """(sum of the privatized deltas of the included canaries and, worst-case, of the honest devices,
    the largest clipped canary norm (worst-case) or nan)."""
    total, largest = np.zeros(d), 0.0
    for b, start, rows in _blocks(len(included)):
        u = _directions(seed, b, rows, d)
        for j in np.flatnonzero(included[start:start + rows]):
            delta = CANARY_NORM_FACTOR * clip * u[j]
            if design == "worst-case":  # a colluding canary: the devices' clipping, no noise share
                out, _ = user_level.clip_l2(delta, clip=clip)
            else:
                out, _ = privatize(delta, clip=clip, noise_multiplier=z, min_contributors=mtn, rng=rng)
            largest = max(largest, float(np.linalg.norm(out)))
            total += out
    if design == "worst-case":
        for _ in range(mtn):  # the honest devices: nothing to hide, only their noise share
            total += privatize(np.zeros(d), clip=clip, noise_multiplier=z, min_contributors=mtn, rng=rng)[0]
        return total, largest
    return total, math.nan  # the canaries' own noise hides their clipped norm


def _scores(total: np.ndarray, *, seed: int, m: int, d: int) -> np.ndarray:
    return np.concatenate([_directions(seed, b, rows, d) @ total for b, _, rows in _blocks(m)])


def empirical_user_audit(*, noise_multiplier: float, clip: float, min_train_nodes: int, delta: float,
                         confidence: float, canaries: int = DEFAULT_USER_CANARIES, design: str = "worst-case",
                         seed: int = 0, privatize: Callable | None = None, unit: str = "user") -> UserEmpiricalResult:
    """Run the canary-client audit of one user-level round; see the module docstring.

    ``privatize``: the device function audited (default :func:`privatize_delta`, looked up at call time)."""
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    t0 = time.perf_counter()
    d, z, mtn = DIM_PER_CANARY * canaries, float(noise_multiplier), int(min_train_nodes)
    rng = np.random.default_rng([SEED_OFFSET, seed])
    dir_seed = int(rng.integers(2**62))
    included = rng.random(canaries) < 0.5
    with _one_blas_thread():
        total, largest = _released_sum(included, seed=dir_seed, d=d, clip=clip, z=z, mtn=mtn, design=design,
                                       rng=rng, privatize=privatize or privatize_delta)
        scores = _scores(total, seed=dir_seed, m=canaries, d=d) / clip
    k = int(canaries * GUESS_FRACTION)
    correct = count_correct(scores, included, k)
    n_in = int(included.sum())
    eff = z if design == "worst-case" else z * math.sqrt(max(n_in, 1) / mtn)
    mech = epsilon_from_history([(z, 1.0, 1)], delta=delta) if z > 0 else math.inf
    gap = float(scores[included].mean() - scores[~included].mean()) if 0 < n_in < canaries else 0.0
    return UserEmpiricalResult(
        epsilon_lower=epsilon_lower_bound(m=canaries, r=2 * k, v=correct, delta=delta, confidence=confidence),
        confidence=confidence, delta=delta, unit=unit, design=design, canaries=canaries, included=n_in,
        guesses=2 * k, correct=correct, dimension=d, mechanism_epsilon=mech, noise_multiplier=z, clip=float(clip),
        min_train_nodes=mtn, effective_noise_multiplier=eff, max_clipped_norm=largest, score_gap=gap,
        wall_s=round(time.perf_counter() - t0, 2),
        epsilon_estimate=gaussian_epsilon_estimate(scores[included], scores[~included], delta=delta))


def privatize_window(gradient: np.ndarray, *, clip: float, noise_multiplier: float, min_contributors: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A device holding one window of gradient ``gradient`` under window-level DP: the devices' own per-window
    clip and noise share (``shared_models.privacy.window_level``), sign restored (the device sends minus the
    noisy sum; the server's decoding is post-processing). Returns (what is summed, the norm before clipping)."""
    clipped, norms = window_level.clip_rows(np.asarray(gradient)[None, :], clip=clip)
    std = user_level.device_noise_std(clip=clip, noise_multiplier=noise_multiplier, min_contributors=min_contributors)
    return -window_level.noisy_negative_sum(clipped.sum(axis=0), noise_std=std, rng=rng), float(norms[0])


def empirical_user_from_config(config: dict[str, Any], *, delta: float, confidence: float,
                               canaries: int = DEFAULT_USER_CANARIES, design: str = "worst-case"
                               ) -> UserEmpiricalResult:
    """The audit with the parameters the devices were told (the run's config.json)."""
    p, f = config.get("privacy", {}), config.get("federated", {})
    if p.get("mode") == "window":  # canary windows through the devices' per-window clip and noise share
        return empirical_user_audit(noise_multiplier=float(p["noise_multiplier"]), clip=float(p["max_grad_norm"]),
                                    min_train_nodes=int(f["min_train_nodes"]), delta=delta, confidence=confidence,
                                    canaries=canaries, design=design, seed=int(f.get("seed", 0)),
                                    privatize=privatize_window, unit="window")
    return empirical_user_audit(noise_multiplier=float(p["user_noise_multiplier"]), clip=float(p["user_clip"]),
                                min_train_nodes=int(f["min_train_nodes"]), delta=delta, confidence=confidence,
                                canaries=canaries, design=design, seed=int(f.get("seed", 0)))
