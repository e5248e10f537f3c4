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
KEY_ERROR = "error"  # the kind of a device's failure (its exception's name only: the message could carry
# decrypted values, e.g. a total weight, that the server must not learn)
UNDECODABLE = "DecryptionError"  # how a device's error starts when the global sum it received does not decrypt
KEY_RUN_ID = "run-id"  # the run's nonce (server/run_id.py): devices sign it with their update
GLOBAL_SUM = "global-sum"  # ArrayRecord key of the encrypted global sum (raw bytes)
UPDATE = "update"  # ArrayRecord key of a device's encrypted update (raw bytes)
RANK = "rank"  # MetricRecord key of an evaluation reply: the target's rank with the history masked
RANK_UNMASKED = "rank-unmasked"  # the same target's rank with nothing but padding masked
PRIOR = "prior"  # ArrayRecord: the released popularity prior (encrypted sum as raw bytes, or plaintext counts)
PRIOR_SUM = "prior-sum"  # its key when encrypted


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
    invalid: str = ""  # why the reply could not be decoded (a malformed reply: the loop rejects it)


@dataclass(frozen=True)
class Instruction:
    """A decoded train/evaluate instruction, as the device sees it."""

    cfg: Config
    received: Any  # plaintext arrays, encrypted sum bytes, or None (HE, round 1)
    round_id: int
    stage: str
    run_dir: str
    keys_dir: str
    prior: Any = None  # the released popularity prior, if the run has one
    run_id: str = ""


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
                        keys_dir: str = "", broadcast_dir: str = "", prior=None,
                        run_id: str = "") -> Callable[[], RecordDict]:
    """A builder of one instruction's content (each message needs its own RecordDict). With ``broadcast_dir``
    the state is published there once and the messages carry its digest. ``prior``: the released popularity
    prior (small: it travels in every message)."""
    conf = {KEY_ROUND: round_id, KEY_STAGE: stage, KEY_CONFIG_JSON: cfg_json, KEY_RUN_DIR: run_dir,
            KEY_KEYS_DIR: keys_dir, KEY_RUN_ID: run_id}
    if broadcast_dir and (isinstance(received, dict) or received):
        conf.update({KEY_BROADCAST: publish(broadcast_dir, encode_state(received)), KEY_BROADCAST_DIR: broadcast_dir})
        return lambda: _with_prior(RecordDict({ARRAYS: ArrayRecord({}), CONFIG: ConfigRecord(dict(conf))}), prior)

    def content() -> RecordDict:
        if isinstance(received, dict):
            arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in received.items()})
        else:
            arrays = ArrayRecord({GLOBAL_SUM: bytes_array(received)} if received else {})
        return _with_prior(RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord(dict(conf))}), prior)
    return content


def _with_prior(content: RecordDict, prior) -> RecordDict:
    if isinstance(prior, (bytes, bytearray)) and prior:
        content[PRIOR] = ArrayRecord({PRIOR_SUM: bytes_array(bytes(prior))})
    elif isinstance(prior, dict):
        content[PRIOR] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in prior.items()})
    return content


def _decode_prior(msg: Message):
    if PRIOR not in msg.content:
        return None
    record = msg.content[PRIOR]
    if PRIOR_SUM in record:
        return bytes(record[PRIOR_SUM].data)
    return {k: a.numpy() for k, a in record.items()}


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
                       str(conf.get(KEY_RUN_DIR, "")), str(conf.get(KEY_KEYS_DIR, "")), _decode_prior(msg),
                       str(conf.get(KEY_RUN_ID, "")))


# ---- device -> server ------------------------------------------------------------------------------------

def encode_train_reply(rep: TrainReply) -> RecordDict:
    metrics = {"num-examples": rep.num_examples, "refused": int(rep.refused), **rep.metrics}
    content = RecordDict({
        METRICS: MetricRecord({k: _finite(v) for k, v in metrics.items()}),
        CONFIG: ConfigRecord({KEY_REASON: rep.reason, KEY_DEVICE_ID: rep.device_id, KEY_SIGNED_ROUND: rep.round_id,
                              KEY_SIGNATURE: rep.signature, KEY_ERROR: rep.error.split(":", 1)[0][:80]})})
    if rep.payload is not None:
        content[ARRAYS] = ArrayRecord({UPDATE: bytes_array(rep.payload)})
    elif rep.shared:
        content[ARRAYS] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in rep.shared.items()})
    return content


MAX_ROUND_ID = 2 ** 63 - 1  # what a signed round id can be (u64 in the signature, int64 on the wire)
MAX_RANK = 2 ** 31 - 1  # a rank is 1-based among the items; anything above is no item count
MAX_METRIC_KEYS = 64  # an honest reply carries a handful of metrics


class ReplyError(ValueError):
    """A device's reply that does not have the shape every honest device sends."""


def decode_train_reply(node: int, msg: Message) -> TrainReply:
    """The reply as a TrainReply; never raises. Every field is checked for type, finiteness and range here
    (shapes, counts and magnitudes against the server's own config happen in the strategy): a malformed
    reply comes back with ``invalid`` set, which the round loop logs as a rejected update."""
    try:
        rep = _decode_train_reply(node, msg)
    except Exception as exc:  # hostile bytes: whatever they break, this reply is rejected, the round goes on
        reason = f"malformed reply: {exc if isinstance(exc, ReplyError) else f'{type(exc).__name__}: {exc}'}"
        log.warning("node %d: %s", node, reason[:300])
        return TrainReply(node=node, invalid=reason[:300])
    if rep.refused:
        log.info("node %d declined to train: %s", node, rep.reason)
    return rep


def _record(content, key: str, kind: type, *, required: bool):
    if key not in content:
        if required:
            raise ReplyError(f"no {key!r} record")
        return kind({})
    rec = content[key]
    if not isinstance(rec, kind):
        raise ReplyError(f"record {key!r} is a {type(rec).__name__}, expected {kind.__name__}")
    return rec


def _int_field(value, key: str, lo: int, hi: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ReplyError(f"{key!r} must be an integer in [{lo}, {hi}], got {_show(value)}")
    return int(value)


def _typed(value, key: str, kind: type):
    if not isinstance(value, kind):
        raise ReplyError(f"{key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _show(value) -> str:
    return repr(value)[:60]


def _decode_train_reply(node: int, msg: Message) -> TrainReply:
    content = msg.content
    metrics = dict(_record(content, METRICS, MetricRecord, required=True))
    if len(metrics) > MAX_METRIC_KEYS:
        raise ReplyError(f"{len(metrics)} metrics (at most {MAX_METRIC_KEYS})")
    refused = _int_field(metrics.pop("refused", 0), "refused", 0, 1) == 1
    num_examples = _int_field(metrics.pop("num-examples", 0), "num-examples", 0, MAX_ROUND_ID)
    values = {}
    for k, v in metrics.items():
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not np.isfinite(float(v)):
            raise ReplyError(f"metric {str(k)[:40]!r} must be a finite number, got {_show(v)}")
        values[str(k)] = float(v)
    conf = _record(content, CONFIG, ConfigRecord, required=False)
    rep = TrainReply(node=node, refused=refused, num_examples=num_examples, metrics=values,
                     reason=_typed(conf.get(KEY_REASON, ""), KEY_REASON, str)[:300],
                     device_id=_typed(conf.get(KEY_DEVICE_ID, ""), KEY_DEVICE_ID, str),
                     round_id=_int_field(conf.get(KEY_SIGNED_ROUND, 0), KEY_SIGNED_ROUND, 0, MAX_ROUND_ID),
                     signature=bytes(_typed(conf.get(KEY_SIGNATURE, b""), KEY_SIGNATURE, bytes)),
                     error=_typed(conf.get(KEY_ERROR, ""), KEY_ERROR, str)[:300])
    arrays = _record(content, ARRAYS, ArrayRecord, required=False)
    if UPDATE in arrays:
        if len(arrays) != 1:
            raise ReplyError(f"an encrypted update with {len(arrays) - 1} other arrays")
        rep.payload = bytes(_typed(arrays[UPDATE].data, UPDATE, bytes))
    elif arrays and not refused:
        rep.shared = {str(k): _real_floats(k, a) for k, a in arrays.items()}
    return rep


def _real_floats(key: str, array: Array) -> np.ndarray:
    """The array of a plaintext update: real floating point only (complex, object, integer, bool refused)."""
    value = array.numpy()
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        raise ReplyError(f"parameter {str(key)[:60]!r} has dtype {getattr(value, 'dtype', type(value))} "
                         "(real floating point expected)")
    return value


STAGE_CHECK_SUM = "check-sum"  # a QUERY asking a key holder whether the encrypted sum it carries decrypts
SUM_VALID = "sum-valid"  # MetricRecord key of the answer: 1 decrypts, 0 does not


def encode_sum_check(valid: bool) -> RecordDict:
    """A key holder's answer: one bit, nothing it decrypted."""
    return RecordDict({METRICS: MetricRecord({SUM_VALID: int(bool(valid))})})


def decode_sum_check(msg: Message) -> bool:
    """The bit of a key holder's answer; ReplyError unless ``sum-valid`` is the integer 0 or 1."""
    metrics = _record(msg.content, METRICS, MetricRecord, required=True)
    return _int_field(metrics.get(SUM_VALID, -1), SUM_VALID, 0, 1) == 1


MASK_REPLY = "mask-reply"  # ArrayRecord key of a device's answer to a masking stage (client/masks.py), raw bytes
MAX_MASK_REPLY_BYTES = 1 << 20


def encode_mask_reply(data: bytes) -> RecordDict:
    return RecordDict({ARRAYS: ArrayRecord({MASK_REPLY: bytes_array(data)})})


def decode_mask_reply(msg: Message) -> bytes:
    """The bytes of a masking reply (parsed by ``mask_wire``); ReplyError unless one uint8 array of at most
    ``MAX_MASK_REPLY_BYTES``."""
    arrays = _record(msg.content, ARRAYS, ArrayRecord, required=True)
    if MASK_REPLY not in arrays:
        raise ReplyError(f"masking reply lacks {MASK_REPLY!r}")
    array = arrays[MASK_REPLY]
    data = getattr(array, "data", None)
    if not isinstance(data, (bytes, bytearray)) or getattr(array, "dtype", "") != "uint8":
        raise ReplyError(f"{MASK_REPLY!r} must carry raw uint8 bytes")
    if len(data) > MAX_MASK_REPLY_BYTES:
        raise ReplyError(f"{MASK_REPLY!r} of {len(data)} bytes exceeds {MAX_MASK_REPLY_BYTES}")
    return bytes(data)


MAX_IDENTITY_CHARS = 256


def encode_identity(device_id: str) -> RecordDict:
    """A device's answer to the server's identity query (a QUERY message carrying the run config)."""
    return RecordDict({CONFIG: ConfigRecord({KEY_DEVICE_ID: device_id})})


def decode_identity(msg: Message) -> str:
    """The device id an identity reply names; ReplyError unless a non-empty str of at most 256 chars."""
    conf = _record(msg.content, CONFIG, ConfigRecord, required=True)
    value = _typed(conf.get(KEY_DEVICE_ID, ""), KEY_DEVICE_ID, str)
    if not 0 < len(value) <= MAX_IDENTITY_CHARS:
        raise ReplyError(f"{KEY_DEVICE_ID!r} must be 1-{MAX_IDENTITY_CHARS} characters, got {len(value)}")
    return value


def encode_rank(masked: int, unmasked: int) -> RecordDict:
    return RecordDict({METRICS: MetricRecord({RANK: int(masked), RANK_UNMASKED: int(unmasked)})})


def decode_rank(msg: Message) -> tuple[int, int]:
    """(masked, unmasked) ranks of an evaluation reply, each an integer in [1, MAX_RANK]; ReplyError otherwise."""
    metrics = _record(msg.content, METRICS, MetricRecord, required=True)
    missing = [k for k in (RANK, RANK_UNMASKED) if k not in metrics]
    if missing:
        raise ReplyError(f"evaluation reply lacks {missing} (expected both {RANK!r} and {RANK_UNMASKED!r})")
    return _int_field(metrics[RANK], RANK, 1, MAX_RANK), _int_field(metrics[RANK_UNMASKED], RANK_UNMASKED, 1, MAX_RANK)


def _finite(v):
    return v if isinstance(v, int) or np.isfinite(v) else 0.0
