"""What one device does in a round, as plain functions (the ClientApp only converts Messages).

``device_train``: load the global shared weights and this device's personal weights, train the whole local
model on the device's own windows (DP-SGD when ``privacy.mode`` is ``example`` or ``example+user``), compose
the spend into the persistent ledger, save the personal weights, and return ONLY the shared weights and the
example count -- or, under user-level DP, the clipped and noised shared delta with weight 1; under
window-level DP (``privacy.mode = window``) no local step is taken: minus the noisy sum of the sampled
windows' clipped gradients at the global model leaves the device, with weight 1 (``client/window_dp.py``).
``device_evaluate``: score the full catalogue for the device's validation or test item.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from client.store import DeviceStore
from client.user_dp import noisy_delta
from client.window_dp import window_step, window_update
from shared_models.config import Config
from shared_models.datasets.population import DeviceData
from shared_models.train.dp_training import LocalTrainResult, sample_rate_for, train_local, train_local_dp
from shared_models.train.evaluation import rank_targets_both
from shared_models.model.interest import InterestModel
from shared_models.model.state import build_device_model, shared_keys, stable_hash
from shared_models.privacy import PrivacyLedger
from shared_models.privacy.units import EXAMPLE_MODES, resolve_delta
from shared_models.train.sequences import Windows, build_windows
from shared_models.train.training import resolve_device

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    shared: "OrderedDict[str, np.ndarray]" = field(default_factory=OrderedDict)  # empty when refused
    num_examples: int = 0
    refused: bool = False
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def load_weights(model: InterestModel, shared: dict[str, np.ndarray], store: DeviceStore, *,
                 personal: dict[str, torch.Tensor] | None = None) -> None:
    """Global shared weights, then the device's personal ones (``personal``, else its store's)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in shared.items():
            if k not in params:
                raise KeyError(f"global weights carry unknown parameter {k!r}")
            params[k].copy_(torch.as_tensor(np.asarray(v)).view_as(params[k]))
        personal = store.load_personal() if personal is None else personal
        for k, v in (personal or {}).items():
            if k in params and k not in shared:
                params[k].copy_(v)


def dp_plan(num_examples: int, *, batch_size: int, epochs: int) -> tuple[float, int]:
    """(sample rate, steps) that ``train_local_dp`` will use: Opacus' q = 1 / batches-per-epoch."""
    batch = max(1, int(round(sample_rate_for(num_examples, batch_size) * num_examples)))
    batches = math.ceil(num_examples / batch)
    return 1.0 / batches, batches * epochs


@dataclass
class PreparedRound:
    """A device ready to train this round (everything but the optimisation itself)."""

    data: DeviceData
    store: DeviceStore
    model: InterestModel
    windows: Windows
    seed: int  # optimiser / DP noise + Poisson sampling seed (a device secret unless reproducible_noise)
    ledger: PrivacyLedger | None
    global_shared: dict[str, np.ndarray] = field(default_factory=dict)  # the model this round started from
    noise_seed: int = 0  # user-level noise (a device secret unless reproducible_noise)
    dropout_seed: int = 0  # torch's global RNG right before training: reproducible per (run seed, round, device)
    replay_digest: str = ""  # a resumed run re-asks the last round sent: the update must come out identical


def prepare_round(*, data: DeviceData, store: DeviceStore, global_shared: dict[str, np.ndarray], cfg: Config,
                  round_id: int, text: torch.Tensor | None = None, max_interactions: int = 0,
                  item_prior: np.ndarray | None = None) -> PreparedRound | TrainOutcome:
    """Validate, build the local model, and check the budget; a TrainOutcome means the device declines."""
    fed, priv = cfg.federated, cfg.privacy
    validate_device_data(data)
    windows = build_windows([data.train], max_len=cfg.model.max_len, stride=0)
    if len(windows) == 0 and priv.mode != "window":  # window-level DP: such a device sends a noise share
        return TrainOutcome(refused=True, reason=f"device {data.device_id}: no training window (history too short)")
    model = build_device_model(cfg, data.num_items, text, data.device_id)
    # a resumed run re-asks the round this device last sent: window-level DP only (each update is private on
    # its own, so sending the identical one again costs nothing); under user-level DP a re-released round's sum
    # over another subset of devices could be differenced against the first, so those devices refuse
    spent = not priv.user_level and priv.mode in EXAMPLE_MODES and any(
        e.round_id == round_id for e in store.ledger(priv, delta=resolve_delta(cfg, max_interactions)).rounds)
    replay = store.replay(round_id) if spent else None
    load_weights(model, global_shared, store, personal=replay[1] if replay else None)
    model.to(resolve_device(fed.device))
    model.set_item_prior(None if item_prior is None else cfg.model.prior_weight * torch.as_tensor(item_prior))
    seed = dropout_seed = fed.seed * 7919 + round_id * 104729 + stable_hash(data.device_id)
    ledger = None
    if priv.distributed and round_id in store.contributed_rounds() and replay is None:
        return TrainOutcome(refused=True, reason=f"already contributed to round {round_id}: a second noisy delta for "
                            "the same round could be differenced against the first")
    noise_seed = seed if priv.reproducible_noise or priv.mode == "none" else store.noise_seed(round_id)
    if priv.mode in EXAMPLE_MODES:
        seed = noise_seed  # DP-SGD noise from a device secret
        ledger = store.ledger(priv, delta=resolve_delta(cfg, max_interactions))
        if any(e.round_id == round_id for e in ledger.rounds) and replay is None:  # a resumed run re-asks
            return TrainOutcome(refused=True, reason=f"already trained in round {round_id}: retraining would "
                                "spend privacy twice", metrics={"epsilon": ledger.epsilon()})
        q, steps = dp_plan(len(windows), batch_size=fed.batch_size, epochs=fed.local_epochs)
        if replay is None and ledger.would_exceed(noise_multiplier=priv.noise_multiplier, sample_rate=q, num_steps=steps):
            eps = ledger.epsilon()
            return TrainOutcome(refused=True, reason=f"budget: epsilon {eps:.3f} would exceed target "
                                f"{priv.target_epsilon} after this round", metrics={"epsilon": eps})
    if replay is None and not priv.user_level and priv.mode in EXAMPLE_MODES:
        store.begin_round(round_id)
    return PreparedRound(data, store, model, windows, seed, ledger, dict(global_shared), noise_seed, dropout_seed,
                         replay[0] if replay else "")


def finish_round(prep: PreparedRound, result: LocalTrainResult, *, cfg: Config, round_id: int) -> TrainOutcome:
    """Record the privacy spend, keep the personal weights on the device, return only the shared ones.

    A replayed round (a resumed run re-asks the round this device last sent) charges nothing new and returns
    the update only if it is bit-identical to the one sent (same start, same seeds); otherwise it refuses."""
    metrics: dict[str, float] = {"train_loss": result.loss}
    keys = shared_keys(prep.model, personal_short_term=cfg.federated.personal_short_term)
    params = dict(prep.model.named_parameters())
    personal = {k: v.detach().cpu() for k, v in params.items() if k not in keys}
    shared = OrderedDict((k, params[k].detach().cpu().numpy().copy()) for k in keys)
    num_examples = result.num_examples
    if cfg.privacy.user_level:  # user-level DP: a clipped, noised delta with a fixed weight of 1 leaves the device
        shared, metrics["delta_norm"] = noisy_delta(shared, prep.global_shared, cfg=cfg, noise_seed=prep.noise_seed)
        num_examples = 1
    elif cfg.privacy.mode == "window":  # minus the noisy sum of clipped per-window gradients, weight 1
        shared = window_update(result, shared, cfg=cfg, noise_seed=prep.noise_seed)
        metrics, num_examples = {}, 1
    digest = update_digest(shared, num_examples)
    if prep.replay_digest and digest != prep.replay_digest:
        return TrainOutcome(refused=True, reason=f"already trained in round {round_id}: the retrained update "
                            "differs from the one sent, and a second one would spend privacy twice")
    if prep.ledger is not None:
        prep.ledger.record(round_id=round_id, noise_multiplier=result.noise_multiplier,  # a replay: no-op
                           sample_rate=result.sample_rate, num_steps=result.steps)
        metrics.update(epsilon=prep.ledger.epsilon(), steps=float(prep.ledger.total_steps),
                       sample_rate=result.sample_rate)
    if not prep.replay_digest:
        prep.store.save_personal(personal)
        if cfg.privacy.distributed:
            prep.store.record_contribution(round_id)  # before the update leaves the device
        if not cfg.privacy.user_level and prep.ledger is not None:
            prep.store.sent_update(round_id, digest)
    return TrainOutcome(shared=shared, num_examples=num_examples, metrics=metrics)


def update_digest(shared: dict[str, np.ndarray], num_examples: int) -> str:
    """SHA-256 over the update's names, dtypes, shapes, bytes and example count."""
    h = hashlib.sha256(str(num_examples).encode())
    for k in sorted(shared):
        v = np.ascontiguousarray(shared[k])
        h.update(f"{k}|{v.dtype.str}|{v.shape}|".encode())
        h.update(v.tobytes())
    return h.hexdigest()


TrainStep = Callable[[Config, list[PreparedRound]], list[LocalTrainResult]]


def local_step(cfg: Config, preps: list[PreparedRound]) -> list[LocalTrainResult]:
    """The training step of a device round, device by device (DP-SGD when the device keeps a ledger).
    A simulation back-end may plug in another step of the same signature (``simulations/backends/cohort.py``)."""
    fed, priv = cfg.federated, cfg.privacy
    results = []
    for prep in preps:
        torch.manual_seed(prep.dropout_seed)  # dropout masks: the same whatever ran before, also after a resume
        if priv.mode == "window":  # no local optimisation: the kept windows' clipped gradients at the global model
            keys = shared_keys(prep.model, personal_short_term=fed.personal_short_term)
            results.append(window_step(prep.model, prep.windows, keys=keys, cfg=cfg, noise_seed=prep.noise_seed,
                                       device=resolve_device(fed.device)))
            continue
        common = dict(epochs=fed.local_epochs, lr=fed.lr, batch_size=fed.batch_size, seed=prep.seed,
                      optimizer=fed.optimizer, device=resolve_device(fed.device))
        if prep.ledger is not None:
            results.append(train_local_dp(prep.model, prep.windows, noise_multiplier=priv.noise_multiplier,
                                          max_grad_norm=priv.max_grad_norm, **common))
        else:
            results.append(train_local(prep.model, prep.windows, **common))
    return results


def device_train(*, data: DeviceData, store: DeviceStore, global_shared: dict[str, np.ndarray], cfg: Config,
                 round_id: int, text: torch.Tensor | None = None, max_interactions: int = 0) -> TrainOutcome:
    """One local training round on plaintext global weights (``client/round.py`` adds decryption and the
    reply). Refuses (without training) past the budget."""
    prep = prepare_round(data=data, store=store, global_shared=global_shared, cfg=cfg, round_id=round_id,
                         text=text, max_interactions=max_interactions)
    if isinstance(prep, TrainOutcome):
        return prep
    return finish_round(prep, local_step(cfg, [prep])[0], cfg=cfg, round_id=round_id)


def device_evaluate(*, data: DeviceData, store: DeviceStore, global_shared: dict[str, np.ndarray], cfg: Config,
                    stage: str, text: torch.Tensor | None = None,
                    item_prior: np.ndarray | None = None) -> tuple[int, int]:
    """1-based full-catalogue ranks of the device's ``stage`` item ("valid" or "test"): (history masked,
    unmasked), from one forward pass."""
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
    model = build_device_model(cfg, data.num_items, text, data.device_id)
    load_weights(model, global_shared, store)
    device = resolve_device(cfg.federated.device)
    model.to(device)
    model.set_item_prior(None if item_prior is None else cfg.model.prior_weight * torch.as_tensor(item_prior))
    history = data.train if stage == "valid" else np.append(data.train, data.valid)
    target = data.valid if stage == "valid" else data.test
    personalize(model, history, cfg=cfg, seed=stable_hash(data.device_id), device=device)
    try:
        ranks = rank_targets_both(model, [history], np.array([target]), num_items=data.num_items,
                                  max_len=cfg.model.max_len, batch_size=1, device=device)
    except ValueError as exc:
        raise ValueError(f"device {data.device_id}: {exc}") from None
    return int(ranks.masked[0]), int(ranks.unmasked[0])


def personalize(model: InterestModel, history: np.ndarray, *, cfg: Config, seed: int,
                device: torch.device | str = "cpu") -> None:
    """Joint DP (``eval.personalize_epochs`` > 0): fine-tune this device's copy of the model on its own
    ``history`` before it ranks, without noise. Only the device's own recommendations use the result; nothing
    of it is sent or stored (evaluation reports the rank it gives, as it reports any rank)."""
    e = cfg.eval
    if not e.personalize_epochs:
        return
    windows = build_windows([np.asarray(history, dtype=np.int64)], max_len=cfg.model.max_len)
    if not len(windows):
        return
    with torch.random.fork_rng(devices=[]):  # dropout draws from this device's seed, whatever ran before
        torch.manual_seed(seed)
        train_local(model, windows, epochs=e.personalize_epochs, lr=e.personalize_lr,
                    batch_size=cfg.federated.batch_size, seed=seed, device=device)
    model.eval()


def validate_device_data(data: DeviceData) -> None:
    """Fail this device (not the round) with a message naming the device and the bad value."""
    items = np.concatenate([np.asarray(data.train, dtype=np.int64), [data.valid, data.test]])
    bad = items[(items < 1) | (items >= data.num_items)]
    if len(bad):
        raise ValueError(f"device {data.device_id}: item index {int(bad[0])} outside the catalogue "
                         f"[1, {data.num_items - 1}] ({len(bad)} bad entries)")
