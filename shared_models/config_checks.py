"""Range checks of the typed config that types alone cannot express; each error names its key."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared_models.config import Config

MODEL_KINDS = ("pop", "long", "short", "long-short")
PRIVACY_MODES = ("none", "example", "user", "example+user", "window")
USER_MODES = ("user", "example+user")  # device-level DP of the shared model (distributed noise)
# noise added once to the (encrypted) sum, split over devices, accounted by the server: user modes and window
DISTRIBUTED_MODES = USER_MODES + ("window",)
SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam")  # server/optimizers.py
ENCODING_SIGMAS = 8  # a noisy contribution's encoding range leaves room for this many noise std devs


class ConfigError(ValueError):
    """A configuration key is unknown, ill-typed or out of range; the message names the key."""


def check(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': expected {expected}, got {got!r}")


def validate(cfg: "Config") -> "Config":
    """Range checks that types alone cannot express; raise ConfigError naming the key."""
    check(cfg.model.kind in MODEL_KINDS, "model.kind", f"one of {MODEL_KINDS}", cfg.model.kind)
    for key in ("hidden", "max_len", "short_len", "num_layers", "num_heads", "inner"):
        check(getattr(cfg.model, key) > 0, f"model.{key}", "> 0", getattr(cfg.model, key))
    check(cfg.model.hidden % cfg.model.num_heads == 0, "model.num_heads", "a divisor of model.hidden",
          cfg.model.num_heads)
    check(0.0 <= cfg.model.dropout < 1.0, "model.dropout", "in [0, 1)", cfg.model.dropout)
    check(cfg.model.short_len <= cfg.model.max_len, "model.short_len", "<= model.max_len",
          cfg.model.short_len)
    check(cfg.model.item_ids or cfg.model.text_embeddings, "model.item_ids",
          "true unless model.text_embeddings = true (items need some representation)", cfg.model.item_ids)
    check(not cfg.model.content or (bool(cfg.model.content_horizons)
                                    and all(0 < h <= cfg.model.max_len for h in cfg.model.content_horizons)),
          "model.content_horizons", "a non-empty list of window lengths in [1, model.max_len]",
          list(cfg.model.content_horizons))
    check(not cfg.model.neural_gate or cfg.model.neural_gate_init != 0
          or (cfg.model.kind == "long-short" and cfg.model.aux_weight > 0), "model.neural_gate_init",
          "!= 0 unless model.kind = 'long-short' with model.aux_weight > 0 (at 0 nothing else trains the encoders)",
          cfg.model.neural_gate_init)
    check(cfg.train.lr > 0, "train.lr", "> 0", cfg.train.lr)
    check(cfg.train.batch_size > 0, "train.batch_size", "> 0", cfg.train.batch_size)
    check(0 <= cfg.train.window_stride <= cfg.model.max_len, "train.window_stride",
          "in [0, model.max_len] (a longer stride would leave targets out)", cfg.train.window_stride)
    check(cfg.train.max_train_s >= 0, "train.max_train_s", ">= 0 (0 = no cap)", cfg.train.max_train_s)
    check(cfg.train.device in ("cpu", "cuda", "auto"), "train.device", "cpu | cuda | auto",
          cfg.train.device)
    check(cfg.data.min_interactions >= 3, "data.min_interactions", ">= 3", cfg.data.min_interactions)
    _validate_federated(cfg)
    _validate_masking(cfg)
    return cfg


def _validate_masking(cfg: "Config") -> None:
    """Pairwise masks (``he.masking``): each device masks with at least ``mask_threshold`` peers, so the server
    with fewer than that many colluding devices never holds all of one update's masks."""
    he = cfg.he
    if not he.masking:
        return
    check(he.enabled, "he.masking", "false unless he.enabled = true (the masks ride on CKKS ciphertexts)",
          he.masking)
    check(he.mask_neighbours >= 3 and he.mask_neighbours % 2 == 1, "he.mask_neighbours", "odd and >= 3",
          he.mask_neighbours)
    check(2 <= he.mask_threshold < he.mask_neighbours, "he.mask_threshold",
          f"in [2, he.mask_neighbours = {he.mask_neighbours}) (a device masks with mask_neighbours - 1 peers, "
          "at least mask_threshold of them)", he.mask_threshold)
    check(cfg.federated.min_train_nodes > he.mask_threshold, "federated.min_train_nodes",
          f"> he.mask_threshold = {he.mask_threshold} (a masked round needs more devices than the threshold)",
          cfg.federated.min_train_nodes)
    if cfg.privacy.prior:
        check(cfg.privacy.prior_min_contributors > he.mask_threshold, "privacy.prior_min_contributors",
              f"> he.mask_threshold = {he.mask_threshold} with he.masking = true",
              cfg.privacy.prior_min_contributors)


def _validate_federated(cfg: "Config") -> None:
    f, p = cfg.federated, cfg.privacy
    for key in ("num_server_rounds", "clients_per_round", "local_epochs", "batch_size", "min_train_nodes"):
        check(getattr(f, key) >= 1, f"federated.{key}", ">= 1", getattr(f, key))
    check(f.server_optimizer in SERVER_OPTIMIZERS, "federated.server_optimizer", " | ".join(SERVER_OPTIMIZERS),
          f.server_optimizer)
    if f.server_optimizer != "fedavg":
        check(not cfg.he.enabled, "federated.server_optimizer",
              "'fedavg' with he.enabled = true (the server never holds the model)", f.server_optimizer)
        check(not p.distributed, "federated.server_optimizer",
              f"'fedavg' with privacy.mode = {p.mode!r} (its decoding is fixed: use federated.server_lr)",
              f.server_optimizer)
    check(0 <= f.server_momentum < 1, "federated.server_momentum", "in [0, 1)", f.server_momentum)
    check(0 <= f.server_beta2 < 1, "federated.server_beta2", "in [0, 1)", f.server_beta2)
    check(f.server_tau > 0, "federated.server_tau", "> 0", f.server_tau)
    check(0 <= f.server_ema < 1, "federated.server_ema", "in [0, 1)", f.server_ema)
    if f.server_ema:
        check(not cfg.he.enabled, "federated.server_ema",
              "0 with he.enabled = true (the server must hold the model)", f.server_ema)
    check(cfg.eval.personalize_epochs >= 0, "eval.personalize_epochs", ">= 0", cfg.eval.personalize_epochs)
    check(cfg.eval.personalize_lr > 0, "eval.personalize_lr", "> 0", cfg.eval.personalize_lr)
    check(0 <= f.server_average <= 1024, "federated.server_average", "in 0..1024", f.server_average)
    if f.server_average:
        check(not f.server_ema, "federated.server_average",
              "0 when federated.server_ema is set (one average of the released models)", f.server_average)
        check(not cfg.he.enabled or p.distributed, "federated.server_average",
              "0 with he.enabled = true and privacy.mode none or example (a blind server's sum of FedAvg rounds "
              "decodes to their mean weighted by each round's total weight, not the mean of the models)",
              f.server_average)
    check(f.max_examples >= 1, "federated.max_examples", ">= 1", f.max_examples)
    check(0 < f.max_abs_weight < float("inf"), "federated.max_abs_weight", "finite and > 0", f.max_abs_weight)
    check(f.max_in_flight >= 0, "federated.max_in_flight", ">= 0 (0 = automatic)", f.max_in_flight)
    check(0.0 <= f.fraction_train <= 1.0, "federated.fraction_train", "in [0, 1]", f.fraction_train)
    check(f.lr > 0, "federated.lr", "> 0", f.lr)
    check(f.eval_every >= 0, "federated.eval_every", ">= 0", f.eval_every)
    check(f.patience >= 0, "federated.patience", ">= 0", f.patience)
    if f.patience:
        check(f.keep_best, "federated.patience", "0 unless federated.keep_best = true", f.patience)
    if f.keep_best:
        check(f.eval_every > 0, "federated.keep_best", "false with federated.eval_every = 0 (nothing to "
              "select on)", f.keep_best)
        check(not p.distributed, "federated.keep_best", "false with distributed DP (selecting on devices' "
              "validation items would spend privacy the accountant does not count)", f.keep_best)
    check(f.optimizer in ("adam", "sgd"), "federated.optimizer", "adam | sgd", f.optimizer)
    check(f.backend in ("ray", "inline", "cohort"), "federated.backend", "ray | inline | cohort", f.backend)
    if f.backend == "cohort":
        check(p.mode == "example", "privacy.mode", "'example' with federated.backend = cohort", p.mode)
        check(cfg.model.dropout == 0.0, "model.dropout", "0 with federated.backend = cohort",
              cfg.model.dropout)
        check(f.cohort_size >= 1, "federated.cohort_size", ">= 1", f.cohort_size)
        check(not cfg.model.strict_short, "model.strict_short", "false with federated.backend = cohort",
              cfg.model.strict_short)
    check(f.device in ("cpu", "cuda", "auto"), "federated.device", "cpu | cuda | auto", f.device)
    check(p.mode in PRIVACY_MODES, "privacy.mode", f"one of {PRIVACY_MODES}", p.mode)
    if p.user_level:
        _validate_user_level(cfg)
    if p.mode == "window":
        _validate_window_level(cfg)
    if p.prior:
        check(p.mode in ("none", "window") or p.user_level, "privacy.prior", "false with privacy.mode = 'example' "
              "(the prior is a release the server accounts; use mode 'user', 'example+user' or 'window')", p.prior)
        check(p.prior_clip > 0, "privacy.prior_clip", "> 0", p.prior_clip)
        check(p.prior_noise_multiplier >= 0 if p.mode == "none" else p.prior_noise_multiplier > 0,
              "privacy.prior_noise_multiplier", "> 0 (>= 0 with privacy.mode = 'none')", p.prior_noise_multiplier)
        check(p.prior_min_contributors >= 1, "privacy.prior_min_contributors", ">= 1", p.prior_min_contributors)
        check(f.backend != "cohort", "federated.backend", "ray | inline with privacy.prior", f.backend)
        if cfg.he.enabled:  # an honest contribution must fit the encoding
            from shared_models.privacy.popularity import contribution_bound

            bound = contribution_bound(clip=p.prior_clip, noise_multiplier=p.prior_noise_multiplier,
                                       min_contributors=p.prior_min_contributors, sigmas=ENCODING_SIGMAS)
            check(cfg.he.clip_range >= bound, "he.clip_range",
                  f">= privacy.prior_clip + {ENCODING_SIGMAS} prior noise-share std = {bound:.4g} (a popularity "
                  "prior contribution must fit the encoding)", cfg.he.clip_range)
    if p.mode != "none":
        check(p.noise_multiplier > 0, "privacy.noise_multiplier", "> 0", p.noise_multiplier)
        check(p.max_grad_norm > 0, "privacy.max_grad_norm", "> 0", p.max_grad_norm)
        check(p.target_epsilon > 0, "privacy.target_epsilon", "> 0", p.target_epsilon)
        check(0 <= p.delta < 1, "privacy.delta", "in [0, 1)", p.delta)


def _validate_user_level(cfg: "Config") -> None:
    f, p = cfg.federated, cfg.privacy
    for key in ("user_clip", "user_noise_multiplier", "user_target_epsilon", "delta"):
        check(getattr(p, key) > 0, f"privacy.{key}", "> 0 with user-level DP", getattr(p, key))
    check(f.server_lr > 0, "federated.server_lr", "> 0", f.server_lr)
    check(f.fraction_train == 0, "federated.fraction_train",
          "0 with user-level DP (clients_per_round sets the Poisson rate and the fixed denominator)",
          f.fraction_train)
    _check_noisy_sum_encoding(cfg, clip=p.user_clip, noise_multiplier=p.user_noise_multiplier,
                              clip_key="user_clip", mode="user-level DP", what="a noisy delta coordinate")


def _validate_window_level(cfg: "Config") -> None:
    """Window-level distributed DP-SGD: per-window clip ``max_grad_norm``, noise multiplier ``noise_multiplier``."""
    f, p = cfg.federated, cfg.privacy
    check(0 < p.window_sample_rate <= 1, "privacy.window_sample_rate", "in (0, 1]", p.window_sample_rate)
    check(p.expected_batch > 0, "privacy.expected_batch", "> 0 (the public denominator of the noisy gradient sum)",
          p.expected_batch)
    check(p.delta > 0, "privacy.delta", "> 0 with privacy.mode = 'window' (one delta for the whole population)",
          p.delta)
    check(f.server_lr > 0, "federated.server_lr", "> 0", f.server_lr)
    check(f.fraction_train == 0, "federated.fraction_train",
          "0 with privacy.mode = 'window' (clients_per_round sets the Poisson rate)", f.fraction_train)
    check(not f.personal_short_term, "federated.personal_short_term",
          "false with privacy.mode = 'window' (a window's shared gradient would depend on personal weights trained "
          "on the device's other windows, so one window could move every other window's gradient)",
          f.personal_short_term)
    _check_noisy_sum_encoding(cfg, clip=p.max_grad_norm, noise_multiplier=p.noise_multiplier,
                              clip_key="max_grad_norm", mode="privacy.mode = 'window'",
                              what="one window's clipped gradient plus a noise share")


def _check_noisy_sum_encoding(cfg: "Config", *, clip: float, noise_multiplier: float, clip_key: str, mode: str,
                              what: str) -> None:
    """Under HE a clipped, noised contribution is summed over rounds in float mode and must fit the encoding."""
    he = cfg.he
    if not he.enabled:
        return
    check(he.pack_bits == 0, "he.pack_bits", f"0 (float mode) with {mode}: noisy sums are summed over rounds",
          he.pack_bits)
    bound = clip + ENCODING_SIGMAS * noise_multiplier * clip / math.sqrt(cfg.federated.min_train_nodes)
    check(he.clip_range >= bound, "he.clip_range",
          f">= {clip_key} + {ENCODING_SIGMAS} device noise std = {bound:.4g} "
          f"({what} must fit the encoding)", he.clip_range)
