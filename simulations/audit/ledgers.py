"""Reading a simulation run directory for the audit: the claim in ``metrics.json`` and every device ledger.

Nothing here writes to the run directory: each ledger is opened with the delta, unit, accountant and
target it already stores (so :meth:`PrivacyLedger.open` has nothing to rewrite), and those stored values
are then compared with what the run claims.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_models.config import USER_MODES
from shared_models.privacy import DEFAULT_ORDERS, LedgerError, PrivacyLedger, epsilon_from_history

EPS_MATCH_REL = 1e-6
"""Relative slack when comparing two ε values that must be computed identically (stored vs. recomputed)."""


class RunDirError(ValueError):
    """The run directory lacks a file the audit needs, or holds one it cannot parse (names the file)."""


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object from ``path``; :class:`RunDirError` names the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing (is this a `fedinterest simulate` run directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return data




@dataclass(frozen=True)
class Claim:
    """What ``metrics.json`` claims about the run's differential privacy.

    In user modes the claim is the server's user-level one (unit ``user``: ``noise_multiplier`` is the
    user-level z, ``max_grad_norm`` the per-device clip, ``sample_rate`` the Poisson client rate q and
    ``steps`` the rounds accounted); ``example`` is then the device ledgers' window-level claim
    (``example+user``) or None (``user``)."""

    mode: str
    unit: str | None
    epsilon: float | None
    delta: float | None
    target_epsilon: float | None
    noise_multiplier: float
    max_grad_norm: float | None
    accountant: str
    devices_trained: int
    sample_rate: float | None = None
    steps: int | None = None
    min_train_nodes: int | None = None
    example: "Claim | None" = None
    prior_noise_multiplier: float | None = None  # the released popularity prior (one step at rate 1), if any

    @property
    def private(self) -> bool:
        return self.mode != "none"

    @property
    def user_level(self) -> bool:
        return self.mode in USER_MODES and self.unit == "user"

    @property
    def window_level(self) -> bool:
        """Distributed DP-SGD (``privacy.mode = window``): the server accounts one window-level guarantee."""
        return self.mode == "window" and self.unit == "window"

    @property
    def server_accounted(self) -> bool:
        """One claim from the server's ledger (user modes and window mode), not from device ledgers."""
        return self.user_level or self.window_level

    @property
    def mechanism(self) -> str:
        if not self.private:
            return "none (no differential privacy)"
        if self.window_level:
            return (f"distributed DP-SGD on training windows: Poisson-subsampled Gaussian mechanism, population "
                    f"sample rate q={_g(self.sample_rate)} (devices x windows), noise multiplier "
                    f"{self.noise_multiplier:g}, per-window L2 clip {_g(self.max_grad_norm)}, {self.steps} rounds "
                    f"(noise split over >= {self.min_train_nodes} devices)")
        if self.user_level:
            return (f"DP-FedAvg on whole devices: Poisson-subsampled Gaussian mechanism, client sample rate "
                    f"q={_g(self.sample_rate)}, noise multiplier {self.noise_multiplier:g}, per-device L2 clip "
                    f"{_g(self.max_grad_norm)}, {self.steps} rounds (noise split over >= {self.min_train_nodes} "
                    f"devices)")
        return (f"DP-SGD on each device: Poisson-subsampled Gaussian mechanism, noise multiplier "
                f"{self.noise_multiplier:g}, per-window clipping norm {self.max_grad_norm:g}")


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.6g}"


def read_claim(metrics: dict[str, Any], path: Path) -> Claim:
    """The ``privacy`` block of ``metrics.json`` as a :class:`Claim` (with its ``example`` sub-claim)."""
    p = metrics.get("privacy")
    if not isinstance(p, dict) or "mode" not in p:
        raise RunDirError(f"{path}: no 'privacy' block with a 'mode'")
    return _claim(p, path)


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


def _prior_sigma(prior: Any, path: Path) -> float | None:
    if prior is None:
        return None
    if not isinstance(prior, dict):
        raise RunDirError(f"{path}: 'privacy.prior' must be an object or null")
    return float(prior["noise_multiplier"]) if prior.get("released") else None


def _claim(p: dict[str, Any], path: Path) -> Claim:
    example = p.get("example")
    if example is not None and not isinstance(example, dict):
        raise RunDirError(f"{path}: 'privacy.example' must be an object or null")
    try:
        return Claim(mode=str(p["mode"]), unit=p.get("unit"), epsilon=p.get("epsilon"), delta=p.get("delta"),
                     target_epsilon=p.get("target_epsilon"), noise_multiplier=float(p.get("noise_multiplier") or 0.0),
                     max_grad_norm=p.get("max_grad_norm"), accountant=str(p.get("accountant", "rdp")),
                     devices_trained=int(p.get("devices_trained") or 0), sample_rate=p.get("sample_rate"),
                     steps=_opt_int(p.get("steps")), min_train_nodes=_opt_int(p.get("min_train_nodes")),
                     example=_claim(example, path) if example else None,
                     prior_noise_multiplier=_prior_sigma(p.get("prior"), path))
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{path}: ill-typed 'privacy' block: {exc}") from None


@dataclass
class DeviceLedger:
    """One device's ledger: its ε recomputed from its rows, the rows' mechanism history and Rényi orders."""

    device_id: str
    path: Path
    epsilon: float
    recorded_epsilon: float | None  # the ε written in the last row (None: no rows)
    rounds: int
    steps: int
    history: list[tuple[float, float, int]]
    orders: list[float]
    delta: float
    unit: str
    target_epsilon: float | None
    recorded: list[float] = field(default_factory=list)  # the ε written in every row, in order
    round_ids: list[int] = field(default_factory=list)  # the federated round of every row


@dataclass
class LedgerScan:
    devices: list[DeviceLedger] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _open_ledger(path: Path) -> DeviceLedger:
    doc = read_json(path)
    try:
        ledger = PrivacyLedger.open(path, accountant=doc["accountant"], delta=doc["delta"], unit=doc["unit"],
                                    target_epsilon=doc.get("target_epsilon"))
    except (KeyError, TypeError) as exc:
        raise LedgerError(f"privacy ledger {path}: missing or ill-typed field {exc}") from None
    rows = ledger.rounds
    orders = doc.get("accountant_state", {}).get("orders") or []
    return DeviceLedger(
        device_id=path.parent.name, path=path, epsilon=ledger.epsilon(),
        recorded_epsilon=rows[-1].epsilon if rows else None, rounds=len(rows), steps=ledger.total_steps,
        history=[(r.noise_multiplier, r.sample_rate, r.num_steps) for r in rows], orders=list(orders),
        delta=ledger.delta, unit=ledger.unit, target_epsilon=ledger.target_epsilon,
        recorded=[r.epsilon for r in rows], round_ids=[r.round_id for r in rows])


def scan_ledgers(run_dir: Path, claim: Claim) -> LedgerScan:
    """Open every ``devices/*/ledger.json``; list what disagrees with itself or with the claim."""
    scan = LedgerScan()
    for path in sorted((run_dir / "devices").glob("*/ledger.json")):
        try:
            dev = _open_ledger(path)
        except (LedgerError, RunDirError) as exc:
            scan.problems.append(f"unreadable ledger: {exc}")
            continue
        scan.devices.append(dev)
        scan.problems.extend(_consistency(dev, claim))
    return scan


def _consistency(dev: DeviceLedger, claim: Claim) -> list[str]:
    """Stored ε vs. the rows' parameters; stored delta/unit/target vs. the claim."""
    out = []
    rec = dev.recorded_epsilon
    rec_value = math.inf if rec is None and dev.rounds else (rec or 0.0)
    if dev.rounds and not _close(rec_value, dev.epsilon):
        out.append(f"{dev.path}: last row records epsilon {rec_value:.6g} but its rows' parameters give "
                   f"{dev.epsilon:.6g} (edited?)")
    else:  # every earlier row too: its ε must be the accountant's ε of the rows up to it
        orders = dev.orders or DEFAULT_ORDERS
        for i, rec_i in enumerate(dev.recorded[:-1]):
            want = epsilon_from_history(dev.history[:i + 1], delta=dev.delta, orders=orders)
            if rec_i is None or not _close(rec_i, want):
                out.append(f"{dev.path}: row {i + 1} records epsilon {rec_i!r} but the rows up to it give "
                           f"{want:.6g} (edited?)")
                break
    if claim.delta is not None and not _close(dev.delta, claim.delta):
        out.append(f"{dev.path}: delta {dev.delta:g} differs from the claimed delta {claim.delta:g}")
    if claim.unit is not None and dev.unit != claim.unit:
        out.append(f"{dev.path}: unit {dev.unit!r} differs from the claimed unit {claim.unit!r}")
    if claim.target_epsilon is not None and dev.target_epsilon != claim.target_epsilon:
        out.append(f"{dev.path}: target_epsilon {dev.target_epsilon!r} differs from the run's "
                   f"{claim.target_epsilon!r}")
    return out


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= EPS_MATCH_REL * max(abs(a), abs(b))
