"""Every Flower Message of a run, both halves of each codec, and the reply type the server loop consumes.

A train/evaluate instruction (server -> device) carries the resolved run config as JSON (parsed once per
process and cached), so simulated and deployed devices need no side channel to know the experiment, plus the
global state: plaintext arrays, the encrypted global sum as raw bytes (absent in round 1), or, in in-process
simulations, the SHA-256 of the state published once on the shared disk (``shared_models/broadcast.py``).
A train reply (device -> server) carries shared weights (plaintext) or an encrypted, signed update (HE).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from shared_models.broadcast import encode_state, fetch, fetch_arrays, publish
from shared_models.config import Config, build_config

log = logging.getLogger(__name__)

ARRAYS = "arrays"  # ArrayRecord: shared weights (plaintext transport)
METRICS = "metrics"  # MetricRecord: num-examples, refused, epsilon, train_loss, rank
CONFIG = "config"  # ConfigRecord: round, stage, run-config JSON, run-dir, reason

KEY_ROUND = "server-round"
KEY_STAGE = "stage"
KEY_CONFIG_JSON = "fedinterest-config"
KEY_RUN_DIR = "run-dir"
KEY_REASON = "reason"
KEY_KEYS_DIR = "keys-dir"
KEY_DEVICE_ID = "device-id"
KEY_SIGNATURE = "signature"
KEY_SIGNED_ROUND = "signed-round"
KEY_BROADCAST = "broadcast"  # SHA-256 of the round's published global state (in-process simulations)
KEY_BROADCAST_DIR = "broadcast-dir"  # where it was published
GLOBAL_SUM = "global-sum"  # ArrayRecord key of the encrypted global sum (raw bytes)
UPDATE = "update"  # ArrayRecord key of a device's encrypted update (raw bytes)
RANK = "rank"  # MetricRecord key of an evaluation reply: the target's rank with the history masked
RANK_UNMASKED = "rank-unmasked"  # the same target's rank with nothing but padding masked


@dataclass
class TrainReply:
    """One device's answer to a train instruction, as the server loop sees it (whatever the transport)."""

    node: int
    shared: dict[str, np.ndarray] | None = None  # plaintext transport
    num_examples: int = 0  # plaintext transport only (under HE the weight is inside the ciphertext)
    refused: bool = False
    reason: str = ""  # why a device declined (e.g. its privacy budget)
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    device_id: str = ""  # HE transport: who signed
    round_id: int = 0  # HE transport: the round the device signed
    payload: bytes | None = None  # HE transport: encrypted weighted update
    signature: bytes = b""


@dataclass(frozen=True)
class Instruction:
    """A decoded train/evaluate instruction, as the device sees it."""

    cfg: Config
    received: Any  # plaintext arrays, encrypted sum bytes, or None (HE, round 1)
    round_id: int
    stage: str
    run_dir: str
    keys_dir: str


@functools.lru_cache(maxsize=8)
def config_from_json(text: str) -> Config:
    """Parse (once per process) the JSON run config a message carries."""
    return build_config(json.loads(text))


def config_to_json(cfg: Config) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def bytes_array(data: bytes) -> Array:
    """A Flower Array carrying raw bytes (no numpy header/copy)."""
    return Array("uint8", (len(data),), "raw.bytes", data)


# ---- server -> device ------------------------------------------------------------------------------------

def instruction_builder(cfg_json: str, received, *, round_id: int, stage: str = "", run_dir: str = "",
                        keys_dir: str = "", broadcast_dir: str = "") -> Callable[[], RecordDict]:
    """A builder of one instruction's content (each message needs its own RecordDict). With ``broadcast_dir``
    the state is published there once and the messages carry its digest."""
    conf = {KEY_ROUND: round_id, KEY_STAGE: stage, KEY_CONFIG_JSON: cfg_json, KEY_RUN_DIR: run_dir,
            KEY_KEYS_DIR: keys_dir}
    if broadcast_dir and (isinstance(received, dict) or received):
        conf.update({KEY_BROADCAST: publish(broadcast_dir, encode_state(received)), KEY_BROADCAST_DIR: broadcast_dir})
        return lambda: RecordDict({ARRAYS: ArrayRecord({}), CONFIG: ConfigRecord(dict(conf))})

    def content() -> RecordDict:
        if isinstance(received, dict):
            arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in received.items()})
        else:
            arrays = ArrayRecord({GLOBAL_SUM: bytes_array(received)} if received else {})
        return RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord(dict(conf))})
    return content


def decode_instruction(msg: Message) -> Instruction:
    conf = msg.content[CONFIG]
    cfg = config_from_json(str(conf[KEY_CONFIG_JSON]))
    arrays = msg.content[ARRAYS]
    if conf.get(KEY_BROADCAST):  # in-process simulation: the state was published once, by digest
        where, digest = str(conf[KEY_BROADCAST_DIR]), str(conf[KEY_BROADCAST])
        received = fetch(where, digest) if cfg.he.enabled else fetch_arrays(where, digest)
    elif cfg.he.enabled:
        received = bytes(arrays[GLOBAL_SUM].data) if GLOBAL_SUM in arrays else None
    else:
        received = {k: a.numpy() for k, a in arrays.items()}
    return Instruction(cfg, received, int(conf[KEY_ROUND]), str(conf.get(KEY_STAGE, "")),
                       str(conf.get(KEY_RUN_DIR, "")), str(conf.get(KEY_KEYS_DIR, "")))


# ---- device -> server ------------------------------------------------------------------------------------

def encode_train_reply(rep: TrainReply) -> RecordDict:
    metrics = {"num-examples": rep.num_examples, "refused": int(rep.refused), **rep.metrics}
    content = RecordDict({
        METRICS: MetricRecord({k: _finite(v) for k, v in metrics.items()}),
        CONFIG: ConfigRecord({KEY_REASON: rep.reason, KEY_DEVICE_ID: rep.device_id, KEY_SIGNED_ROUND: rep.round_id,
                              KEY_SIGNATURE: rep.signature})})
    if rep.payload is not None:
        content[ARRAYS] = ArrayRecord({UPDATE: bytes_array(rep.payload)})
    elif rep.shared:
        content[ARRAYS] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in rep.shared.items()})
    return content


def decode_train_reply(node: int, msg: Message) -> TrainReply:
    metrics = dict(msg.content[METRICS])
    conf = msg.content[CONFIG] if CONFIG in msg.content else {}
    rep = TrainReply(node=node, refused=bool(metrics.pop("refused", 0)), num_examples=int(metrics.pop("num-examples", 0)),
                     reason=str(conf.get(KEY_REASON, "")), device_id=str(conf.get(KEY_DEVICE_ID, "")),
                     round_id=int(conf.get(KEY_SIGNED_ROUND, 0)), signature=bytes(conf.get(KEY_SIGNATURE, b"")),
                     metrics={k: float(v) for k, v in metrics.items()})
    arrays = msg.content[ARRAYS] if ARRAYS in msg.content else {}
    if UPDATE in arrays:
        rep.payload = bytes(arrays[UPDATE].data)
    elif arrays and not rep.refused:
        rep.shared = {k: a.numpy() for k, a in arrays.items()}
    if rep.refused:
        log.info("node %d declined to train: %s", node, rep.reason)
    return rep


def encode_rank(masked: int, unmasked: int) -> RecordDict:
    return RecordDict({METRICS: MetricRecord({RANK: int(masked), RANK_UNMASKED: int(unmasked)})})


def decode_rank(msg: Message) -> tuple[int, int]:
    """(masked, unmasked) ranks of an evaluation reply."""
    record = msg.content[METRICS]
    missing = [k for k in (RANK, RANK_UNMASKED) if k not in record]
    if missing:
        raise ValueError(f"evaluation reply lacks {missing} (expected both {RANK!r} and {RANK_UNMASKED!r})")
    return int(record[RANK]), int(record[RANK_UNMASKED])


def _finite(v):
    return v if isinstance(v, int) or np.isfinite(v) else 0.0
