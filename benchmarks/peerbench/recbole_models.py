"""RecBole 1.2.1's GRU4Rec and SASRec trained on the project's split, scored by the project's evaluator.

Only RecBole's model classes are used (their default hyper-parameters from RecBole's own config files,
their ``calculate_loss`` with loss_type CE over the full catalogue, their ``full_sort_predict``). Training
follows RecBole's sequential recipe (every prefix of each training sequence is a sample, Adam at RecBole's
learning rate and batch size, shuffled each epoch) in a plain loop, so RecBole's data pipeline, which would
re-split and re-index the data, never runs: item ids are the project's (0 = padding in both). Early
stopping uses the project's evaluator on the validation item (NDCG@10, the ``select`` protocol) with
RecBole's ``stopping_step`` as patience unless overridden.

Bounds for small machines (both off by default): ``samples_per_epoch`` > 0 makes an epoch a fresh uniform
draw of that many prefixes instead of all of them (the same objective, fewer steps between validations);
``max_train_s`` > 0 stops after the first epoch that ends past that many seconds of training. A bounded run
is not RecBole's converged model: the summary records the optimizer steps taken and why training stopped.

Compatibility shims (RecBole 1.2.1 predates NumPy 2): its Config re-creates the removed ``np.float``-style
aliases from ``np.float_``, ``np.complex_`` and ``np.unicode_``, which NumPy 2 no longer has;
:func:`numpy_shims` puts those three back before RecBole is imported.
"""

from __future__ import annotations

import copy
import logging
import sys
import time

import numpy as np
import torch

from peerbench.sequences import prefix_samples, right_align
from shared_models.train.evaluation import evaluate_split_both

RECBOLE_VERSION = "1.2.1"
MODELS = ("GRU4Rec", "SASRec")
SELECT_METRIC = "ndcg@10"
log = logging.getLogger(__name__)


def numpy_shims() -> None:
    """The NumPy 1 aliases RecBole 1.2.1's Config reads (removed in NumPy 2)."""
    for name, value in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if name not in np.__dict__:
            setattr(np, name, value)


def _recbole():
    numpy_shims()
    import recbole
    from recbole.config import Config
    from recbole.data.interaction import Interaction
    from recbole.model import sequential_recommender

    if recbole.__version__ != RECBOLE_VERSION:
        raise RuntimeError(f"bench_peers needs recbole=={RECBOLE_VERSION}, found {recbole.__version__} "
                           f"(pip install --no-deps recbole=={RECBOLE_VERSION})")
    return Config, Interaction, sequential_recommender


class _Catalogue:
    """The one thing RecBole's sequential models read from a Dataset: the number of item ids (with padding)."""

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items

    def num(self, field: str) -> int:
        return self.num_items


def build(name: str, num_items: int, *, seed: int, overrides: dict | None = None):
    """(model, its RecBole config) with RecBole's defaults for ``name`` plus ``overrides``."""
    if name not in MODELS:
        raise ValueError(f"unknown RecBole model {name!r} (expected one of {MODELS})")
    Config, _, seq = _recbole()
    settings = {"device": "cpu", "use_gpu": False, "seed": seed, "reproducibility": True, "show_progress": False,
                "train_neg_sample_args": None, "loss_type": "CE", **(overrides or {})}
    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config also reads --key=value from the command line
    try:
        config = Config(model=name, dataset="fedinterest-split", config_dict=settings)
    finally:
        sys.argv = argv
    torch.manual_seed(seed)
    return getattr(seq, name)(config, _Catalogue(num_items)), config


class RecBoleScorer:
    """A RecBole sequential model behind the project's ``full_sort_predict({"inputs": left-padded})``."""

    def __init__(self, model, config) -> None:
        _, self._interaction, _ = _recbole()
        self.model, self.max_len = model, int(config["MAX_ITEM_LIST_LENGTH"])
        self.seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
        self.len_field = config["ITEM_LIST_LENGTH_FIELD"]

    def eval(self) -> "RecBoleScorer":
        self.model.eval()
        return self

    def train(self, mode: bool = True) -> "RecBoleScorer":  # the evaluator calls eval() on models with train()
        self.model.train(mode)
        return self

    def full_sort_predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seq, lengths = right_align(batch["inputs"])
        scores = self.model.full_sort_predict(self._interaction({self.seq_field: seq, self.len_field: lengths}))
        return scores.view(seq.shape[0], -1)


def train_peer(name: str, split, *, seed: int, epochs: int, patience: int | None, select: str,
               eval_batch_size: int = 512, samples_per_epoch: int = 0,
               max_train_s: float = 0.0) -> tuple[RecBoleScorer, dict]:
    """Train ``name`` on ``split.train``; return the scorer at the best validation epoch and a summary."""
    t0 = time.perf_counter()
    model, config = build(name, split.num_items, seed=seed)
    scorer = RecBoleScorer(model, config)
    seqs, lengths, targets = (torch.from_numpy(a) for a in prefix_samples(split.train, max_len=scorer.max_len))
    opt = torch.optim.Adam(model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"])
    batch, pos_field = int(config["train_batch_size"]), config["ITEM_ID_FIELD"]
    patience = int(config["stopping_step"]) if patience is None else patience
    gen = torch.Generator().manual_seed(seed)
    best, best_epoch, best_state, bad, history, steps, stop = -1.0, 0, None, 0, [], 0, "epochs"
    for epoch in range(1, epochs + 1):
        model.train()
        total, order = 0.0, torch.randperm(len(targets), generator=gen)
        if samples_per_epoch:
            order = order[:samples_per_epoch]
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            inter = scorer._interaction({scorer.seq_field: seqs[idx], scorer.len_field: lengths[idx],
                                         pos_field: targets[idx]})
            loss = model.calculate_loss(inter)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            total += float(loss.detach()) * len(idx)
        valid, _ = evaluate_split_both(scorer, split, stage="valid", max_len=scorer.max_len,
                                       batch_size=eval_batch_size)
        value = valid[select][SELECT_METRIC]
        history.append({"epoch": epoch, "loss": total / len(order), f"valid_{select}_{SELECT_METRIC}": value})
        log.info("%s seed %d epoch %d: loss %.4f valid %s %s %.4f", name, seed, epoch, total / len(order), select,
                 SELECT_METRIC, value)
        if value > best:
            best, best_epoch, best_state, bad = value, epoch, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                stop = "patience"
                break
        if max_train_s and time.perf_counter() - t0 > max_train_s:
            stop = "max_train_s"
            break
    model.load_state_dict(best_state)
    info = {"epochs": len(history), "best_epoch": best_epoch, "train_samples": len(targets), "steps": steps,
            "stopped_by": stop, "samples_per_epoch": samples_per_epoch or len(targets),
            "wall_s": round(time.perf_counter() - t0, 2), "history": history,
            "hyper": {k: config[k] for k in ("learning_rate", "train_batch_size", "MAX_ITEM_LIST_LENGTH",
                                             "hidden_size", "loss_type") if k in config}}
    return scorer, info
