"""TenSEAL CKKS contexts: creation, (de)serialisation, parameters, fingerprint.

Devices share one *secret* context.  They encrypt with the secret key
(symmetric RLWE, see ckks.py: ~6 bits less noise than public-key encryption
and it enables seeded ciphertexts).  The server gets the same context
serialised WITHOUT the secret key (``ts.context_from(public_bytes).is_private()``
is False): it can check and add ciphertexts but not decrypt.

The context fingerprint (16 bytes) binds payloads to one key set: SHA-256 over
the ring parameters and the serialised CKKS *public key*.  The public key is
the one piece of key material that TenSEAL stores identically in the secret
and the public context (relinearisation keys are regenerated on every load of
a private context, so they cannot serve).  A ciphertext made under another key
set is rejected by the server with ``PayloadError(reason="context_mismatch")``
instead of silently poisoning the sum.  Relinearisation/Galois keys are not
serialised at all: depth-0 aggregation never uses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import weakref
from typing import Any

import tenseal as ts
import tenseal.sealapi as sealapi

from .he_config import HEConfig
from .seal_wire import context_public_key

_FP_LABEL = b"fedinterest/ckks-context/v1\0"


@dataclasses.dataclass
class ContextParams:
    """Ring parameters of a TenSEAL CKKS context (data level), cached per context."""

    context: Any
    degree: int
    modulus: int
    coeff_bits: int
    parms_id: list[int]
    fingerprint: bytes
    private: bool
    _decryptor: Any = None

    @property
    def decryptor(self) -> "sealapi.Decryptor":
        if not self.private:
            raise ValueError("context holds no secret key")
        if self._decryptor is None:
            seal_ctx = self.context.seal_context().data
            self._decryptor = sealapi.Decryptor(seal_ctx, self.context.secret_key().data)
        return self._decryptor


_CACHE: "weakref.WeakKeyDictionary[Any, ContextParams]" = weakref.WeakKeyDictionary()


def make_secret_context(cfg: HEConfig, *, n_threads: int | None = None) -> ts.Context:
    """Fresh CKKS key set (secret key, public key as key-set identifier)."""
    try:
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, cfg.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(cfg.coeff_mod_bit_sizes),
                         encryption_type=ts.ENCRYPTION_TYPE.ASYMMETRIC, n_threads=n_threads)
    except ValueError as exc:
        raise ValueError(f"coeff_mod_bit_sizes {cfg.coeff_mod_bit_sizes}: SEAL refused ({exc})") from None
    ctx.global_scale = 2.0 ** cfg.scale_bits
    return ctx


def public_context_bytes(ctx: ts.Context) -> bytes:
    """The context without its secret key (for the server)."""
    return ctx.serialize(save_public_key=True, save_secret_key=False,
                         save_galois_keys=False, save_relin_keys=False)


def secret_context_bytes(ctx: ts.Context) -> bytes:
    """The context including its secret key (devices only; keep it secret)."""
    if not ctx.is_private():
        raise ValueError("context holds no secret key")
    return ctx.serialize(save_public_key=True, save_secret_key=True,
                         save_galois_keys=False, save_relin_keys=False)


def load_context(data: bytes, *, n_threads: int | None = None) -> ts.Context:
    """Deserialise a context produced by the two functions above."""
    return ts.context_from(data, n_threads=n_threads)


def context_params(ctx: ts.Context) -> ContextParams:
    """Ring parameters + fingerprint of ``ctx`` (computed once per object)."""
    cached = _CACHE.get(ctx)
    if cached is not None:
        return cached
    seal_ctx = ctx.seal_context().data
    data = seal_ctx.first_context_data()
    moduli = [m.value() for m in data.parms().coeff_modulus()]
    if len(moduli) != 1:
        raise ValueError(
            f"context has {len(moduli)} data primes; depth-0 aggregation needs exactly one "
            "(coeff_mod_bit_sizes = (data_prime_bits, special_prime_bits))")
    degree = data.parms().poly_modulus_degree()
    public_key = context_public_key(public_context_bytes(ctx))
    if not public_key:
        raise ValueError("context has no CKKS public key (key-set identifier); "
                         "create contexts with make_secret_context")
    digest = hashlib.sha256(_FP_LABEL + struct.pack("<IQ", degree, moduli[0])
                            + hashlib.sha256(public_key).digest()).digest()[:16]
    params = ContextParams(ctx, degree, moduli[0], moduli[0].bit_length(),
                           list(seal_ctx.first_parms_id()), digest, ctx.is_private())
    _CACHE[ctx] = params
    return params


def context_fingerprint(ctx: ts.Context) -> bytes:
    """16-byte identifier of the key set behind ``ctx`` (same for secret/public)."""
    return context_params(ctx).fingerprint


def check_matches(params: ContextParams, cfg: HEConfig) -> None:
    """Raise ValueError if the context's ring does not match ``cfg``."""
    if params.degree != cfg.poly_modulus_degree:
        raise ValueError(f"context poly_modulus_degree {params.degree} != HEConfig "
                         f"{cfg.poly_modulus_degree}")
    if params.coeff_bits != cfg.data_prime_bits:
        raise ValueError(f"context data prime has {params.coeff_bits} bits, HEConfig "
                         f"coeff_mod_bit_sizes[0] = {cfg.data_prime_bits}")
