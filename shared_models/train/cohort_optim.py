"""Optimizer updates for K stacked devices at once: plain SGD and Adam with torch's default hyper-parameters.

Same maths as ``torch.optim.SGD(lr)`` / ``torch.optim.Adam(lr)`` (betas 0.9/0.999, eps 1e-8, no weight
decay, fresh state each round, as ``train_local_dp`` builds them). Every tensor has a leading device axis K;
``active`` (K,) bool freezes devices that have already finished their steps (no update, no state change).
"""

from __future__ import annotations

import math

import torch

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


class CohortOptimizer:
    """Functional SGD / Adam over a dict of (K, ...) parameters."""

    def __init__(self, name: str, params: dict[str, torch.Tensor], *, lr: float) -> None:
        if name not in ("sgd", "adam"):
            raise ValueError(f"optimizer {name!r}: expected 'sgd' or 'adam'")
        self.name, self.lr, self.t = name, lr, 0
        if name == "adam":
            self.m = {n: torch.zeros_like(p) for n, p in params.items()}
            self.v = {n: torch.zeros_like(p) for n, p in params.items()}

    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
             active: torch.Tensor) -> dict[str, torch.Tensor]:
        """New parameters after one step; devices with ``active[k] = False`` keep theirs."""
        self.t += 1  # every still-active device has taken exactly self.t steps (devices start together)
        out = {}
        for n, p in params.items():
            keep = active.view(-1, *([1] * (p.dim() - 1)))  # (K, 1, ...)
            new = self._sgd(p, grads[n]) if self.name == "sgd" else self._adam(n, p, grads[n], keep)
            out[n] = torch.where(keep, new, p)
        return out

    def _sgd(self, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return p.add(g, alpha=-self.lr)

    def _adam(self, n: str, p: torch.Tensor, g: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        m = torch.where(keep, self.m[n].lerp(g, 1 - BETA1), self.m[n])
        v = torch.where(keep, self.v[n].mul(BETA2).addcmul(g, g, value=1 - BETA2), self.v[n])
        self.m[n], self.v[n] = m, v
        bc1, bc2 = 1 - BETA1 ** self.t, 1 - BETA2 ** self.t
        denom = (v.sqrt() / math.sqrt(bc2)).add(EPS)
        return p.addcdiv(m, denom, value=-self.lr / bc1)
