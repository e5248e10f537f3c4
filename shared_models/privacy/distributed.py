"""The server-accounted mechanism of a distributed-noise mode, read from the config once.

Modes ``user`` / ``example+user`` (DP-FedAvg on whole devices, ``shared_models.privacy.user_level``) and
``window`` (distributed DP-SGD on training windows, ``shared_models.privacy.window_level``) share everything
the server does: Poisson client sampling at ``clients_per_round / N``, the fixed-denominator decoding of the
noisy sum, and one ledger step of the subsampled Gaussian mechanism per round. They differ in the unit, the
clip, the noise multiplier, the denominator and the per-device window sampling folded into the rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared_models.config import Config
from shared_models.privacy.user_level import client_sample_rate
from shared_models.privacy.window_level import population_sample_rate


@dataclass(frozen=True)
class DistributedDP:
    mode: str
    unit: str  # what one epsilon protects: "user" (a whole device) or "window" (one training window)
    noise_multiplier: float  # of the sum, once >= min_train_nodes devices contribute
    clip: float  # L2 bound of one unit's contribution to the sum
    target_epsilon: float
    denominator: float  # global = initial + server_lr * running sum / denominator (public)
    window_rate: float = 1.0  # per-device window sampling (window mode), 1 otherwise

    def sample_rate(self, *, clients_per_round: int, num_devices: int) -> float:
        """The accountant's q: the chance that one unit's data is in a round's sum."""
        device_rate = client_sample_rate(clients_per_round=clients_per_round, num_devices=num_devices)
        return population_sample_rate(device_rate=device_rate, window_rate=self.window_rate)

    @property
    def unit_words(self) -> str:
        return ("adding/removing one whole device (user)" if self.unit == "user"
                else "adding/removing one training window anywhere in the population")


def distributed_dp(cfg: Config) -> DistributedDP:
    """The mechanism of ``cfg.privacy.mode``; ValueError for a mode without distributed noise."""
    p, f = cfg.privacy, cfg.federated
    if p.user_level:
        return DistributedDP(p.mode, "user", p.user_noise_multiplier, p.user_clip, p.user_target_epsilon,
                             float(f.clients_per_round))
    if p.mode == "window":
        return DistributedDP(p.mode, "window", p.noise_multiplier, p.max_grad_norm, p.target_epsilon,
                             float(p.expected_batch), window_rate=p.window_sample_rate)
    raise ValueError(f"privacy.mode {p.mode!r} adds no distributed noise (expected one of user, example+user, "
                     "window)")
