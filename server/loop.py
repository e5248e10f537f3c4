"""The server's round loop, independent of the transport (Flower Grid in the ServerApp, or inline calls).

Per round: sample devices, send them the global shared weights, collect updates, FedAvg the valid ones
(a round with fewer than ``min_train_nodes`` valid updates keeps the previous model), count refusals and
failures, evaluate every ``eval_every`` rounds, append a row to history.csv and checkpoint. At the end,
evaluate every device on its test item. The server never receives personal parameters: an update that
carries any parameter outside the expected shared set is rejected.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from server.aggregation import fedavg
from server.optimizers import ServerOptimizer, ema_step
from shared_models.config import Config, FederatedConfig
from shared_models.messages import TrainReply
from shared_models.train.evaluation import protocols
from shared_models.train.metrics import summarize
from shared_models.privacy.user_level import client_sample_rate, poisson_sample

log = logging.getLogger(__name__)


class PlainFedAvg:
    """Plaintext FedAvg: the server holds the global shared weights (``he.enabled = false``)."""

    def __init__(self, shared: dict[str, np.ndarray], optimizer: ServerOptimizer | None = None, *,
                 ema_decay: float = 0.0, average_last: int = 0, limits: "UpdateLimits | None" = None) -> None:
        self.shared = shared
        self.limits = limits or UpdateLimits()
        self.optimizer = optimizer or ServerOptimizer(lr=1.0)  # plain FedAvg: the average is the new model
        self.ema_decay = ema_decay  # > 0: also keep an EMA of the global model (``evaluation_state``)
        self.ema: dict[str, np.ndarray] | None = None  # float64
        self.average_last = average_last  # > 0: evaluate the mean of the last released models instead
        self.recent: list[dict[str, np.ndarray]] = []  # the last ``average_last`` released models, oldest first
        self._accepted: list[TrainReply] = []
        self.aggregate_s = 0.0
        self.round_aggregate_s = 0.0
        self.rejected: list[tuple[int, int, str]] = []  # (round, node, reason)
        self._round = 0

    def broadcast(self) -> dict[str, np.ndarray]:
        return self.shared

    def evaluation_state(self) -> dict[str, np.ndarray]:
        """What evaluation, selection, the final test and the shipped model use: the EMA or the mean of the
        last ``average_last`` released models when kept."""
        kept = self.ema
        if self.recent:
            kept = {k: np.mean([m[k] for m in self.recent], axis=0) for k in self.recent[0]}
        if kept is None:
            return self.shared
        return {k: v.astype(np.asarray(self.shared[k]).dtype) for k, v in kept.items()}

    def begin(self, round_id: int, nodes: list[int]) -> None:
        self._accepted, self._round = [], round_id

    def offer(self, reply: TrainReply) -> str:
        try:
            reason = check_update(reply, self.shared, self.limits)
        except Exception as exc:  # a hostile reply must never end the round loop
            reason = f"update could not be checked ({type(exc).__name__}: {str(exc)[:200]})"
        if reason:
            self.rejected.append((self._round, reply.node, reason))
        else:
            self._accepted.append(reply)
        return reason

    def finish(self, *, min_train_nodes: int) -> bool:
        if len(self._accepted) < min_train_nodes:
            return False
        t0 = time.perf_counter()
        average = fedavg([a.shared for a in self._accepted], [a.num_examples for a in self._accepted])
        self.shared = self.optimizer.step(self.shared, average)
        self.track_ema()
        self.round_aggregate_s = time.perf_counter() - t0
        self.aggregate_s += self.round_aggregate_s
        return True

    def track_ema(self) -> None:
        """With ``ema_decay`` or ``average_last``: fold the new global model into the EMA or the window of
        released models (post-processing of released models)."""
        if not (self.ema_decay or self.average_last):
            return
        x = {k: np.asarray(v, np.float64) for k, v in self.shared.items()}
        if self.ema_decay:
            self.ema = x if self.ema is None else {k: ema_step(self.ema[k], x[k], decay=self.ema_decay) for k in x}
        if self.average_last:
            self.recent = (self.recent + [x])[-self.average_last:]


class Transport(Protocol):
    def node_ids(self) -> list[int]: ...
    def train(self, round_id: int, nodes: list[int], shared: dict[str, np.ndarray]) -> list[TrainReply]: ...
    def evaluate(self, round_id: int, nodes: list[int], shared: dict[str, np.ndarray],
                 stage: str) -> dict[int, tuple[int, int]]: ...  # node -> (masked rank, unmasked rank)


@dataclass
class RoundStats:
    round: int
    sampled: int
    valid: int
    refused: int
    failed: int
    rejected: int
    loss: float
    epsilon_max: float
    epsilon_mean: float
    wall_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, list[float]] = field(default_factory=dict)  # per accepted update: encrypt_s, bytes, ...
    aggregate_s: float = 0.0
    contributors: list[str] = field(default_factory=list)  # device ids of the updates the aggregate holds


def sample_nodes(nodes: list[int], cfg: Config, rng: np.random.Generator) -> list[int]:
    """Uniform without replacement (``clients_per_round``); Poisson at q = clients_per_round / N under
    user-level or window-level DP (the sampling scheme its accountant assumes; a round may then have any size,
    even 0)."""
    f = cfg.federated
    if cfg.privacy.distributed:
        ordered = sorted(nodes)
        q = client_sample_rate(clients_per_round=f.clients_per_round, num_devices=len(ordered))
        return [ordered[i] for i in poisson_sample(len(ordered), sample_rate=q, rng=rng)]
    k = math.ceil(f.fraction_train * len(nodes)) if f.fraction_train > 0 else f.clients_per_round
    k = min(max(k, 1), len(nodes))
    return sorted(rng.choice(nodes, size=k, replace=False).tolist())


@dataclass(frozen=True)
class UpdateLimits:
    """What a plaintext update may claim (``federated.max_examples``, ``federated.max_abs_weight``)."""

    max_examples: int = FederatedConfig.max_examples
    max_abs_weight: float = FederatedConfig.max_abs_weight

    @classmethod
    def from_config(cls, cfg: Config) -> "UpdateLimits":
        return cls(cfg.federated.max_examples, cfg.federated.max_abs_weight)


def check_update(reply: TrainReply, expected: dict[str, np.ndarray], limits: UpdateLimits | None = None) -> str:
    """Empty string if the update is acceptable (then ``reply.shared`` is put in the server's key order and
    dtypes), else the reason it is rejected. Names, shapes and dtypes come from ``expected`` (the server's own
    state, built from its config), never from another update."""
    limits = limits or UpdateLimits()
    if reply.invalid:
        return reply.invalid
    if reply.shared is None:
        return "no weights"
    extra = sorted(set(reply.shared) - set(expected))
    if extra:
        return f"carries non-shared parameters {extra[:3]}"
    missing = sorted(set(expected) - set(reply.shared))
    if missing:
        return f"missing parameters {missing[:3]}"
    n = reply.num_examples
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= limits.max_examples:
        return f"example count {n!r} outside [1, {limits.max_examples}] (federated.max_examples)"
    for k, v in expected.items():
        got = reply.shared[k]
        if not isinstance(got, np.ndarray) or got.dtype.kind != "f":
            return f"parameter {k!r} is not a real floating-point array ({getattr(got, 'dtype', type(got))})"
        if got.shape != np.shape(v):
            return f"parameter {k!r} has shape {got.shape} (expected {np.shape(v)})"
        if not np.isfinite(got).all():
            return f"parameter {k!r} has non-finite values"
        if got.size and float(np.abs(got).max()) > limits.max_abs_weight:
            return f"parameter {k!r} has |value| {float(np.abs(got).max()):.3g} > {limits.max_abs_weight:g} " \
                   "(federated.max_abs_weight)"
    reply.shared = {k: reply.shared[k].astype(np.asarray(v).dtype, copy=False) for k, v in expected.items()}
    return ""


def run_rounds(cfg: Config, transport: Transport, strategy, *, start_round: int = 1,
               on_round: Callable[[RoundStats], None] | None = None,
               progress: Callable[[int], None] | None = None,
               stop_reason: Callable[[int], str] | None = None,
               on_release: Callable[[int], None] | None = None, sampler_seed: int | None = None) -> list[RoundStats]:
    """Run rounds ``start_round..num_server_rounds`` with ``strategy`` (PlainFedAvg or server-blind
    aggregation); the final global state stays in the strategy. Returns per-round stats.
    ``stop_reason(r)``: a non-empty reason ends the run before round r (e.g. the user-level budget).
    ``on_release(r)``: called once round r's aggregate exists, before anything (evaluation) uses it.
    ``sampler_seed``: seeds client sampling (default ``federated.seed``; user-level DP passes a server secret,
    since amplification by sampling needs a sample nobody else can recompute)."""
    rng = np.random.default_rng(cfg.federated.seed if sampler_seed is None else sampler_seed)
    for _ in range(1, start_round):  # replay the sampler so a resumed run samples the same devices
        sample_nodes(transport.node_ids(), cfg, rng)
    stats: list[RoundStats] = []
    for r in range(start_round, cfg.federated.num_server_rounds + 1):  # (stats of earlier rounds: checkpoint)
        if stop_reason and (why := stop_reason(r)):
            log.warning("stopping before round %d: %s", r, why)
            break
        t0 = time.perf_counter()
        nodes = sample_nodes(transport.node_ids(), cfg, rng)
        strategy.begin(r, nodes)
        replies = train_sampled(transport, strategy, r, nodes)
        st = _aggregate_round(cfg, r, replies, strategy)
        if on_release:
            on_release(r)
        if cfg.federated.eval_every and r % cfg.federated.eval_every == 0:
            st.metrics = evaluate_nodes(cfg, transport, r, evaluation_state(strategy), "valid", rng)
        st.wall_s = time.perf_counter() - t0
        stats.append(st)
        if on_round:
            on_round(st)  # fills epsilon from the device ledgers (the harness) and checkpoints
        loss = "n/a" if math.isnan(st.loss) else f"{st.loss:.3f}"  # devices report no loss under HE
        log.info("round %d: %d/%d valid, %d refused, %d failed, %d rejected, loss %s, eps max %.2f %s", r,
                 st.valid, st.sampled, st.refused, st.failed, st.rejected, loss, st.epsilon_max,
                 {k: round(v, 4) for k, v in st.metrics.items() if k in ("recall@10", "ndcg@10")})
        if progress:
            progress(r)
    return stats


def train_sampled(transport: Transport, strategy, round_id: int, nodes: list[int]) -> list[TrainReply]:
    """The sampled devices' replies; with masking (``strategy.prepare``) only devices that completed the round's
    key exchange train, the others count as failed with the reason."""
    prepare = getattr(strategy, "prepare", None)
    ready, unready = prepare(round_id, nodes) if prepare is not None else (nodes, {})
    replies = transport.train(round_id, ready, strategy.broadcast()) if ready else []
    return replies + [TrainReply(node=n, error=why) for n, why in sorted(unready.items())]


def evaluation_state(strategy):
    """The state devices evaluate (and the run ships): the broadcast one unless the strategy keeps another."""
    pick = getattr(strategy, "evaluation_state", None)
    return pick() if pick is not None else strategy.broadcast()


def _aggregate_round(cfg: Config, r: int, replies: list[TrainReply], strategy) -> RoundStats:
    accepted, refused, failed, rejected = [], 0, 0, 0
    for rep in replies:
        if rep.error:
            failed += 1
            log.warning("round %d: device on node %d failed: %s", r, rep.node, rep.error)
            if (note := getattr(strategy, "note_failure", None)) is not None:
                note(rep)  # SecureAggregation: devices that cannot decrypt the sum it broadcast
        elif rep.refused:
            refused += 1
        elif reason := strategy.offer(rep):
            rejected += 1
            log.warning("round %d: update from node %d rejected: %s", r, rep.node, reason)
        else:
            accepted.append(rep)
    released = strategy.finish(min_train_nodes=cfg.federated.min_train_nodes)
    excluded = set(getattr(strategy, "excluded", ()))  # valid-looking updates the sum's confirmation excluded
    if excluded:
        accepted = [a for a in accepted if a.node not in excluded]
        rejected += len(excluded)
    if not released:
        log.warning("round %d: %d valid updates < min_train_nodes=%d: keeping the previous model", r,
                    len(accepted), cfg.federated.min_train_nodes)
    losses = [a.metrics["train_loss"] for a in accepted if "train_loss" in a.metrics]  # none under HE
    timings = {k: [a.metrics[k] for a in accepted if k in a.metrics] for k in ("encrypt_s", "decrypt_s")}
    timings["bytes_per_update"] = [float(len(a.payload)) for a in accepted if a.payload is not None]
    st = RoundStats(round=r, sampled=len(replies), valid=len(accepted), refused=refused, failed=failed,
                    rejected=rejected, loss=float(np.nanmean(losses)) if losses else math.nan,
                    epsilon_max=0.0, epsilon_mean=0.0, wall_s=0.0, timings=timings,
                    aggregate_s=getattr(strategy, "round_aggregate_s", 0.0),
                    contributors=sorted(str(a.device_id) for a in accepted if a.device_id) if released else [])
    return st


def evaluate_nodes(cfg: Config, transport: Transport, r: int, shared, stage: str,
                   rng: np.random.Generator | None = None) -> dict[str, float]:
    """Metrics of the protocol ``eval.mask-history`` picks, the other's under ``"<protocol>_<metric>"`` keys
    (e.g. ``unmasked_ndcg@10``), and ``evaluated`` (devices that answered)."""
    nodes = transport.node_ids()
    k = cfg.federated.eval_clients
    if stage == "valid" and k and k < len(nodes) and rng is not None:
        nodes = sorted(np.random.default_rng(cfg.federated.seed + r).choice(nodes, size=k, replace=False).tolist())
    ranks = transport.evaluate(r, nodes, shared, stage)
    if not ranks:
        return {}
    chosen, other = protocols(cfg.eval.mask_history)
    both = np.array(list(ranks.values()), dtype=np.int64).reshape(len(ranks), 2)  # columns: masked, unmasked
    column = {"masked": 0, "unmasked": 1}
    out = summarize(both[:, column[chosen]])
    out.update({f"{other}_{k}": v for k, v in summarize(both[:, column[other]]).items()})
    out["evaluated"] = float(len(ranks))
    return out


HISTORY_FIELDS = ["round", "sampled", "valid", "refused", "failed", "rejected", "loss", "epsilon_max",
                  "epsilon_mean", "wall_s", "recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10"]


def append_history(path: Path, st: RoundStats) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS)
        if new:
            w.writeheader()
        row: dict[str, Any] = {k: getattr(st, k) for k in HISTORY_FIELDS if hasattr(st, k)}
        row.update({k: st.metrics.get(k, "") for k in HISTORY_FIELDS[10:]})
        w.writerow(row)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    tmp.replace(path)
