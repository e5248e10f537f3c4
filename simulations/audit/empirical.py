"""One-run empirical ε lower bound for ONE device's local DP-SGD (Steinke, Nasr & Jagielski 2023).

What is audited: the local training mechanism every device runs (``train_local_dp``, or ``train_local``
when the run has no DP) with the run's model config, optimiser, learning rate, epochs, batch size, noise
multiplier and clipping norm, on the training windows of the run's device with the most interactions.

Canaries: ``m`` extra windows of random catalogue items whose every target is a canary-only item (the
catalogue is extended by ``m`` ids, item ``num_items + i`` for canary ``i``, so that a canary's effect
on the model is its own). Each canary joins the training set independently with probability 1/2, which
is add/remove adjacency on windows, the relation the ledger accounts. One training run; the score of a
canary is its loss decrease (before minus after training). The auditor guesses "in" for the
:data:`GUESS_FRACTION` highest scores and "out" for as many lowest (a number fixed in advance), counts
the correct guesses, and :func:`simulations.audit.bound.epsilon_lower_bound` turns the count into ε.

The bound is compared with the accountant's ε of THIS training (its σ, sample rate and steps at the
run's δ), not with the run's claim, which composes other rounds with other sample rates. The model is
built without text embeddings (a DP-SGD guarantee does not depend on the architecture).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from shared_models.config import build_config
from shared_models.train.dp_training import train_local, train_local_dp
from shared_models.model.interest import InterestModel
from shared_models.privacy import epsilon_from_history
from shared_models.train.sequences import PAD, Windows, build_windows
from simulations.audit.bound import GUESS_FRACTION, count_correct, epsilon_lower_bound, gaussian_epsilon_estimate
from shared_models.datasets.population import population

DEFAULT_CANARIES = 200
NO_DP_DELTA = 1e-5
"""δ used for the bound when the run has none (no DP)."""
SEED_OFFSET = 4_242
AUDIT_THREADS = 1
"""torch threads while auditing (one simulated device is one CPU's work, as in ``simulate``)."""


@dataclass(frozen=True)
class EmpiricalResult:
    """The audit.json ``empirical`` block (``epsilon_lower`` and ``confidence`` first)."""

    epsilon_lower: float
    confidence: float
    delta: float
    device: str
    canaries: int
    included: int
    guesses: int
    correct: int
    mechanism_epsilon: float  # accountant's ε of the audited training (inf without DP)
    noise_multiplier: float
    sample_rate: float
    steps: int
    score_gap: float  # mean score of included minus excluded canaries (information)
    wall_s: float
    # Gaussian-fit estimate (Andrew et al. 2024), not a bound: not capped by the canary count
    epsilon_estimate: float = math.nan

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def make_canaries(num_items: int, max_len: int, m: int, rng: np.random.Generator) -> Windows:
    """``m`` windows: random real items as input, canary-only item ``num_items + i`` as every target."""
    inputs = rng.integers(1, num_items, size=(m, max_len), dtype=np.int64)
    targets = np.repeat((num_items + np.arange(m, dtype=np.int64))[:, None], max_len, axis=1)
    return Windows(inputs=inputs, targets=targets)


@torch.no_grad()
def window_losses(model: InterestModel, windows: Windows) -> np.ndarray:
    """Per-window mean next-item cross-entropy of the fused user vector (dropout off)."""
    model.eval()
    inputs, targets = torch.from_numpy(windows.inputs), torch.from_numpy(windows.targets)
    logits = model.score(model.encode(inputs)["user"])
    tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=PAD,
                          reduction="none").view_as(targets)
    valid = (targets != PAD).sum(dim=1).clamp(min=1)
    return (tok.sum(dim=1) / valid).numpy()


def _train(model: InterestModel, windows: Windows, cfg, *, private: bool, seed: int):
    fed, priv = cfg.federated, cfg.privacy
    model.train()  # Opacus refuses a model in eval mode (window_losses switched it)
    common = dict(epochs=fed.local_epochs, lr=fed.lr, batch_size=fed.batch_size, seed=seed, optimizer=fed.optimizer)
    if private:
        return train_local_dp(model, windows, noise_multiplier=priv.noise_multiplier,
                              max_grad_norm=priv.max_grad_norm, **common)
    return train_local(model, windows, **common)


def empirical_audit(config: dict[str, Any], *, delta: float | None, private: bool, confidence: float,
                    canaries: int = DEFAULT_CANARIES, seed: int = 0) -> EmpiricalResult:
    """Run the canary audit on the device with the most training interactions; see the module docstring."""
    threads = torch.get_num_threads()
    torch.set_num_threads(AUDIT_THREADS)
    try:
        return _audit(config, delta=delta, private=private, confidence=confidence, canaries=canaries, seed=seed)
    finally:
        torch.set_num_threads(threads)


def _audit(config: dict[str, Any], *, delta: float | None, private: bool, confidence: float, canaries: int,
           seed: int) -> EmpiricalResult:
    t0 = time.perf_counter()
    cfg = build_config(config)
    pop = population(cfg)
    device = max(pop.devices, key=lambda d: len(d.train))
    rng = np.random.default_rng(cfg.federated.seed + SEED_OFFSET + seed)
    canary = make_canaries(pop.num_items, cfg.model.max_len, canaries, rng)
    included = rng.random(canaries) < 0.5
    real = build_windows([device.train], max_len=cfg.model.max_len, stride=0)
    train_set = Windows(inputs=np.concatenate([real.inputs, canary.inputs[included]]),
                        targets=np.concatenate([real.targets, canary.targets[included]]))
    torch.manual_seed(cfg.federated.seed + SEED_OFFSET + seed)
    model = InterestModel(cfg.model, pop.num_items + canaries)
    before = window_losses(model, canary)
    result = _train(model, train_set, cfg, private=private, seed=cfg.federated.seed + SEED_OFFSET + seed)
    scores = before - window_losses(model, canary)
    k = int(canaries * GUESS_FRACTION)
    correct = count_correct(scores, included, k)
    bound_delta = delta if private and delta is not None else NO_DP_DELTA
    mech = (epsilon_from_history([(result.noise_multiplier, result.sample_rate, result.steps)], delta=bound_delta)
            if private else math.inf)
    return EmpiricalResult(
        epsilon_lower=epsilon_lower_bound(m=canaries, r=2 * k, v=correct, delta=bound_delta, confidence=confidence),
        confidence=confidence, delta=bound_delta, device=device.device_id, canaries=canaries,
        included=int(included.sum()), guesses=2 * k, correct=correct, mechanism_epsilon=mech,
        noise_multiplier=result.noise_multiplier, sample_rate=result.sample_rate, steps=result.steps,
        score_gap=float(scores[included].mean() - scores[~included].mean()) if 0 < included.sum() < canaries else 0.0,
        wall_s=round(time.perf_counter() - t0, 2),
        epsilon_estimate=gaussian_epsilon_estimate(scores[included], scores[~included], delta=bound_delta))
