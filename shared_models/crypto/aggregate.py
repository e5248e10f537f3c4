"""Server side: validate device updates and add them up (depth 0, no secret key).

Homomorphic addition of CKKS ciphertexts in NTT form is coefficient-wise
addition mod ``q`` -- exactly what SEAL's ``Evaluator.add`` does -- so the
server sums in numpy: ``sum c0'`` and ``sum a`` (``a`` re-expanded from each
update's seed), with lazy modular reduction (uint64 holds ``2**64 // q`` terms).
It never needs, and never sees, a secret key; the public context only supplies
the ring (N, q), the key-set fingerprint and the data-level parms_id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import tenseal as ts

from . import payload as wire
from .ckks import parse_payload
from .context import check_matches, context_params
from .he_config import HEConfig


@dataclasses.dataclass(frozen=True)
class EncryptedUpdate:
    """A validated device update (seeded ciphertexts)."""

    n_params: int
    n_ciphertexts: int
    seed: bytes
    c0: np.ndarray  # (n_ciphertexts, N) uint64, every entry < q


def load_ciphertexts(public_ctx: ts.Context, payload: bytes, *, expected_count: int,
                     cfg: HEConfig) -> EncryptedUpdate:
    """Deserialize one device update under ``public_ctx``.

    Raises ``PayloadError`` whose ``reason`` tells what is wrong (bad_magic,
    truncated, count_mismatch, context_mismatch, ...); ``expected_count`` is
    ``cfg.n_ciphertexts(n_params)`` for the model being trained.
    """
    params = context_params(public_ctx)
    check_matches(params, cfg)
    header, seed, (c0,) = parse_payload(params, payload, kind=wire.KIND_UPDATE, cfg=cfg,
                                        expected_count=expected_count)
    return EncryptedUpdate(header.n_params, header.n_ciphertexts, seed, c0)


class Aggregator:
    """Running sum of updates; ``to_bytes()`` gives the aggregate for devices."""

    def __init__(self, public_ctx: ts.Context, *, expected_count: int, cfg: HEConfig,
                 expected_params: int | None = None) -> None:
        """``expected_params``: the parameter count every update must declare (the server's model); None
        takes it from the first update added."""
        self._ctx = public_ctx
        self._params = context_params(public_ctx)
        check_matches(self._params, cfg)
        self._cfg = cfg
        self._expected = expected_count
        degree = self._params.degree
        self._c0 = np.zeros((expected_count, degree), dtype=np.uint64)
        self._c1 = np.zeros((expected_count, degree), dtype=np.uint64)
        self._seeds: set[bytes] = set()
        self._n_params: int | None = expected_params
        self._unreduced = 0
        self._max_unreduced = (2 ** 64 - 1) // self._params.modulus - 1

    @property
    def n_summands(self) -> int:
        return len(self._seeds)

    def add(self, update: EncryptedUpdate | bytes) -> None:
        """Validate (if bytes) and add one update; PayloadError if unusable."""
        if not isinstance(update, EncryptedUpdate):
            update = load_ciphertexts(self._ctx, update, expected_count=self._expected, cfg=self._cfg)
        if update.n_ciphertexts != self._expected or update.c0.shape != self._c0.shape:
            raise wire.PayloadError("count_mismatch", "update has the wrong number of ciphertexts")
        if self._n_params is not None and update.n_params != self._n_params:
            raise wire.PayloadError("shape_mismatch", f"{update.n_params} params, other updates "
                                    f"have {self._n_params}")
        if update.seed in self._seeds:
            raise wire.PayloadError("duplicate", "this update was already added")
        if self.n_summands >= self._cfg.max_summands:
            raise wire.PayloadError("too_many_summands", f"max_summands={self._cfg.max_summands} "
                                    "reached; more would void the overflow guarantee")
        if self._unreduced >= self._max_unreduced:
            self._reduce()
        a = wire.expand_seed(update.seed, update.n_ciphertexts, self._params.degree,
                             self._params.modulus)
        self._c0 += update.c0
        self._c1 += a
        self._unreduced += 1
        self._seeds.add(update.seed)
        self._n_params = update.n_params

    def _reduce(self) -> None:
        q = np.uint64(self._params.modulus)
        np.remainder(self._c0, q, out=self._c0)
        np.remainder(self._c1, q, out=self._c1)
        self._unreduced = 1

    def to_bytes(self) -> bytes:
        """Serialize the sum (kind=aggregate: both polynomials, P bits each)."""
        if not self._seeds or self._n_params is None:
            raise ValueError("no updates were added")
        self._reduce()
        header = wire.Header(wire.KIND_AGGREGATE, self._params.fingerprint, self._cfg.fingerprint(),
                             self._n_params, self._expected, self.n_summands, self._params.coeff_bits)
        return wire.encode(header, [self._c0, self._c1])


def sum_ciphertexts(public_ctx: ts.Context, updates: Iterable[EncryptedUpdate | bytes], *,
                    expected_count: int, cfg: HEConfig) -> bytes:
    """Sum device updates under the public context; returns the aggregate bytes."""
    agg = Aggregator(public_ctx, expected_count=expected_count, cfg=cfg)
    for update in updates:
        agg.add(update)
    return agg.to_bytes()


def add_aggregates(public_ctx: ts.Context, total: bytes, addend: bytes, *, cfg: HEConfig) -> bytes:
    """Homomorphic sum of two aggregates (a running sum over rounds); no secret key involved.

    The summand counts add up and must stay within ``cfg.max_summands`` (the overflow bound of the encoding),
    else PayloadError(too_many_summands)."""
    params = context_params(public_ctx)
    check_matches(params, cfg)
    (ha, _, (a0, a1)), (hb, _, (b0, b1)) = (parse_payload(params, blob, kind=wire.KIND_AGGREGATE, cfg=cfg)
                                            for blob in (total, addend))
    if (ha.n_params, ha.n_ciphertexts) != (hb.n_params, hb.n_ciphertexts):
        raise wire.PayloadError("shape_mismatch", f"aggregates of {ha.n_params} and {hb.n_params} params")
    n = ha.n_summands + hb.n_summands
    if n > cfg.max_summands:
        raise wire.PayloadError("too_many_summands", f"running sum of {n} updates exceeds max_summands="
                                f"{cfg.max_summands}; more would void the overflow guarantee")
    q = np.uint64(params.modulus)
    polys = [np.remainder(x + y, q) for x, y in ((a0, b0), (a1, b1))]  # entries < q < 2**63: no uint64 wrap
    header = wire.Header(wire.KIND_AGGREGATE, params.fingerprint, cfg.fingerprint(), ha.n_params,
                         ha.n_ciphertexts, n, params.coeff_bits)
    return wire.encode(header, polys)
