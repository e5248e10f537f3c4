"""Accountant registry: pick an accountant by the config string (e.g. ``"rdp"``).

Mirrors Opacus' ``accountants/registry.py``: a name → class map plus a factory
that fails loudly, naming the bad key and the valid ones.
"""

from __future__ import annotations

from typing import Any, Mapping

from .accountant import RDPAccountant
from .base import Accountant

ACCOUNTANTS: Mapping[str, type[Accountant]] = {RDPAccountant.mechanism: RDPAccountant}
"""Registered accountants by mechanism name."""


def _lookup(name: object) -> type[Accountant]:
    if not isinstance(name, str) or name not in ACCOUNTANTS:
        valid = ", ".join(repr(key) for key in sorted(ACCOUNTANTS))
        raise ValueError(f"unknown privacy accountant {name!r}; valid accountants: {valid}")
    return ACCOUNTANTS[name]


def make_accountant(name: str, **kwargs: Any) -> Accountant:
    """A fresh accountant registered under ``name``; ``kwargs`` go to its constructor."""
    return _lookup(name)(**kwargs)


def accountant_from_dict(state: Mapping[str, Any]) -> Accountant:
    """Rebuild an accountant from ``to_dict()`` output, dispatching on ``state["mechanism"]``."""
    if not isinstance(state, Mapping):
        raise ValueError(f"accountant state must be a mapping, got {type(state).__name__}")
    return _lookup(state.get("mechanism")).from_dict(state)
