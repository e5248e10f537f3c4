"""The average of the last K released models under CKKS, without the server holding any model.

A blind server can only add ciphertexts, and adding costs nothing in CKKS (no rescale, no level). So it adds
the last ``k`` released aggregates and ships the sum in a small envelope that names ``k``; a device decrypts
it and divides by ``k`` itself (``client/secure.py::global_model``):

    envelope = b"FIAV" | version u8 | k u16 (big-endian) | aggregate (a ``FIHE`` payload)

FedAvg aggregates carry their total weight in the last slot, so the decrypted mean of a sum of rounds is
weighted by each round's total weight, not the mean of the k models: the config therefore allows the average
under CKKS only with distributed DP (user and window modes), where it is exact. There each aggregate is a
running sum ``S_r`` of noisy deltas decoded as ``x0 + lr * S_r / denominator``; the mean of the last k models
is then ``x0 + lr * (S_{t-k+1} + ... + S_t) / (k * denominator)``. The average is post-processing of released
aggregates: it costs no privacy. Summand counts add up, so the sum must fit ``he.max_summands``
(``add_aggregates`` refuses otherwise; the config check sizes it beforehand).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import tenseal as ts

from .aggregate import add_aggregates
from .he_config import HEConfig
from .payload import PayloadError

MAGIC = b"FIAV"
VERSION = 1
_HEADER = struct.Struct(">4sBH")
MAX_TERMS = 1024  # far above any useful window; bounds what a hostile envelope can claim


def is_averaged(blob: bytes | None) -> bool:
    return bool(blob) and bytes(blob[:4]) == MAGIC


def wrap_average(aggregate: bytes, terms: int) -> bytes:
    """The envelope of a sum of ``terms`` released aggregates."""
    if not 1 <= terms <= MAX_TERMS:
        raise ValueError(f"terms: expected 1..{MAX_TERMS}, got {terms}")
    return _HEADER.pack(MAGIC, VERSION, terms) + bytes(aggregate)


def unwrap_average(blob: bytes) -> tuple[bytes, int]:
    """(aggregate, terms) of an envelope; (blob, 1) for a plain aggregate. PayloadError names what is wrong."""
    blob = bytes(blob)
    if not is_averaged(blob):
        return blob, 1
    if len(blob) < _HEADER.size:
        raise PayloadError("truncated", f"averaged-model envelope of {len(blob)} bytes < its {_HEADER.size}-byte header")
    _, version, terms = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise PayloadError("unsupported_version", f"averaged-model envelope version {version}, expected {VERSION}")
    if not 1 <= terms <= MAX_TERMS:
        raise PayloadError("malformed", f"averaged-model envelope: terms {terms} outside 1..{MAX_TERMS}")
    if len(blob) == _HEADER.size:
        raise PayloadError("truncated", "averaged-model envelope without its aggregate")
    return blob[_HEADER.size:], terms


def sum_released(public_ctx: ts.Context, aggregates: Sequence[bytes], *, cfg: HEConfig) -> bytes:
    """The envelope holding the homomorphic sum of ``aggregates`` (the last k released, oldest first)."""
    if not aggregates:
        raise ValueError("no released aggregate to average")
    total = bytes(aggregates[0])
    for blob in aggregates[1:]:
        total = add_aggregates(public_ctx, total, blob, cfg=cfg)
    return wrap_average(total, len(aggregates))
