"""Device side of server-blind aggregation: decrypt the global sum, encrypt + sign the update.

The device flattens its shared weights in the fixed key order of the initial model, lets
``encrypt_update`` multiply them by its weight (number of training windows) and append the weight as one
more slot, then signs (round id, device id, SHA-256 of the payload) with its Ed25519 key. A device that
receives no aggregate yet (round 1) builds the initial shared model from the seed all devices share.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from shared_models.crypto import (DeviceKeys, decrypt_average, encrypt_update, load_device_keys, payload_sha256,
                                  sign_update)

KEYS_CACHE = 64  # device key sets kept per process (a Ray actor hosts many simulated devices)


@functools.lru_cache(maxsize=KEYS_CACHE)
def device_keys(keys_dir: str, device_id: str) -> DeviceKeys:
    """The device's keys: its signing key and the CKKS secret context, unsealed with its X25519 key."""
    return load_device_keys(Path(keys_dir), device_id, n_threads=1)


def flatten(shared: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in shared.values()])


def unflatten(vector: np.ndarray, template: dict[str, np.ndarray]) -> "OrderedDict[str, np.ndarray]":
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    offset = 0
    for k, v in template.items():
        n = int(np.prod(v.shape))
        out[k] = vector[offset:offset + n].reshape(v.shape).astype(np.float32)
        offset += n
    if offset != len(vector):
        raise ValueError(f"aggregate has {len(vector)} values, the shared model has {offset}")
    return out


def decode_global(blob: bytes | None, keys: DeviceKeys, template: dict[str, np.ndarray]
                  ) -> tuple["OrderedDict[str, np.ndarray]", float, float]:
    """(global shared weights, total weight, decrypt seconds); the template when no aggregate exists yet."""
    if not blob:
        return OrderedDict(template), 0.0, 0.0
    t0 = time.perf_counter()
    average, total = decrypt_average(keys.context, blob, cfg=keys.he)
    return unflatten(average, template), total, time.perf_counter() - t0


def encode_update(shared: dict[str, np.ndarray], *, weight: int, keys: DeviceKeys, round_id: int
                  ) -> tuple[bytes, bytes, float]:
    """(payload, signature, encrypt seconds) for this device's weighted shared weights."""
    t0 = time.perf_counter()
    weight = min(weight, keys.he.max_weight)  # FedAvg weight cap: the encoding's overflow bound needs it
    payload = encrypt_update(keys.context, flatten(shared), weight=float(weight), cfg=keys.he)
    signature = sign_update(keys.signing_key, round_id=round_id, device_id=keys.device_id,
                            payload_sha256=payload_sha256(payload))
    return payload, signature, time.perf_counter() - t0
