"""metrics.json: test metrics (both ranking protocols), privacy (from every device ledger), HE costs, timing,
the full config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from server.loop import RoundStats
from shared_models.config import Config
from shared_models.train.evaluation import protocols
from shared_models.train.metrics import METRIC_NAMES
from shared_models.privacy import PrivacyLedger, replace_one_epsilon
from shared_models.privacy.units import DEVICE_LEDGER_UNIT, resolve_delta

log = logging.getLogger(__name__)


UNIT_DEFINITION = ("add/remove one training window: the device's history is cut from its end into disjoint "
                   "windows of up to max_len + 1 consecutive interactions; each is one DP-SGD sample. "
                   "Changing one interaction's item (replace-one) is covered at epsilon_replace_one.")


def ledger_summaries(cfg: Config, run_dir: Path, pop) -> list[dict[str, Any]]:
    """Every readable device ledger's summary (the harness plays every device, so it may read them). A
    corrupt ledger is that device's problem, never the run's: it is skipped with a warning and listed by
    ``unreadable_ledgers``."""
    return _read_ledgers(cfg, run_dir, pop)[0]


def unreadable_ledgers(cfg: Config, run_dir: Path, pop) -> list[str]:
    """Device ledgers (``devices/<dir>/ledger.json``, relative to the run) that could not be read."""
    return _read_ledgers(cfg, run_dir, pop)[1]


def _read_ledgers(cfg: Config, run_dir: Path, pop) -> tuple[list[dict[str, Any]], list[str]]:
    p = cfg.privacy
    if p.mode == "none":
        return [], []
    delta = resolve_delta(cfg, pop.max_interactions)
    out, bad = [], []
    for f in sorted((run_dir / "devices").glob("*/ledger.json")):
        try:
            ledger = PrivacyLedger.open(f, accountant=p.accountant, delta=delta, unit=DEVICE_LEDGER_UNIT,
                                        target_epsilon=p.target_epsilon)
            history = [(e.noise_multiplier, e.sample_rate, e.num_steps) for e in ledger.rounds]
            out.append({**ledger.to_summary(), "epsilon_replace_one": replace_one_epsilon(history, delta=delta)})
        except Exception as exc:  # a device's corrupt store fails that device only
            log.warning("%s: unreadable device ledger, left out of the privacy summary (%s: %s)", f,
                        type(exc).__name__, str(exc)[:200])
            bad.append(str(f.relative_to(run_dir)))
    return out, bad


def ledger_epsilons(cfg: Config, run_dir: Path, pop) -> tuple[float, float]:
    eps = [s["epsilon"] for s in ledger_summaries(cfg, run_dir, pop)]
    return (max(eps), float(np.mean(eps))) if eps else (0.0, 0.0)


def privacy_summary(cfg: Config, run_dir: Path, pop, stats: list[RoundStats]) -> dict[str, Any]:
    """Largest epsilon over devices (with its device's steps and sample rate), the mean, and refusals."""
    p = cfg.privacy
    off = p.mode == "none"
    out: dict[str, Any] = {"mode": p.mode, "unit": None if off else DEVICE_LEDGER_UNIT, "epsilon": None, "delta": None,
                           "target_epsilon": None if off else p.target_epsilon,
                           "noise_multiplier": 0.0 if off else p.noise_multiplier,
                           "max_grad_norm": None if off else p.max_grad_norm,
                           "sample_rate": None, "steps": None, "epsilon_mean": None, "accountant": p.accountant,
                           "refusals": int(sum(s.refused for s in stats)), "devices_trained": 0,
                           "unit_definition": None if off else UNIT_DEFINITION, "epsilon_replace_one": None,
                           "noise_source": None if off else ("public seed (TESTING ONLY: not private)"
                                                             if p.reproducible_noise else "device secret")}
    if off:
        return out
    summaries, unreadable = _read_ledgers(cfg, run_dir, pop)
    if unreadable:  # the claim below does not cover these devices: say so
        out["unreadable_ledgers"] = unreadable
    out["delta"] = resolve_delta(cfg, pop.max_interactions)
    out["ledgers"] = "read from RUN_DIR/devices" if summaries else "on the devices (not visible to the server)"
    if summaries:
        worst = max(summaries, key=lambda s: s["epsilon"])
        out.update(epsilon=worst["epsilon"], sample_rate=worst["sample_rate"], steps=worst["steps"],
                   epsilon_mean=float(np.mean([s["epsilon"] for s in summaries])), devices_trained=len(summaries),
                   epsilon_replace_one=max(s["epsilon_replace_one"] for s in summaries))
    return out


USER_UNIT_DEFINITION = ("add/remove one whole device (user): everything the device contributes to the shared "
                        "model in every round, whatever its number of interactions. Personal parameters never "
                        "leave the device and are not covered (nobody else sees them).")


def user_privacy_summary(cfg: Config, run_dir: Path, pop, stats: list[RoundStats], accountant) -> dict[str, Any]:
    """User-level claim from the server's accountant; in example+user mode the device ledgers ride along."""
    p, f = cfg.privacy, cfg.federated
    example = privacy_summary(cfg, run_dir, pop, stats) if p.mode == "example+user" else None
    return {"mode": p.mode, "unit": "user", **_accounted(cfg, stats, accountant),
            "target_epsilon": p.user_target_epsilon, "noise_multiplier": p.user_noise_multiplier,
            "max_grad_norm": p.user_clip,
            "unit_definition": USER_UNIT_DEFINITION,
            "mechanism": (f"DP-FedAvg, Poisson client sampling q={accountant.q:.6g}; each device clips its shared "
                          f"delta to L2 {p.user_clip} and adds N(0, ({p.user_noise_multiplier}*{p.user_clip})^2/"
                          f"{f.min_train_nodes}) per coordinate before encryption; fixed weight 1, fixed "
                          f"denominator {f.clients_per_round}; RDP accountant over {accountant.rounds} rounds"
                          + _prior_words(p, accountant, what=f"each device's distinct-item histogram clipped to L2 "
                                                                  f"{p.prior_clip}")),
            **_distributed_common(cfg, stats, noise_multiplier=p.user_noise_multiplier, sections="section 5",
                                  what="noisy delta"),
            "example": example}


WINDOW_UNIT_DEFINITION = ("add/remove one training window anywhere in the population (a disjoint slice of one "
                          "device's training history, so also any single interaction in it): a device's whole "
                          "history is NOT protected as one unit.")


def window_privacy_summary(cfg: Config, stats: list[RoundStats], accountant) -> dict[str, Any]:
    """Window-level claim of distributed DP-SGD, from the server's accountant (``privacy.mode = window``)."""
    p, f = cfg.privacy, cfg.federated
    return {"mode": p.mode, "unit": "window", **_accounted(cfg, stats, accountant),
            "target_epsilon": p.target_epsilon, "noise_multiplier": p.noise_multiplier,
            "max_grad_norm": p.max_grad_norm,
            "window_sample_rate": p.window_sample_rate, "expected_batch": p.expected_batch,
            "unit_definition": WINDOW_UNIT_DEFINITION,
            "mechanism": (f"distributed DP-SGD: Poisson client sampling q_d={f.clients_per_round}/N, each sampled "
                          f"device keeps each training window with probability {p.window_sample_rate} (population "
                          f"rate q={accountant.q:.6g}), clips each kept window's gradient of the shared model to "
                          f"L2 {p.max_grad_norm}, sums them and adds N(0, ({p.noise_multiplier}*{p.max_grad_norm})^2/"
                          f"{f.min_train_nodes}) per coordinate before encryption; weight 1, global -= server_lr * "
                          f"sum / {p.expected_batch:g}; RDP accountant over {accountant.rounds} rounds"
                          + _prior_words(p, accountant, what=f"the sum of each device's training windows' "
                                         f"distinct-item histograms, each clipped to L2 {p.prior_clip}, every item "
                                         f"capped at {p.prior_clip}")),
            **_distributed_common(cfg, stats, noise_multiplier=p.noise_multiplier, sections="sections 5 and 7",
                                  what="noisy sum"),
            "example": None}


def _prior_words(p, accountant, *, what: str) -> str:
    """The mechanism's clause for the popularity prior's release, when the ledger charged one."""
    if not accountant.prior_charged:
        return ""
    return (f", composed with the popularity prior's release ({what}; noise multiplier "
            f"{p.prior_noise_multiplier} on the sum, sample rate 1, once)")


def _accounted(cfg: Config, stats: list[RoundStats], accountant) -> dict[str, Any]:
    """The server accountant's figures and the participation counts of a distributed-noise claim."""
    return {"epsilon": accountant.epsilon, "delta": cfg.privacy.delta, "sample_rate": accountant.q,
            "steps": accountant.rounds, "epsilon_mean": accountant.epsilon, "accountant": cfg.privacy.accountant,
            "refusals": int(sum(s.refused for s in stats)), "device_updates": int(sum(s.valid for s in stats))}


def _distributed_common(cfg: Config, stats: list[RoundStats], *, noise_multiplier: float, sections: str,
                        what: str) -> dict[str, Any]:
    """The fields every distributed-noise claim (user, window) reports the same way."""
    p, f = cfg.privacy, cfg.federated
    contributors = [s.valid for s in stats if s.valid >= f.min_train_nodes]
    return {
        "holds_against": (
            f"everyone who sees the model; the server sees only the encrypted sum (threat model {sections})"
            if cfg.he.enabled else
            f"those who see the model, NOT the server: without HE it sees each device's {what}, whose own "
            f"noise multiplier is only {noise_multiplier / f.min_train_nodes ** 0.5:.3g} per round"),
        "min_train_nodes": f.min_train_nodes, "server_lr": f.server_lr,
        "min_contributors_in_released_rounds": min(contributors) if contributors else 0,
        "noise_source": ("public seed (TESTING ONLY: not private)" if p.reproducible_noise else "device secret"),
        "ledger": "RUN_DIR/server/user_ledger.json"}


def he_summary(cfg: Config, stats: list[RoundStats], strategy) -> dict[str, Any]:
    if not cfg.he.enabled:
        return {"enabled": False}

    def mean(key: str) -> float:
        values = [v for s in stats for v in s.timings.get(key, [])]
        return float(np.mean(values)) if values else 0.0

    n_params = int(getattr(strategy, "n_params", 0))
    bytes_per_update = mean("bytes_per_update")
    return {"enabled": True, "scheme": "ckks", "poly_modulus_degree": cfg.he.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(cfg.he.coeff_mod_bit_sizes), "scale_bits": cfg.he.to_he_config().scale_bits,
            "bytes_per_update": bytes_per_update, "params_per_update": n_params,
            "bytes_per_param": bytes_per_update / n_params if n_params else 0.0,
            "encrypt_s": mean("encrypt_s"), "decrypt_s": mean("decrypt_s"),
            "aggregate_s": float(np.mean([s.aggregate_s for s in stats])) if stats else 0.0,
            "rejected_updates": int(sum(s.rejected for s in stats)),
            "sum_checks": int(getattr(strategy, "sum_checks", 0)),  # questions to key holders (confirm + search)
            "masking": masks.summary() if (masks := getattr(strategy, "masks", None)) is not None else {"enabled": False},
            "rejections": [{"round": r, "node": n, "reason": why} for r, n, why in getattr(strategy, "rejected", [])]}


def build_result(cfg: Config, run_dir: Path, pop, stats: list[RoundStats], test: dict[str, float], strategy,
                 wall: float, *, accountant=None) -> dict[str, Any]:
    updates = int(sum(s.valid + s.refused for s in stats))
    if accountant is None:
        privacy = privacy_summary(cfg, run_dir, pop, stats)
    elif cfg.privacy.mode == "window":
        privacy = window_privacy_summary(cfg, stats, accountant)
    else:
        privacy = user_privacy_summary(cfg, run_dir, pop, stats, accountant)
    chosen, other = protocols(cfg.eval.mask_history)
    return {
        "protocol": chosen,  # eval.mask-history: "masked" removes the user's history from the ranking
        "metrics": {k: test.get(k, 0.0) for k in METRIC_NAMES},
        f"metrics_{other}": {k: test.get(f"{other}_{k}", 0.0) for k in METRIC_NAMES},
        "evaluated_devices": int(test.get("evaluated", 0)),
        "privacy": privacy,
        "he": he_summary(cfg, stats, strategy),
        "rounds": len(stats),
        "clients_per_round": round(float(np.mean([s.sampled for s in stats])), 2) if stats else 0,  # Poisson: varies
        "num_clients": len(pop.devices),
        "timing": {"wall_s": round(wall, 2), "client_updates": updates,
                   "client_updates_per_s": round(updates / wall, 3) if wall > 0 else 0.0,
                   "round_s_mean": float(np.mean([s.wall_s for s in stats])) if stats else 0.0},
        "config": cfg.to_dict(),
    }


def privacy_line(p: dict[str, Any]) -> str:
    """The one-sentence privacy claim of a metrics.json ``privacy`` block, as the CLI prints it."""
    if p["mode"] == "none":
        return "privacy: none (no DP guarantee)"
    if p["epsilon"] is None:
        return f"privacy: {p.get('ledgers', 'no epsilon recorded')}"
    if p["unit"] == "user":
        line = (f"privacy: ({p['epsilon']:.3f}, {p['delta']:.1e})-DP for adding/removing one whole device (user) "
                f"from the shared model, over {p['steps']} rounds, against {p['holds_against']}; {p['mechanism']}; noise from "
                f"{p['noise_source']}")
        ex = p.get("example") or {}
        if ex.get("epsilon") is not None:
            line += f"; plus DP-SGD on devices: epsilon <= {ex['epsilon']:.3f} per training window"
        return line
    if p["mode"] == "window":
        return (f"privacy: ({p['epsilon']:.3f}, {p['delta']:.1e})-DP for adding/removing one training window "
                f"anywhere in the population, over {p['steps']} rounds, against {p['holds_against']}; "
                f"{p['mechanism']}; noise from {p['noise_source']}")
    mean = p["epsilon_mean"] if p["epsilon_mean"] is not None else 0.0
    return (f"privacy: ({p['epsilon']:.3f}, {p['delta']:.1e})-DP per device for adding/removing one "
            f"training {p['unit']} [largest over {p['devices_trained']} devices; mean {mean:.3f}]; "
            f"changing one interaction: epsilon <= {p['epsilon_replace_one'] or 0:.3f}; accountant "
            f"{p['accountant']}, sigma {p['noise_multiplier']}, clip {p['max_grad_norm']}, "
            f"refusals {p['refusals']}, noise from {p['noise_source']}")
