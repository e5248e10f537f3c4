"""HEConfig: defaults, derived sizes, validation naming the bad key."""

from __future__ import annotations

import pytest

from shared_models.crypto import HEConfig


def test_defaults_are_valid_float_mode() -> None:
    cfg = HEConfig()
    assert cfg.enabled and not cfg.packed
    assert cfg.values_per_slot == 1
    assert cfg.slots_per_ciphertext == cfg.poly_modulus_degree // 2
    # overflow guarantee: bound * 2**scale_bits fits in 2**(P-2)
    assert cfg.value_bound * 2 ** cfg.scale_bits <= 2 ** (cfg.data_prime_bits - 2)


@pytest.mark.parametrize("n_params, expected", [(0, 1), (2047, 1), (2048, 2), (250_000, 123)])
def test_ciphertext_count_includes_weight_slot(n_params: int, expected: int) -> None:
    assert HEConfig().n_ciphertexts(n_params) == expected


def test_packed_slot_layout() -> None:
    cfg = HEConfig(coeff_mod_bit_sizes=(60, 20), scale_bits=17, pack_bits=15, quant_bits=8,
                   max_summands=8, max_weight=16)
    assert cfg.values_per_slot == 2
    assert cfg.n_slots(5) == 3 + 1
    assert cfg.n_ciphertexts(2 * 2048) == 2  # 2048 packed slots + weight slot


@pytest.mark.parametrize("kwargs, key", [
    ({"enabled": 1}, "enabled"),
    ({"poly_modulus_degree": 3000}, "poly_modulus_degree"),
    ({"coeff_mod_bit_sizes": (60, 40, 40)}, "coeff_mod_bit_sizes"),
    ({"coeff_mod_bit_sizes": (61, 20)}, "coeff_mod_bit_sizes"),
    ({"poly_modulus_degree": 2048, "coeff_mod_bit_sizes": (44, 20)}, "coeff_mod_bit_sizes"),
    ({"scale_bits": 30}, "scale_bits"),
    ({"scale_bits": 0}, "scale_bits"),
    ({"pack_bits": -1}, "pack_bits"),
    ({"quant_bits": 0}, "quant_bits"),
    ({"clip_range": 0.0}, "clip_range"),
    ({"clip_range": float("inf")}, "clip_range"),
    ({"max_summands": 0}, "max_summands"),
    ({"max_weight": 2.5}, "max_weight"),
    ({"rounding": "up"}, "rounding"),
    ({"coeff_mod_bit_sizes": (60, 20), "scale_bits": 17, "pack_bits": 20, "quant_bits": 16},
     "pack_bits"),
    ({"coeff_mod_bit_sizes": (60, 20), "scale_bits": 8, "pack_bits": 40, "quant_bits": 16},
     "scale_bits"),
])
def test_validation_names_bad_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        HEConfig(**kwargs)


def test_from_mapping_round_trip_and_unknown_key() -> None:
    cfg = HEConfig(scale_bits=20, max_weight=512)
    assert HEConfig.from_mapping(cfg.to_dict()) == cfg
    assert HEConfig.from_mapping({"scale-bits": 20, "max-weight": 512}) == cfg
    with pytest.raises(ValueError, match="scale_bitz"):
        HEConfig.from_mapping({"scale_bitz": 3})


def test_fingerprint_tracks_encoding_fields_only() -> None:
    base = HEConfig()
    assert base.fingerprint() == HEConfig(rounding="stochastic").fingerprint()
    assert base.fingerprint() != HEConfig(scale_bits=20).fingerprint()
    assert base.fingerprint() != HEConfig(max_weight=512).fingerprint()
