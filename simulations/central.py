"""Centralized (non-federated, non-private) training with early stopping on validation NDCG@10."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from shared_models.config import Config
from shared_models.train.evaluation import evaluate_split_both, protocols
from shared_models.model.factory import build_model
from shared_models.train.sequences import build_windows
from shared_models.train.training import resolve_device, seed_everything, train_epoch
from shared_models.datasets.load import load_split
from shared_models.tracking import Tracker, open_tracker, run_finals

log = logging.getLogger(__name__)
SELECT_METRIC = "ndcg@10"


def train_central(cfg: Config, *, progress: bool = True, track_dir: Path | None = None) -> dict[str, Any]:
    """Train ``cfg.model.kind`` on the leave-one-out split; return the FILE.json result dict. ``metrics``,
    ``valid_metrics`` and ``test_ranks`` follow ``eval.mask-history`` (named in ``protocol``); the other
    protocol's are under the same names with ``_masked`` / ``_unmasked`` appended.

    ``track_dir``: per-epoch loss and validation metrics go there (``cfg.tracking``: TensorBoard, MLflow)."""
    t0 = time.perf_counter()
    tracker = open_tracker(cfg, track_dir, run_name=track_dir.name) if track_dir is not None else Tracker([])
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    rng = seed_everything(cfg.train.seed)
    split = load_split(cfg.data)
    device = resolve_device(cfg.train.device)
    model = build_model(cfg.model, num_items=split.num_items, train_seqs=split.train, item_text=split.item_text)
    ev = dict(max_len=cfg.model.max_len, batch_size=cfg.train.eval_batch_size, device=device)
    chosen, other = protocols(cfg.eval.mask_history)
    history: list[dict[str, float]] = []
    if cfg.model.kind == "pop":
        best_valid, _ = evaluate_split_both(model, split, stage="valid", **ev)
        best_epoch, best_state, stopped_by = 0, None, "closed form"
    else:
        best_valid, best_epoch, best_state, stopped_by = _fit(cfg, model, split, rng, device, ev, history, progress,
                                                              tracker)
        model.load_state_dict(best_state)
    test, test_ranks = evaluate_split_both(model, split, stage="test", **ev)
    result = {
        "dataset": cfg.data.dataset, "model": cfg.model.kind, "config": cfg.to_dict(), "protocol": chosen,
        "metrics": test[chosen], f"metrics_{other}": test[other],
        "valid_metrics": best_valid[chosen], f"valid_metrics_{other}": best_valid[other], "epochs": len(history),
        "best_epoch": best_epoch, "stopped_by": stopped_by,
        "num_users": len(split.train), "num_items": split.num_items - 1, "dropped_users": split.dropped_users,
        "num_parameters": sum(p.numel() for p in model.parameters()) if cfg.model.kind != "pop" else 0,
        "wall_s": round(time.perf_counter() - t0, 2), "history": history,
        "test_ranks": test_ranks.of(chosen).tolist(),
        f"test_ranks_{other}": test_ranks.of(other).tolist(),
    }
    tracker.finish(result["config"], run_finals(result))
    return result


def _fit(cfg: Config, model, split, rng, device, ev, history, progress, tracker: Tracker):
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    windows = build_windows(split.train, max_len=cfg.model.max_len, stride=cfg.train.window_stride)
    log.info("%d training windows from %d users", len(windows), len(split.train))
    t_start, stopped_by = time.perf_counter(), "epochs"
    chosen = protocols(cfg.eval.mask_history)[0]
    best, best_epoch, best_state, bad = {chosen: {SELECT_METRIC: -1.0}}, 0, None, 0
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(f"train {cfg.model.kind}", total=cfg.train.epochs, info="")
        for epoch in range(1, cfg.train.epochs + 1):
            t_epoch = time.perf_counter()
            loss = train_epoch(model, opt, windows, batch_size=cfg.train.batch_size, rng=rng, device=device,
                               columns=True)
            valid, _ = evaluate_split_both(model, split, stage="valid", **ev)
            tracker.log(epoch, {"train/loss": loss, **{f"valid/{k}": v for k, v in valid[chosen].items()},
                                "time/epoch_s": time.perf_counter() - t_epoch})
            history.append({"epoch": epoch, "loss": loss, **{f"valid_{k}": v for k, v in valid[chosen].items()}})
            if valid[chosen][SELECT_METRIC] > best[chosen][SELECT_METRIC]:
                best, best_epoch, bad = valid, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
            info = (f"loss {loss:.3f} valid ndcg@10 {valid[chosen][SELECT_METRIC]:.4f} "
                    f"(best {best[chosen][SELECT_METRIC]:.4f} @ {best_epoch})")
            bar.update(task, advance=1, info=info)
            if not progress:
                log.info("epoch %d: %s", epoch, info)
            if bad >= cfg.train.patience:
                stopped_by = "patience"
                break
            if cfg.train.max_train_s and time.perf_counter() - t_start > cfg.train.max_train_s:
                stopped_by = "train.max_train_s"
                break
    return best, best_epoch, best_state, stopped_by
