"""Server side of distributed DP (user-level, and window-level DP-SGD): Poisson client sampling, the
fixed-denominator plaintext update, and the server's accountant (RDP over rounds of the Poisson-subsampled
Gaussian mechanism, persisted as a ledger).

The server never adds noise or clips: devices did both before encryption (``client/user_dp.py``,
``client/window_dp.py``). The server only decides who is asked, keeps the sum, and accounts one step per
round at q = clients_per_round / N (user modes) or (clients_per_round / N) * window_sample_rate (window mode),
``shared_models/privacy/distributed.py``.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from server.aggregation import sum_updates
from server.loop import PlainFedAvg
from shared_models.atomic_io import atomic_write_bytes
from shared_models.config import Config, ConfigError
from shared_models.privacy import PrivacyLedger
from shared_models.privacy.distributed import distributed_dp
from shared_models.privacy.user_level import apply_noisy_sum, max_participants

USER_LEDGER = Path("server") / "user_ledger.json"  # under RUN_DIR (the server's own state; every distributed mode)
SAMPLER_SECRET = Path("server") / "sampler_secret.bin"
SECRET_BYTES = 32


def sample_rate(cfg: Config, num_devices: int) -> float:
    """The accountant's q of the config's distributed mode; ConfigError naming the key when it has none."""
    try:
        return distributed_dp(cfg).sample_rate(clients_per_round=cfg.federated.clients_per_round,
                                               num_devices=num_devices)
    except ValueError as exc:
        raise ConfigError(f"config key 'federated.clients_per_round': {exc}") from None


def check_running_sum_capacity(cfg: Config, num_devices: int) -> None:
    """Under HE the running sum of every round's noisy deltas must fit ``he.max_summands``, and with
    ``federated.server_average = K`` so must K of those running sums added up."""
    f = cfg.federated
    if not cfg.he.enabled or not cfg.privacy.distributed:
        return
    need = f.num_server_rounds * min(num_devices, max_participants(f.clients_per_round))
    why = (f"num_server_rounds x a 6-sigma bound on Poisson participants of {num_devices} devices at "
           f"clients_per_round={f.clients_per_round}: the running sum over rounds must not overflow")
    if f.server_average > 1:
        need, why = need * f.server_average, f"federated.server_average={f.server_average} x ({why})"
    if cfg.he.max_summands < need:
        raise ConfigError(f"config key 'he.max_summands': expected >= {need} ({why}), got {cfg.he.max_summands}")


class PlainDPFedAvg(PlainFedAvg):
    """Plaintext transport, user-level DP: global += server_lr * sum(noisy deltas) / clients_per_round.

    Without HE the server sees each device's noisy delta, whose own noise is only 1/sqrt(min_train_nodes)
    of the total: the user-level guarantee then holds against everyone who sees the model, not the server."""

    def __init__(self, shared: dict[str, np.ndarray], *, server_lr: float, denominator: float, limits=None,
                 ema_decay: float = 0.0, average_last: int = 0) -> None:
        super().__init__(shared, limits=limits, ema_decay=ema_decay, average_last=average_last)
        self.server_lr, self.denominator = server_lr, denominator

    def finish(self, *, min_train_nodes: int) -> bool:
        if len(self._accepted) < min_train_nodes:
            return False
        t0 = time.perf_counter()
        total = sum_updates([a.shared for a in self._accepted])
        self.shared = {k: apply_noisy_sum(np.asarray(v, np.float64), total[k], server_lr=self.server_lr,
                                          denominator=self.denominator).astype(np.float32)
                       for k, v in self.shared.items()}
        self.track_ema()
        self.round_aggregate_s = time.perf_counter() - t0
        self.aggregate_s += self.round_aggregate_s
        return True


class UserAccountant:
    """The server's ledger of a distributed mode: one step of (noise multiplier, q) per round run; the unit is
    "user" (user modes) or "window" (window mode)."""

    def __init__(self, cfg: Config, run_dir: Path, num_devices: int) -> None:
        p, mech = cfg.privacy, distributed_dp(cfg)
        self.noise_multiplier, self.unit = mech.noise_multiplier, mech.unit
        self.q = sample_rate(cfg, num_devices)
        self.ledger = PrivacyLedger.open(Path(run_dir) / USER_LEDGER, accountant=p.accountant, delta=p.delta,
                                         unit=mech.unit, target_epsilon=mech.target_epsilon)

    def stop_reason(self, round_id: int) -> str:
        """'' if round ``round_id`` fits the user-level budget, else why the server stops before it."""
        if any(e.round_id == round_id for e in self.ledger.rounds):
            # a resumed run re-asks a round already charged (released, then a crash before the checkpoint):
            # devices that contributed to it refuse to contribute again (client/device.py), so the re-run can
            # only add devices that never sent a noisy delta for this round
            return ""
        if self.ledger.would_exceed(noise_multiplier=self.noise_multiplier, sample_rate=self.q, num_steps=1):
            return (f"{self.unit}-level epsilon {self.ledger.epsilon():.3f} would exceed {self.target_key}="
                    f"{self.ledger.target_epsilon} with round {round_id}")
        return ""

    @property
    def target_key(self) -> str:
        """The config key of this ledger's budget."""
        return "privacy.user_target_epsilon" if self.unit == "user" else "privacy.target_epsilon"

    def would_exceed_prior(self, noise_multiplier: float) -> bool:
        """Would the popularity prior's release (one Gaussian step at sample rate 1) pass the target?"""
        return self.ledger.would_exceed(noise_multiplier=noise_multiplier, sample_rate=1.0, num_steps=1)

    def record_prior(self, noise_multiplier: float) -> float:
        """Charge the popularity prior's release (round id 0, before any training round)."""
        self.ledger.record(round_id=0, noise_multiplier=noise_multiplier, sample_rate=1.0, num_steps=1)
        return self.ledger.epsilon()

    def record(self, round_id: int) -> float:
        self.ledger.record(round_id=round_id, noise_multiplier=self.noise_multiplier, sample_rate=self.q,
                           num_steps=1)
        return self.ledger.epsilon()

    @property
    def epsilon(self) -> float:
        return self.ledger.epsilon() if self.ledger.rounds else 0.0

    @property
    def prior_charged(self) -> bool:
        return any(e.round_id == 0 for e in self.ledger.rounds)

    @property
    def rounds(self) -> int:
        return sum(e.round_id > 0 for e in self.ledger.rounds)


def sampler_seed(cfg: Config, run_dir: Path) -> int | None:
    """Seed of Poisson client sampling under user-level DP: a server secret (32 bytes from os.urandom, 0600,
    kept so a resumed run replays the same samples). None (the public ``federated.seed``) otherwise, and
    with ``privacy.reproducible_noise`` (tests: runs repeat bit for bit, and the audit FAILS such runs)."""
    if not cfg.privacy.distributed or cfg.privacy.reproducible_noise:
        return None
    path = Path(run_dir) / SAMPLER_SECRET
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, os.urandom(SECRET_BYTES), mode=0o600)
    return int.from_bytes(hashlib.sha256(path.read_bytes()).digest()[:8], "little")


def check_population(num_nodes: int, num_devices: int) -> None:
    """The accountant's q = clients_per_round / N must be the rate the sampler really uses."""
    if num_nodes != num_devices:
        raise RuntimeError(f"user-level DP needs every one of the {num_devices} devices registered to sample at the "
                           f"accounted rate; {num_nodes} are: the real sample rate would differ from the claim")
