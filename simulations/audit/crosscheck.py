"""Independent re-computation of a device's ε with Google's ``dp_accounting`` (RDP and PLD).

A ledger records, per round, the DP-SGD mechanism it ran: ``steps`` Poisson-subsampled Gaussian steps at
sample rate ``q`` and noise multiplier ``σ``. Here that history becomes the ``dp_accounting`` event
``Composed[SelfComposed(PoissonSampled(q, Gaussian(σ)), steps) for each round]`` and is accounted by:

* ``RdpAccountant`` on the SAME Rényi orders as the ledger: an independent implementation of the same
  math (Mironov, Talwar & Zhang 2019 + Balle et al. 2020), so it must agree within :data:`REL_TOLERANCE`;
* ``RdpAccountant`` on the library's own (finer) order grid: information, can only be lower or equal
  up to numerics;
* ``PLDAccountant`` (privacy loss distributions, pessimistic discretisation, so still an upper bound):
  the tightest of the three; a claim BELOW it is understated;
* PLD under the replace-one relation (swap one window for another): information on the stronger notion.

Every accountant here is for the add/remove-one-window relation unless said otherwise, as is the ledger.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any, Sequence

import dp_accounting
from dp_accounting import pld, rdp

REL_TOLERANCE = 0.05
"""Largest relative difference between our ε and the library's (same orders) that still passes."""

PLD_DISCRETIZATION = 1e-3
"""PLD value discretisation interval (pessimistic: coarser only raises ε slightly)."""

History = tuple[tuple[float, float, int], ...]


def library_name() -> str:
    """``dp_accounting <version>`` of the installed library."""
    try:
        return f"dp_accounting {metadata.version('dp-accounting')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - installed from source
        return "dp_accounting"


def dp_event(history: Sequence[Sequence[float]]) -> dp_accounting.DpEvent:
    """The ``dp_accounting`` event of a ledger history of ``(σ, q, steps)`` rounds."""
    rounds = [
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(float(q), dp_accounting.GaussianDpEvent(float(sigma))),
            int(steps))
        for sigma, q, steps in history
    ]
    return dp_accounting.ComposedDpEvent(rounds)


def _quiet_absl() -> None:
    """The library logs a warning per fractional order whose series it drops; the result stays valid."""
    logging.getLogger("absl").setLevel(logging.ERROR)


@functools.lru_cache(maxsize=1024)
def rdp_epsilon(history: History, *, delta: float, orders: tuple[float, ...] | None = None) -> float:
    """ε at ``delta`` by ``dp_accounting.rdp.RdpAccountant`` (``orders=None``: the library's grid)."""
    _quiet_absl()
    accountant = rdp.RdpAccountant(orders=list(orders) if orders is not None else None)
    accountant.compose(dp_event(history))
    return float(accountant.get_epsilon(delta))


@functools.lru_cache(maxsize=1024)
def pld_epsilon(history: History, *, delta: float, replace_one: bool = False) -> float:
    """ε at ``delta`` by ``dp_accounting.pld.PLDAccountant`` (add/remove, or replace-one)."""
    relation = (dp_accounting.NeighboringRelation.REPLACE_ONE if replace_one
                else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    accountant = pld.PLDAccountant(neighboring_relation=relation, value_discretization_interval=PLD_DISCRETIZATION)
    accountant.compose(dp_event(history))
    return float(accountant.get_epsilon(delta))


def relative_difference(ours: float, theirs: float) -> float:
    """``|ours - theirs| / max(|theirs|, tiny)``; 0 when both are 0, inf when exactly one is infinite."""
    if ours == theirs:
        return 0.0
    if math.isinf(ours) or math.isinf(theirs):
        return math.inf
    return abs(ours - theirs) / max(abs(theirs), 1e-12)


@dataclass(frozen=True)
class CrossCheck:
    """One device's ε by our accountant and by ``dp_accounting``; ``agrees`` compares the same-order RDP."""

    ours: float
    rdp_same_orders: float
    rdp_library_orders: float
    pld: float
    pld_replace_one: float
    relative_difference: float
    agrees: bool
    understated: bool  # our ε is more than the tolerance below the library's PLD upper bound

    def to_json(self) -> dict[str, Any]:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in asdict(self).items()}


def cross_check(history: Sequence[Sequence[float]], *, ours: float, delta: float,
                orders: Sequence[float]) -> CrossCheck:
    """Account ``history`` with ``dp_accounting`` and compare with our ε (:data:`REL_TOLERANCE`)."""
    key: History = tuple((float(s), float(q), int(n)) for s, q, n in history)
    if not key:
        return CrossCheck(ours, 0.0, 0.0, 0.0, 0.0, relative_difference(ours, 0.0), ours == 0.0, False)
    if any(s == 0.0 and q > 0.0 and n > 0 for s, q, n in key):  # a noiseless step: no library call needed
        inf = math.inf
        return CrossCheck(ours, inf, inf, inf, inf, relative_difference(ours, inf), math.isinf(ours), False)
    same = rdp_epsilon(key, delta=delta, orders=tuple(float(a) for a in orders))
    pld_eps = pld_epsilon(key, delta=delta)
    diff = relative_difference(ours, same)
    return CrossCheck(
        ours=ours, rdp_same_orders=same, rdp_library_orders=rdp_epsilon(key, delta=delta), pld=pld_eps,
        pld_replace_one=pld_epsilon(key, delta=delta, replace_one=True), relative_difference=diff,
        agrees=diff <= REL_TOLERANCE, understated=ours < pld_eps * (1.0 - REL_TOLERANCE))
