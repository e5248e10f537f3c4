"""fedinterest: shared_models.crypto -- pure crypto building blocks.

No Flower / torch imports.  Flow of one round (FedAvg under CKKS, depth 0):

device   payload = encrypt_update(secret_ctx, flat_params, weight=n_examples, cfg=cfg)
         sig = sign_update(device_sk, round_id=r, device_id=i, payload_sha256=sha256(payload))
server   agg = Aggregator(public_ctx, expected_count=cfg.n_ciphertexts(n_params), cfg=cfg)
         agg.add(payload)  # validates: PayloadError(reason=...) on bad input
         summed = agg.to_bytes()              # or sum_ciphertexts(public_ctx, payloads, ...)
device   avg, total_weight = decrypt_average(secret_ctx, summed, cfg=cfg)

Why this encoding (measured with benchmarks/bench_he.py, 250k params, 100
devices, one core): stock TenSEAL serialization stores both ciphertext
polynomials as zstd-compressed 64-bit words (FLARE default ~57 B/param,
depth-0 N=4096 [60,49] ~32 B/param, even a 44-bit symmetric context ~24 B/param,
because TenSEAL does not emit SEAL's seeded form).  Devices hold the secret key,
so they encrypt symmetrically and *re-seed* the ciphertext (c1 = PRG(seed)),
sending only seed + c0 bit-packed at P = 44 bits: 2*44 bits per slot =
~11.1 B/param, relative error ~1e-6 with the default ranges.  BatchCrypt-style
packing (``pack_bits > 0``) is implemented and measured but loses here: the
lane headroom for weight*summands (~16 bits) leaves too few bits per lane in
the <= 40 exact bits of a CKKS slot (see HEConfig docs and the benchmark).
"""

from .aggregate import Aggregator, EncryptedUpdate, load_ciphertexts, sum_ciphertexts
from .ckks import DecryptionError, decrypt_average, encrypt_update
from .context import (
    context_fingerprint, load_context, make_secret_context, public_context_bytes,
    secret_context_bytes)
from .he_config import EncodingRangeError, HEConfig
from .keys import (
    SealedBoxError, generate_signing_key, generate_x25519_key, load_private_key,
    load_public_key, open_sealed, save_private_key, save_public_key, seal_secret)
from .keystore import (
    DeviceKeys, KeyLayout, ServerKeys, init_keys, load_device_keys, load_server_keys)
from .payload import PayloadError
from .signing import payload_sha256, sign_aggregate, sign_update, verify_aggregate, verify_update

__all__ = [
    "Aggregator", "DecryptionError", "DeviceKeys", "EncodingRangeError", "EncryptedUpdate",
    "HEConfig", "KeyLayout", "PayloadError", "SealedBoxError", "ServerKeys",
    "context_fingerprint", "decrypt_average", "encrypt_update", "generate_signing_key",
    "generate_x25519_key", "init_keys", "load_ciphertexts", "load_context", "load_device_keys",
    "load_private_key", "load_public_key", "load_server_keys", "make_secret_context",
    "open_sealed", "payload_sha256", "public_context_bytes", "save_private_key",
    "save_public_key", "seal_secret", "secret_context_bytes", "sign_aggregate", "sign_update",
    "sum_ciphertexts", "verify_aggregate", "verify_update",
]
