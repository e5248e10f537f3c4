"""Wiring of the server's signed round log into a run (``RUN_DIR/round_log.jsonl``).

The server's Ed25519 key lives in the run's keys directory (``shared_models.paths.run_keys_dir``: ``he.keys_dir``,
else ``RUN_DIR.keys`` beside the run directory, never inside it): with HE it comes from the key authority
(``server/``), without HE the harness makes one there, so every run's log can be verified by ``fedinterest
audit`` with ``server/signing_ed25519.pub.pem`` of that directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.loop import RoundStats
from server.round_log import RoundLog, aggregate_sha256, code_version, config_hash
from shared_models.atomic_io import atomic_write_bytes
from shared_models.config import Config
from shared_models.paths import mark_keys_dir
from shared_models.crypto import generate_signing_key, load_private_key, save_private_key, save_public_key

LOG_NAME = "round_log.jsonl"
SERVER_KEY = Path("server") / "signing_ed25519.pem"
SERVER_PUB = Path("server") / "signing_ed25519.pub.pem"


def server_signing_key(root: Path) -> Ed25519PrivateKey:
    """The server's signing key in the keys directory ``root``; made (and the directory marked) when absent."""
    if not (root / SERVER_KEY).is_file():
        key = generate_signing_key()
        if not root.exists():
            mark_keys_dir(root)
        (root / "server").mkdir(parents=True, exist_ok=True)
        save_private_key(key, root / SERVER_KEY)
        save_public_key(key.public_key(), root / SERVER_PUB)
    return load_private_key(root / SERVER_KEY, Ed25519PrivateKey)


def open_round_log(run_dir: Path, key: Ed25519PrivateKey, *, last_round: int) -> RoundLog:
    """Open (verifying) the log; lines of rounds after ``last_round`` (a round that did not reach its
    checkpoint before a crash) are dropped from the end, which keeps the hash chain valid."""
    path = run_dir / LOG_NAME
    if path.exists():
        lines = path.read_bytes().splitlines(keepends=True)
        kept = [ln for ln in lines if ln.strip() and json.loads(ln)["round"] <= last_round]
        if len(kept) != len(lines):
            atomic_write_bytes(path, b"".join(kept))
    return RoundLog(path, key)


def log_record(cfg: Config, st: RoundStats, strategy) -> dict[str, Any]:
    rejected = [{"node": int(n), "reason": str(why)} for r, n, why in getattr(strategy, "rejected", [])
                if r == st.round]
    return {"round": int(st.round), "sampled": int(st.sampled), "valid": int(st.valid),
            "refused": int(st.refused), "failed": int(st.failed), "rejected": rejected,
            "contributors": list(st.contributors),  # whose updates the released aggregate holds (the audit
            # checks that each of them charged its ledger for the round)
            "aggregate_sha256": aggregate_sha256(strategy.broadcast()),
            "noise": noise_record(cfg),
            "config_hash": config_hash(cfg.to_dict()), "code_version": code_version(),
            **mask_record(strategy, st.round)}


def mask_record(strategy, round_id: int) -> dict[str, Any]:
    """Under ``he.masking``: how many devices sealed shares (everyone's masks pair with them) and how many joined
    the round with a masked update, and the threshold that protected them."""
    masks = getattr(strategy, "masks", None)
    rnd = getattr(masks, "round", None)
    if rnd is None or rnd.round_id != round_id:
        return {}
    return {"masking": {"sealed": len(rnd.sealed), "ready": len(rnd.ready), "threshold": int(masks.he.mask_threshold)}}


def noise_record(cfg: Config) -> dict[str, Any]:
    p = cfg.privacy
    out: dict[str, Any] = {"mode": p.mode, "noise_multiplier": float(p.noise_multiplier),
                           "max_grad_norm": float(p.max_grad_norm)}
    if p.user_level:  # what the devices were told to add before encrypting
        out.update(user_noise_multiplier=float(p.user_noise_multiplier), user_clip=float(p.user_clip),
                   min_train_nodes=int(cfg.federated.min_train_nodes), sampling="poisson",
                   clients_per_round=int(cfg.federated.clients_per_round))
    if p.mode == "window":  # the window-level noise and sampling the devices were told
        out.update(min_train_nodes=int(cfg.federated.min_train_nodes), sampling="poisson",
                   clients_per_round=int(cfg.federated.clients_per_round),
                   window_sample_rate=float(p.window_sample_rate), expected_batch=float(p.expected_batch))
    return out
