"""Device side of server-blind aggregation: decrypt the global sum, encrypt + sign the update.

The device flattens its shared weights in the fixed key order of the initial model, lets
``encrypt_update`` multiply them by its weight (number of training windows) and append the weight as one
more slot, then signs (run id, round id, device id, SHA-256 of the payload) with its Ed25519 key. A device that
receives no aggregate yet (round 1) builds the initial shared model from the seed all devices share.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from shared_models.crypto import (DecryptionError, DeviceKeys, PayloadError, decrypt_average, device_key_digest,
                                  encrypt_update, load_device_keys, payload_sha256, sign_update, unwrap_average)
from shared_models.model.state import flatten, unflatten
from shared_models.privacy.user_level import apply_noisy_sum

KEYS_CACHE = 1024  # device key sets kept per process (a Ray actor hosts many simulated devices; they share
# one parsed CKKS context, so a set is a few small key objects)
SHARED_DECRYPTIONS = 2  # decrypted global sums kept per process (this round's and the previous one)
_decrypted: "OrderedDict[str, tuple]" = OrderedDict()  # sha256(blob) -> (context, he cfg, average, total, seconds,
# checked with unit weights)


def device_keys(keys_dir: str, device_id: str) -> DeviceKeys:
    """The device's keys: its signing key and the CKKS secret context, unsealed with its X25519 key.

    Loaded once per process per key set: the cache is keyed on the key files' contents (``device_key_digest``),
    so keys replaced under the same path (a fresh run's new keys) are loaded anew, never served stale."""
    return _load_keys(keys_dir, device_id, device_key_digest(keys_dir, device_id))


@functools.lru_cache(maxsize=KEYS_CACHE)
def _load_keys(keys_dir: str, device_id: str, digest: str) -> DeviceKeys:
    return load_device_keys(Path(keys_dir), device_id, n_threads=1)


def decode_global(blob: bytes | None, keys: DeviceKeys, template: dict[str, np.ndarray], *,
                  unit_weights: bool = False) -> tuple["OrderedDict[str, np.ndarray]", float, float]:
    """(global shared weights, total weight, decrypt seconds); the template when no aggregate exists yet."""
    if not blob:
        return OrderedDict(template), 0.0, 0.0
    average, total, seconds = decrypt_shared(blob, keys, unit_weights=unit_weights)
    return unflatten(average, template), total, seconds


def decrypt_shared(blob: bytes, keys: DeviceKeys, *, unit_weights: bool = False) -> tuple[np.ndarray, float, float]:
    """(average, total weight, seconds one decryption takes) of an encrypted sum, decrypted once per process.

    Every device of a key set holds the same CKKS secret (the parsed context object is shared, see
    ``keystore._parsed_context``) and decryption is deterministic, so when a simulation process hosts many
    devices they all get the same plaintext: the first one decrypts, the rest reuse its (read-only) result.
    ``seconds`` is what the decryption took, i.e. what each device pays on its own hardware; a deployed
    device, alone in its process, always decrypts. ``unit_weights``: see ``decrypt_average``; a result checked
    without it is not reused for a reader that asks for it."""
    digest = hashlib.sha256(blob).hexdigest()
    hit = _decrypted.get(digest)
    if hit is not None and hit[0] is keys.context and hit[1] == keys.he and (hit[5] or not unit_weights):
        return hit[2], hit[3], hit[4]
    t0 = time.perf_counter()
    average, total = decrypt_average(keys.context, blob, cfg=keys.he, unit_weights=unit_weights)
    seconds = time.perf_counter() - t0
    average.setflags(write=False)
    _decrypted[digest] = (keys.context, keys.he, average, total, seconds, unit_weights)
    while len(_decrypted) > SHARED_DECRYPTIONS:
        _decrypted.popitem(last=False)
    return average, total, seconds


def sum_decrypts(blob: bytes, keys: DeviceKeys, *, unit_weights: bool = False) -> bool:
    """A key holder's answer to the server: does this (sub-)sum decrypt to values inside the encoding's range
    (and, with ``unit_weights``, to a total weight of one per summand)? Only the bit leaves the device, never
    what it decrypted."""
    try:
        decrypt_average(keys.context, bytes(blob), cfg=keys.he, unit_weights=unit_weights)
    except (DecryptionError, PayloadError):
        return False
    return True


def global_model(blob: bytes | None, keys: DeviceKeys, template: dict[str, np.ndarray], *, user_level: bool,
                 server_lr: float = 1.0, denominator: float = 1.0, unit_weights: bool = False) -> tuple["OrderedDict[str, np.ndarray]", float, float]:
    """(global shared weights, total weight, decrypt seconds) from the broadcast encrypted sum.

    FedAvg: the sum of weighted weights over the total weight. User-level DP: the running sum of every
    round's noisy deltas, added to the initial model (``template``) as ``server_lr * sum / denominator`` (user and
    window modes: ``client.user_dp.user_level_decoding``). An averaged-model envelope
    (``federated.server_average``, ``shared_models/crypto/averaged.py``) holds the sum of the last k released
    running sums (distributed DP only): the denominator is k times larger."""
    if blob:
        blob, terms = unwrap_average(blob)
        denominator *= terms
    weights, total, seconds = decode_global(blob, keys, template, unit_weights=unit_weights)
    if user_level and blob:
        weights = OrderedDict((k, apply_noisy_sum(np.asarray(template[k], np.float64),
                                                  np.asarray(w, np.float64) * total,  # mean * n = the sum
                                                  server_lr=server_lr, denominator=denominator).astype(np.float32))
                              for k, w in weights.items())
    return weights, total, seconds


def encode_update(shared: dict[str, np.ndarray], *, weight: int, keys: DeviceKeys, round_id: int,
                  run_id: str = "", mask: Callable[[int], np.ndarray] | None = None) -> tuple[bytes, bytes, float]:
    """(payload, signature, encrypt seconds) for this device's weighted shared weights. ``mask``: the round's
    pairwise c0 mask for an update of n parameters (``client/masks.py::upload_mask``), when masking is on."""
    t0 = time.perf_counter()
    weight = min(weight, keys.he.max_weight)  # FedAvg weight cap: the encoding's overflow bound needs it
    flat = flatten(shared)
    payload = encrypt_update(keys.context, flat, weight=float(weight), cfg=keys.he,
                             c0_mask=None if mask is None else mask(flat.size))
    signature = sign_update(keys.signing_key, round_id=round_id, device_id=keys.device_id,
                            payload_sha256=payload_sha256(payload), run_id=run_id)
    return payload, signature, time.perf_counter() - t0
