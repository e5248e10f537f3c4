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
from shared_models.config import Config
from shared_models.metrics import summarize

log = logging.getLogger(__name__)


@dataclass
class TrainReply:
    node: int
    shared: dict[str, np.ndarray] | None = None
    num_examples: int = 0
    refused: bool = False
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


class Transport(Protocol):
    def node_ids(self) -> list[int]: ...
    def train(self, round_id: int, nodes: list[int], shared: dict[str, np.ndarray]) -> list[TrainReply]: ...
    def evaluate(self, round_id: int, nodes: list[int], shared: dict[str, np.ndarray], stage: str) -> dict[int, int]: ...


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


def sample_nodes(nodes: list[int], cfg: Config, rng: np.random.Generator) -> list[int]:
    f = cfg.federated
    k = math.ceil(f.fraction_train * len(nodes)) if f.fraction_train > 0 else f.clients_per_round
    k = min(max(k, 1), len(nodes))
    return sorted(rng.choice(nodes, size=k, replace=False).tolist())


def check_update(reply: TrainReply, expected: dict[str, np.ndarray]) -> str:
    """Empty string if the update is acceptable, else the reason it is rejected."""
    if reply.shared is None:
        return "no weights"
    extra = sorted(set(reply.shared) - set(expected))
    if extra:
        return f"carries non-shared parameters {extra[:3]}"
    missing = sorted(set(expected) - set(reply.shared))
    if missing:
        return f"missing parameters {missing[:3]}"
    for k, v in expected.items():
        got = np.asarray(reply.shared[k])
        if got.shape != v.shape or not np.isfinite(got).all():
            return f"parameter {k!r} has shape {got.shape} (expected {v.shape}) or non-finite values"
    if reply.num_examples <= 0:
        return f"non-positive example count {reply.num_examples}"
    return ""


def run_rounds(cfg: Config, transport: Transport, shared: dict[str, np.ndarray], *, start_round: int = 1,
               on_round: Callable[[RoundStats, dict[str, np.ndarray]], None] | None = None,
               progress: Callable[[int], None] | None = None) -> tuple[dict[str, np.ndarray], list[RoundStats]]:
    """Run rounds ``start_round..num_server_rounds``; return the final shared weights and per-round stats."""
    rng = np.random.default_rng(cfg.federated.seed)
    for _ in range(1, start_round):  # replay the sampler so a resumed run samples the same devices
        sample_nodes(transport.node_ids(), cfg, rng)
    stats: list[RoundStats] = []
    for r in range(start_round, cfg.federated.num_server_rounds + 1):
        t0 = time.perf_counter()
        nodes = sample_nodes(transport.node_ids(), cfg, rng)
        replies = transport.train(r, nodes, shared)
        shared, st = _aggregate_round(cfg, r, replies, shared)
        if cfg.federated.eval_every and r % cfg.federated.eval_every == 0:
            st.metrics = evaluate_nodes(cfg, transport, r, shared, "valid", rng)
        st.wall_s = time.perf_counter() - t0
        stats.append(st)
        log.info("round %d: %d/%d valid, %d refused, %d failed, loss %.3f, eps max %.2f %s", r, st.valid,
                 st.sampled, st.refused, st.failed, st.loss, st.epsilon_max,
                 {k: round(v, 4) for k, v in st.metrics.items() if k in ("recall@10", "ndcg@10")})
        if on_round:
            on_round(st, shared)
        if progress:
            progress(r)
    return shared, stats


def _aggregate_round(cfg: Config, r: int, replies: list[TrainReply], shared):
    accepted, refused, failed, rejected = [], 0, 0, 0
    for rep in replies:
        if rep.error:
            failed += 1
            log.warning("round %d: device on node %d failed: %s", r, rep.node, rep.error)
        elif rep.refused:
            refused += 1
        elif reason := check_update(rep, shared):
            rejected += 1
            log.warning("round %d: update from node %d rejected: %s", r, rep.node, reason)
        else:
            accepted.append(rep)
    if len(accepted) >= cfg.federated.min_train_nodes:
        shared = fedavg([a.shared for a in accepted], [a.num_examples for a in accepted])
    else:
        log.warning("round %d: %d valid updates < min_train_nodes=%d: keeping the previous model", r,
                    len(accepted), cfg.federated.min_train_nodes)
    eps = [rep.metrics["epsilon"] for rep in replies if "epsilon" in rep.metrics]
    losses = [a.metrics.get("train_loss", math.nan) for a in accepted]
    st = RoundStats(round=r, sampled=len(replies), valid=len(accepted), refused=refused, failed=failed,
                    rejected=rejected, loss=float(np.nanmean(losses)) if losses else math.nan,
                    epsilon_max=max(eps, default=0.0), epsilon_mean=float(np.mean(eps)) if eps else 0.0,
                    wall_s=0.0)
    return shared, st


def evaluate_nodes(cfg: Config, transport: Transport, r: int, shared, stage: str,
                   rng: np.random.Generator | None = None) -> dict[str, float]:
    nodes = transport.node_ids()
    k = cfg.federated.eval_clients
    if stage == "valid" and k and k < len(nodes) and rng is not None:
        nodes = sorted(np.random.default_rng(cfg.federated.seed + r).choice(nodes, size=k, replace=False).tolist())
    ranks = transport.evaluate(r, nodes, shared, stage)
    if not ranks:
        return {}
    out = summarize(np.array(list(ranks.values())))
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
