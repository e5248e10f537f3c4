"""Configuration of the CKKS secure-aggregation encoding (:class:`HEConfig`).

Two encodings are supported (see ``shared_models/crypto/__init__.py`` for the
wire-cost / precision trade-off and the measured numbers):

* ``pack_bits == 0`` (default, *float mode*): every CKKS slot carries one value
  ``weight * param`` as a CKKS fixed-point number at scale ``2**scale_bits``.
* ``pack_bits > 0`` (*packed mode*, BatchCrypt-style): parameters are quantised
  to ``quant_bits``-bit integer codes in ``[-clip_range, clip_range]``, the codes
  are multiplied by the integer weight and ``values_per_slot`` of them are packed
  into one slot, each in a ``pack_bits``-wide lane with headroom for the sum of
  ``max_summands`` devices.

Range / overflow assumptions (checked at encryption time, violations raise
:class:`EncodingRangeError`): every parameter satisfies ``|x| <= clip_range`` and
every device weight satisfies ``0 < weight <= max_weight``; at most
``max_summands`` updates are summed (the aggregator enforces this).  Under these
assumptions every slot of the sum, times the CKKS scale, stays below
``2**(P-2) < q/2`` where ``q`` is the P-bit data prime, so the modular sum never
wraps (validated here: ``scale_bits + log2(value_bound) + 2 <= P``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
from collections.abc import Mapping
from typing import Any

# Largest total modulus (bits) for 128-bit classical security, HE standard
# (same table SEAL enforces with sec_level_type.tc128).
MAX_SECURE_COEFF_BITS = {2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
# Integers up to 2**MAX_EXACT_SLOT_BITS survive SEAL's double-precision CKKS
# encode/decode exactly (measured for N <= 8192, margin included; see
# tests/test_crypto_packing.py and benchmarks/bench_he.py).
MAX_EXACT_SLOT_BITS = 40
# Std-dev of fresh symmetric-encryption noise per slot is ~3.2*sqrt(N) (scale
# units); the sum of D updates multiplies it by sqrt(D).  Packed mode needs
# the rounding error < 1/2 with a wide margin: 2**NOISE_MARGIN_BITS sigmas.
NOISE_SIGMA = 3.3
NOISE_MARGIN_BITS = 5
ROUNDING_MODES = ("nearest", "stochastic")


class EncodingRangeError(ValueError):
    """A value or weight lies outside what the configured encoding can carry."""


@dataclasses.dataclass(frozen=True)
class HEConfig:
    """CKKS secure-aggregation knobs.  Defaults: measured best (see package doc)."""

    enabled: bool = True
    poly_modulus_degree: int = 4096
    coeff_mod_bit_sizes: tuple[int, ...] = (44, 20)
    scale_bits: int = 21
    pack_bits: int = 0
    quant_bits: int = 16
    clip_range: float = 16.0
    max_summands: int = 128
    max_weight: int = 1024
    rounding: str = "nearest"

    def __post_init__(self) -> None:
        if isinstance(self.coeff_mod_bit_sizes, list):
            object.__setattr__(self, "coeff_mod_bit_sizes", tuple(self.coeff_mod_bit_sizes))
        self.validate()

    # ----------------------------------------------------------------- derived
    @property
    def data_prime_bits(self) -> int:
        """Bit size of the single data-level prime q (ciphertext modulus)."""
        return self.coeff_mod_bit_sizes[0]

    @property
    def slots_per_ciphertext(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def packed(self) -> bool:
        return self.pack_bits > 0

    @property
    def values_per_slot(self) -> int:
        """Parameters carried by one CKKS slot (1 in float mode)."""
        if not self.packed:
            return 1
        room = min(self.data_prime_bits - 2 - self.scale_bits, MAX_EXACT_SLOT_BITS)
        return max(room // self.pack_bits, 0)

    @property
    def value_bound(self) -> float:
        """Upper bound on |slot value| of a sum of ``max_summands`` updates."""
        if self.packed:
            return float(2 ** (self.values_per_slot * self.pack_bits))
        return float(self.max_summands * self.max_weight * max(self.clip_range, 1.0))

    @property
    def max_scale_bits(self) -> int:
        """Largest float-mode ``scale_bits`` the overflow bound allows.  The
        absolute error of the decrypted average is about
        ``3.3*sqrt(N*D) / (2**scale_bits * total_weight)`` for D summands, so set
        ``max_weight``/``max_summands``/``clip_range`` tight and use this value."""
        return self.data_prime_bits - 2 - math.ceil(math.log2(
            self.max_summands * self.max_weight * max(self.clip_range, 1.0)))

    def n_slots(self, n_params: int) -> int:
        """Slots used by an update of ``n_params`` parameters (+1 weight slot)."""
        return -(-n_params // self.values_per_slot) + 1

    def n_ciphertexts(self, n_params: int) -> int:
        """Number of CKKS ciphertexts in the update of ``n_params`` parameters."""
        if n_params < 0:
            raise ValueError("n_params must be >= 0")
        return -(-self.n_slots(n_params) // self.slots_per_ciphertext)

    def fingerprint(self) -> bytes:
        """8-byte digest of every field that changes the wire encoding."""
        blob = struct.pack(
            "<I%dHIIIdII" % len(self.coeff_mod_bit_sizes),
            self.poly_modulus_degree, *self.coeff_mod_bit_sizes, self.scale_bits,
            self.pack_bits, self.quant_bits, float(self.clip_range),
            self.max_summands, self.max_weight,
        )
        return hashlib.sha256(b"fedinterest/he-config/v1\0" + blob).digest()[:8]

    # -------------------------------------------------------------- (de)serial
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["coeff_mod_bit_sizes"] = list(self.coeff_mod_bit_sizes)
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "HEConfig":
        """Build from a dict (e.g. a TOML table, kebab- or snake-case keys);
        unknown keys raise ValueError naming the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown HEConfig key {key!r}")
            kwargs[name] = value
        if "coeff_mod_bit_sizes" in kwargs:
            kwargs["coeff_mod_bit_sizes"] = tuple(kwargs["coeff_mod_bit_sizes"])
        return cls(**kwargs)

    # -------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ValueError naming the offending key if the config is unusable."""
        _check_type("enabled", self.enabled, bool)
        self._validate_ring()
        self._validate_ranges()
        if self.packed:
            self._validate_packed()
        else:
            self._validate_float()

    def _validate_ring(self) -> None:
        n = self.poly_modulus_degree
        _check_int("poly_modulus_degree", n)
        if n not in MAX_SECURE_COEFF_BITS:
            raise ValueError(f"poly_modulus_degree must be one of {sorted(MAX_SECURE_COEFF_BITS)}, got {n}")
        sizes = self.coeff_mod_bit_sizes
        if not isinstance(sizes, tuple) or len(sizes) != 2:
            raise ValueError(
                "coeff_mod_bit_sizes must be (data_prime_bits, special_prime_bits): "
                f"depth-0 aggregation uses one data prime, got {sizes!r}")
        for bits in sizes:
            _check_int("coeff_mod_bit_sizes", bits)
            if not 20 <= bits <= 60:
                raise ValueError(f"coeff_mod_bit_sizes entries must be in [20, 60], got {sizes!r}")
        if sum(sizes) > MAX_SECURE_COEFF_BITS[n]:
            raise ValueError(
                f"coeff_mod_bit_sizes total {sum(sizes)} bits exceeds the 128-bit-security "
                f"limit {MAX_SECURE_COEFF_BITS[n]} for poly_modulus_degree={n}")

    def _validate_ranges(self) -> None:
        for key in ("scale_bits", "pack_bits", "quant_bits", "max_summands", "max_weight"):
            _check_int(key, getattr(self, key))
        if self.scale_bits < 1:
            raise ValueError(f"scale_bits must be >= 1, got {self.scale_bits}")
        if self.pack_bits < 0:
            raise ValueError(f"pack_bits must be >= 0 (0 = no packing), got {self.pack_bits}")
        if not 1 <= self.quant_bits <= 32:
            raise ValueError(f"quant_bits must be in [1, 32], got {self.quant_bits}")
        if self.max_summands < 1 or self.max_weight < 1:
            key = "max_summands" if self.max_summands < 1 else "max_weight"
            raise ValueError(f"{key} must be >= 1")
        clip = self.clip_range
        if (isinstance(clip, bool) or not isinstance(clip, (int, float))
                or not math.isfinite(clip) or clip <= 0):
            raise ValueError(f"clip_range must be a finite number > 0, got {clip!r}")
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {self.rounding!r}")

    def _validate_float(self) -> None:
        if self.scale_bits > self.max_scale_bits:
            raise ValueError(
                f"scale_bits={self.scale_bits} too large: sums of max_summands*max_weight*clip_range "
                f"= {self.value_bound:g} at scale 2**scale_bits overflow the "
                f"{self.data_prime_bits}-bit data prime; max_scale_bits={self.max_scale_bits}")

    def _validate_packed(self) -> None:
        lane_max = self.max_summands * self.max_weight * (2 ** self.quant_bits - 1)
        if lane_max.bit_length() > self.pack_bits:
            raise ValueError(
                f"pack_bits={self.pack_bits} too small: a lane must hold max_summands*max_weight*"
                f"(2**quant_bits-1) = {lane_max} ({lane_max.bit_length()} bits)")
        noise = math.log2(NOISE_SIGMA * math.sqrt(self.poly_modulus_degree * self.max_summands))
        if self.scale_bits < math.ceil(noise) + NOISE_MARGIN_BITS:
            raise ValueError(
                f"scale_bits={self.scale_bits} too small for exact integer decoding: need >= "
                f"{math.ceil(noise) + NOISE_MARGIN_BITS} (noise of {self.max_summands} summands)")
        if self.values_per_slot < 1:
            raise ValueError(
                f"pack_bits={self.pack_bits} does not fit one slot: at most "
                f"min(data_prime_bits-2-scale_bits, {MAX_EXACT_SLOT_BITS}) bits per slot")


def _check_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an int, got {value!r}")


def _check_type(key: str, value: Any, typ: type) -> None:
    if not isinstance(value, typ):
        raise ValueError(f"{key} must be a {typ.__name__}, got {value!r}")
