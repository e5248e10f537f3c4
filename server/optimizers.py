"""Server optimizers for plaintext federated averaging (Reddi et al., "Adaptive Federated Optimization", ICLR 2021).

The round's FedAvg average ``avg`` gives a pseudo-gradient ``delta = avg - x`` (x: the current global model);
a server optimizer turns it into the next global model. Pure functions over float64 arrays plus a thin
stateful wrapper chosen by ``federated.server-optimizer``:

fedavg   x' = avg                                             (plain FedAvg; server-lr is not used)
fedavgm  m' = momentum * m + delta;  x' = x + lr * m'          (Hsu et al. 2019)
fedadam  m' = b1 * m + (1 - b1) * delta;  v' = b2 * v + (1 - b2) * delta^2;  x' = x + lr * m' / (sqrt(v') + tau)

``federated.server-ema = d > 0`` also keeps ``e' = d * e + (1 - d) * x'`` (``e`` = x after the first round): devices
train from ``x``; evaluation, selection, the final test and the shipped model use ``e``, which averages out the
round-to-round jitter of sampling 100 of 943 devices.

Only the plaintext server can run these: a server-blind (HE) server never holds x, and under user-level DP the
decoding is fixed (global = initial + server_lr * noisy sum / clients_per_round), so the config allows them
only with ``he.enabled = false`` and ``privacy.mode`` none or example.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping

import numpy as np

Arrays = Mapping[str, np.ndarray]


def fedavgm_step(x: np.ndarray, avg: np.ndarray, m: np.ndarray, *, lr: float, momentum: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(x', m')."""
    m = momentum * m + (avg - x)
    return x + lr * m, m


def fedadam_step(x: np.ndarray, avg: np.ndarray, m: np.ndarray, v: np.ndarray, *, lr: float, beta1: float,
                 beta2: float, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x', m', v')."""
    delta = avg - x
    m = beta1 * m + (1.0 - beta1) * delta
    v = beta2 * v + (1.0 - beta2) * delta * delta
    return x + lr * m / (np.sqrt(v) + tau), m, v


def ema_step(ema: np.ndarray, x: np.ndarray, *, decay: float) -> np.ndarray:
    """Polyak-style exponential moving average of the global model: ``decay * ema + (1 - decay) * x``."""
    return decay * ema + (1.0 - decay) * x


class ServerOptimizer:
    """State (moment buffers per parameter) + one step per released round; ``state()``/``load()`` for
    checkpoints, so a resumed run continues with the same moments."""

    SLOTS: tuple[str, ...] = ()

    def __init__(self, *, lr: float, momentum: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> None:
        self.lr, self.momentum, self.beta2, self.tau = lr, momentum, beta2, tau
        self.buffers: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.SLOTS}

    def _buffer(self, slot: str, key: str, like: np.ndarray) -> np.ndarray:
        return self.buffers[slot].get(key, np.zeros(like.shape, dtype=np.float64))

    def step(self, x: Arrays, avg: Arrays) -> "OrderedDict[str, np.ndarray]":
        out: "OrderedDict[str, np.ndarray]" = OrderedDict()
        for k, xk in x.items():
            x64, a64 = np.asarray(xk, np.float64), np.asarray(avg[k], np.float64)
            out[k] = self._step_one(k, x64, a64).astype(np.asarray(xk).dtype)
        return out

    def _step_one(self, key: str, x: np.ndarray, avg: np.ndarray) -> np.ndarray:
        return avg  # plain FedAvg

    def state(self) -> dict[str, np.ndarray]:
        """Flat ``{"<slot>/<param>": array}`` (empty for stateless fedavg)."""
        return {f"{slot}/{k}": v for slot, bufs in self.buffers.items() for k, v in bufs.items()}

    def load(self, flat: Mapping[str, np.ndarray]) -> None:
        for name, value in flat.items():
            slot, key = name.split("/", 1)
            if slot not in self.buffers:
                raise ValueError(f"server optimizer state has slot {slot!r}, expected one of {self.SLOTS}")
            self.buffers[slot][key] = np.asarray(value, np.float64)


class FedAvgM(ServerOptimizer):
    SLOTS = ("m",)

    def _step_one(self, key, x, avg):
        new, self.buffers["m"][key] = fedavgm_step(x, avg, self._buffer("m", key, x), lr=self.lr,
                                                   momentum=self.momentum)
        return new


class FedAdam(ServerOptimizer):
    SLOTS = ("m", "v")

    def _step_one(self, key, x, avg):
        new, self.buffers["m"][key], self.buffers["v"][key] = fedadam_step(
            x, avg, self._buffer("m", key, x), self._buffer("v", key, x), lr=self.lr, beta1=self.momentum,
            beta2=self.beta2, tau=self.tau)
        return new


SERVER_OPTIMIZERS: dict[str, Callable[..., ServerOptimizer]] = {
    "fedavg": ServerOptimizer, "fedavgm": FedAvgM, "fedadam": FedAdam}


def make_server_optimizer(name: str, *, lr: float, momentum: float, beta2: float, tau: float) -> ServerOptimizer:
    try:
        cls = SERVER_OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"federated.server-optimizer: unknown {name!r}, expected one of "
                         f"{sorted(SERVER_OPTIMIZERS)}") from None
    return cls(lr=lr, momentum=momentum, beta2=beta2, tau=tau)
