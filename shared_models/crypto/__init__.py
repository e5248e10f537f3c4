"""fedinterest: shared_models.crypto -- pure crypto building blocks.

No torch imports; Flower only in ``seed_sharing.py`` (its Fernet helper), which this package does not
import.  Flow of one round (FedAvg under CKKS, depth 0):

device   payload = encrypt_update(secret_ctx, flat_params, weight=n_examples, cfg=cfg)
         sig = sign_update(device_sk, round_id=r, device_id=i, payload_sha256=sha256(payload))
server   agg = Aggregator(public_ctx, expected_count=cfg.n_ciphertexts(n_params), cfg=cfg)
         agg.add(payload)  # validates: PayloadError(reason=...) on bad input
         summed = agg.to_bytes()              # or sum_ciphertexts(public_ctx, payloads, ...)
device   avg, total_weight = decrypt_average(secret_ctx, summed, cfg=cfg)

Why this encoding (benchmarks/bench_he.py --params 250000 --devices 100, one
core, x ~ N(0, 0.05^2) + per-device N(0, 0.01^2), weights U[10, 300]):

    setting                      B/param  enc s/dev  agg s (100)  dec s  rel err
    native FLARE N=8192 [60,40,40] 58.30    0.255      2.42      0.071  3e-09
    native N=4096 [60,49] 2^40     32.31    0.186      0.74      0.040  3e-09
    native N=4096 [44,20] sym      26.86    0.109      1.17      0.045  9e-07
    seeded float P=40, 2^17        10.08    0.211      0.84      0.055  1.5e-05
    seeded float P=44, 2^21 (def)  11.08    0.194      0.99      0.038  9e-07
    seeded packed q16, 1 lane      15.11    0.206      0.57      0.054  3.3e-04
    seeded packed q4, 2 lanes       7.62    0.102      0.28      0.022  18

Stock TenSEAL serialization stores both ciphertext polynomials as
zstd-compressed 64-bit words and never emits SEAL's seeded form, so even a
depth-0 44-bit symmetric context costs ~27 B/param.  Devices hold the secret
key, so they encrypt symmetrically with a seeded c1 (c1 = a = PRG(seed), c0 =
m + e - a*s, see ckks.py and rlwe.py), sending seed + c0 bit-packed at P bits:
2*P bits per slot.  P=44
meets <= 12 B/param with ~100x margin on the 1e-4 relative-error target; P=40
saves 1 B/param but keeps only ~7x margin (error grows as the weights shrink,
see HEConfig.max_scale_bits).  BatchCrypt-style packing (``pack_bits > 0``) is
implemented and measured but loses: the lane headroom for
max_summands*max_weight (~16 bits) leaves too few bits per lane in the <= 40
exact bits of a CKKS slot (one 16-bit lane: 15 B/param; two lanes: 4-bit codes).

Pairwise masks against a server colluding with a device (``masking.py``, ``seed_sharing.py``,
``mask_round.py``, ``mask_wire.py``; docs/threat-model.md section 6): not exported here (they import the
Shamir and Fernet primitives only where ``he.masking`` is on); ``server/masks.py`` and ``client/masks.py`` run them
in every round.
"""

from .aggregate import Aggregator, EncryptedUpdate, add_aggregates, load_ciphertexts, sum_ciphertexts
from .averaged import is_averaged, sum_released, unwrap_average, wrap_average
from .ckks import DecryptionError, decrypt_average, encrypt_update
from .context import (
    context_fingerprint, load_context, make_secret_context, public_context_bytes,
    secret_context_bytes)
from .he_config import EncodingRangeError, HEConfig
from .keys import (
    SealedBoxError, generate_signing_key, generate_x25519_key, load_private_key,
    load_public_key, open_sealed, save_private_key, save_public_key, seal_secret)
from .keystore import (
    DeviceKeys, KeyLayout, ServerKeys, device_key_digest, init_keys, load_device_keys, load_server_keys)
from .payload import PayloadError
from .signing import payload_sha256, sign_aggregate, sign_update, verify_aggregate, verify_update

__all__ = [
    "Aggregator", "add_aggregates", "is_averaged", "sum_released", "unwrap_average", "wrap_average",
    "DecryptionError", "DeviceKeys", "EncodingRangeError", "EncryptedUpdate",
    "HEConfig", "KeyLayout", "PayloadError", "SealedBoxError", "ServerKeys",
    "context_fingerprint", "decrypt_average", "device_key_digest", "encrypt_update", "generate_signing_key",
    "generate_x25519_key", "init_keys", "load_ciphertexts", "load_context", "load_device_keys",
    "load_private_key", "load_public_key", "load_server_keys", "make_secret_context",
    "open_sealed", "payload_sha256", "public_context_bytes", "save_private_key",
    "save_public_key", "seal_secret", "secret_context_bytes", "sign_aggregate", "sign_update",
    "sum_ciphertexts", "verify_aggregate", "verify_update",
]
