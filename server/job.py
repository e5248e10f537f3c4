"""The server side of one run over any transport: keys, strategy, rounds, final test, outputs in RUN_DIR.

The ServerApp (``server/app.py``) runs it over Flower's Grid; the simulation harness runs it over its inline
and cohort transports. It resumes from ``RUN_DIR/checkpoint`` when one exists.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from server.checkpoint import load_checkpoint, save_checkpoint, trim_history
from server.loop import PlainFedAvg, RoundStats, UpdateLimits, append_history, evaluate_nodes, evaluation_state, run_rounds, write_json
from server.masks import attach_masks
from server.optimizers import make_server_optimizer
from server.prior import release_prior
from server.report import build_result, ledger_epsilons
from server.run_id import run_identity
from server.run_log import log_record, open_round_log, server_signing_key
from server.secure import SecureAggregation
from server.selection import ModelSelection
from server.user_dp import (PlainDPFedAvg, UserAccountant, check_population, check_running_sum_capacity, sample_rate,
                            sampler_seed)
from shared_models.config import Config
from shared_models.crypto import init_keys, load_server_keys
from shared_models.datasets.population import Population, population
from shared_models.model.state import initial_shared
from shared_models.paths import mark_keys_dir, run_keys_dir
from shared_models.privacy.distributed import distributed_dp
from shared_models.tracking import TRACKING_DIR, open_tracker, run_finals

log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """A run that produced nothing usable: no round released an aggregate, or no device was evaluated.
    ``result`` is what was written to metrics.json (with its ``failure`` reason)."""

    def __init__(self, reason: str, result: dict[str, Any]) -> None:
        super().__init__(reason)
        self.result = result


def failure_reason(cfg: Config, stats: list[RoundStats], test: dict[str, float]) -> str:
    """Why a finished run is a failure, or '' when it is not. A round released an aggregate when it had at
    least ``min_train_nodes`` valid updates; the final test counts the devices that returned a rank."""
    released = [s.round for s in stats if s.valid >= cfg.federated.min_train_nodes]
    if not released:
        rejected = sum(s.rejected for s in stats)
        failed = sum(s.failed for s in stats)
        return (f"no round released an aggregate ({len(stats)} rounds, each with < min_train_nodes="
                f"{cfg.federated.min_train_nodes} valid updates; {rejected} rejected, {failed} failed updates)")
    if not test.get("evaluated", 0):
        return "no device was evaluated on its test item (every device failed or sent an invalid rank)"
    return ""


SERVER_THREADS = 1  # the server's own torch work; a simulated device is one CPU's worth (Ray gives num_cpus)


def prepare_keys(cfg: Config, pop: Population, run_dir: Path) -> str:
    """HE on: the harness plays the key authority and makes keys once per run, in ``RUN_DIR.keys`` beside the
    run directory (``shared_models.paths.run_keys_dir``), unless ``he.keys_dir`` names keys made beforehand."""
    if not cfg.he.enabled:
        return ""
    keys_dir = run_keys_dir(run_dir, cfg.he.keys_dir)
    if cfg.he.keys_dir and not (keys_dir / "manifest.json").exists():
        raise FileNotFoundError(f"he.keys_dir {keys_dir}: no manifest.json there; make the keys first with "
                                "`fedinterest keys init` (fresh keys would not match the devices' keys)")
    if not (keys_dir / "manifest.json").exists():
        mark_keys_dir(keys_dir)
        init_keys(keys_dir, device_ids=[d.device_id for d in pop.devices], he=cfg.he.to_he_config())
        log.info("key authority: CKKS + Ed25519 + sealed secrets for %d devices in %s", len(pop.devices), keys_dir)
    return str(keys_dir)


def make_strategy(cfg: Config, pop: Population, keys_dir: str, run_id: str = ""):
    """PlainFedAvg (server holds the weights) or SecureAggregation (server holds only an encrypted sum)."""
    template = initial_shared(cfg, pop.num_items, pop.text)  # public architecture: shapes only under HE
    user = cfg.privacy.distributed  # noisy deltas summed over rounds, decoded with a fixed denominator
    f = cfg.federated
    if user:
        sample_rate(cfg, len(pop.devices))  # clients_per_round <= N (ConfigError otherwise)
    check_running_sum_capacity(cfg, len(pop.devices))
    if not cfg.he.enabled:
        if user:
            return PlainDPFedAvg(template, server_lr=f.server_lr, denominator=distributed_dp(cfg).denominator,
                                 limits=UpdateLimits.from_config(cfg), ema_decay=f.server_ema,
                                 average_last=f.server_average)
        return PlainFedAvg(template, make_server_optimizer(f.server_optimizer, lr=f.server_lr,
                                                           momentum=f.server_momentum, beta2=f.server_beta2,
                                                           tau=f.server_tau), ema_decay=f.server_ema,
                           average_last=f.server_average, limits=UpdateLimits.from_config(cfg))
    n_params = int(sum(v.size for v in template.values()))
    return SecureAggregation(load_server_keys(Path(keys_dir), n_threads=1), n_params=n_params, accumulate=user,
                             run_id=run_id, average_last=f.server_average)


def run_job(cfg: Config, transport, run_dir: Path, *, keys_dir: str = "", progress: bool = True) -> dict[str, Any]:
    """The whole server side of a run over any transport: rounds, final test, outputs in ``run_dir``.

    Resumes from ``run_dir/checkpoint`` when one exists (``simulate`` wipes it for a fresh run)."""
    t0 = time.perf_counter()
    torch.set_num_threads(SERVER_THREADS)
    config = cfg.to_dict()
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    history = run_dir / "history.csv"
    pop = population(cfg)
    strategy = make_strategy(cfg, pop, keys_dir, run_identity(run_dir))
    if isinstance(strategy, SecureAggregation):  # a transport that can ask a key holder: sums confirmed first
        strategy.checker = getattr(transport, "check_sum", None)
        attach_masks(cfg, strategy, transport)
    selection = ModelSelection(patience=cfg.federated.patience) if cfg.federated.keep_best else None
    done, stats = load_checkpoint(run_dir, strategy, json.loads(json.dumps(config)), selection)
    trim_history(history, done)
    if done:
        log.info("resuming after round %d (checkpoint in %s)", done, run_dir / "checkpoint")

    round_log = open_round_log(run_dir, server_signing_key(run_keys_dir(run_dir, keys_dir or cfg.he.keys_dir)),
                               last_round=done)
    accountant = UserAccountant(cfg, run_dir, len(pop.devices)) if cfg.privacy.distributed else None
    if accountant is not None:
        check_population(len(transport.node_ids()), len(pop.devices))
    prior_summary = None
    if cfg.privacy.prior:  # released once, before round 1, and sent with every instruction after it
        transport.prior, prior_summary = release_prior(cfg, transport, run_dir, num_items=pop.num_items,
                                                       keys_dir=keys_dir, accountant=accountant)
    tracker = open_tracker(cfg, run_dir / TRACKING_DIR, run_name=run_dir.name)  # TensorBoard / MLflow
    tracker.watch(strategy)

    def on_round(st: RoundStats) -> None:
        st.epsilon_max, st.epsilon_mean = ledger_epsilons(cfg, run_dir, pop)
        if accountant is not None:  # distributed noise: one guarantee for every device, composed by the server
            st.epsilon_max = st.epsilon_mean = accountant.epsilon
        append_history(history, st)
        tracker.log_round(st, strategy)
        stats.append(st)
        if selection is not None and st.metrics and selection.observe(st.round, st.metrics,
                                                                      evaluation_state(strategy)):
            log.info("round %d: best validation so far, kept", st.round)
        round_log.append(log_record(cfg, st, strategy))  # before the checkpoint: a resume trims, never gaps
        save_checkpoint(run_dir, strategy, stats, json.loads(json.dumps(config)), selection)

    def stop_reason(r: int) -> str:
        why = accountant.stop_reason(r) if accountant is not None else ""
        return why or (selection.stop_reason() if selection is not None else "")

    with _progress(progress) as bar:
        task = bar.add_task("rounds", total=cfg.federated.num_server_rounds, completed=done)
        run_rounds(cfg, transport, strategy, start_round=done + 1, on_round=on_round,
                   progress=lambda r: bar.update(task, completed=r),
                   stop_reason=stop_reason,
                   on_release=accountant.record if accountant is not None else None,  # charged before any use
                   sampler_seed=sampler_seed(cfg, run_dir))
        bar.update(task, description="final test")
        final = evaluation_state(strategy)
        final = selection.final_state(final) if selection is not None else final
        test = evaluate_nodes(cfg, transport, cfg.federated.num_server_rounds + 1, final, "test")
    save_global(run_dir, final)
    result = build_result(cfg, run_dir, pop, stats, test, strategy, time.perf_counter() - t0, accountant=accountant)
    if selection is not None:
        result["selection"] = selection.summary()
    if prior_summary is not None:
        result["privacy"]["prior"] = prior_summary
    if why := failure_reason(cfg, stats, test):
        result["failure"] = why
    write_json(run_dir / "metrics.json", result)
    tracker.finish(config, run_finals(result))
    if why:
        log.error("run %s failed: %s (metrics.json written)", run_dir, why)
        raise RunFailed(f"{why}; see {run_dir / 'metrics.json'} and {history}", result)
    return result


def save_global(run_dir: Path, state) -> None:
    """Plaintext: the global weights; HE: only the encrypted sum (the server never has the model)."""
    if isinstance(state, dict):
        np.savez(run_dir / "global_shared.npz", **state)
    elif state:
        (run_dir / "global_sum.ckks").write_bytes(state)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)
