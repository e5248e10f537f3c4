"""The in-process CKKS row of bench_secagg.py ("ckks"): the simulation's CKKS functions on one thread.

D encrypt_update calls timed one by one (devices), Aggregator.add x D + to_bytes (server, public context
only), one decrypt_average (a device).  round s = sum(encrypt) + aggregate + decrypt; proj s = max(encrypt)
+ aggregate + decrypt.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from secagg.devices import device_vector, device_weights, plain_average, rel_err
from shared_models.crypto import (Aggregator, HEConfig, decrypt_average, encrypt_update, load_context,
                                  make_secret_context, public_context_bytes)


def encrypt_and_add(ctx: Any, agg: Aggregator, cfg: HEConfig,
                    args: argparse.Namespace) -> tuple[list[float], float, list[int]]:
    """Every device encrypts its update, the server adds it: encrypt seconds, total add seconds, bytes up."""
    weights = device_weights(args)
    enc: list[float] = []
    add = 0.0
    up: list[int] = []
    for d in range(args.devices):
        vec = device_vector(args.seed, d, args.params, args.std)  # "training": not timed
        t0 = time.perf_counter()
        blob = encrypt_update(ctx, vec, weight=int(weights[d]), cfg=cfg)
        t1 = time.perf_counter()
        agg.add(blob)
        add += time.perf_counter() - t1
        enc.append(t1 - t0)
        up.append(len(blob))
        del blob
    return enc, add, up


def he_settings(cfg: HEConfig, params: int) -> dict[str, Any]:
    """The CKKS parameters, for the JSON and the table footnote."""
    return dict(poly_modulus_degree=cfg.poly_modulus_degree, coeff_mod_bit_sizes=list(cfg.coeff_mod_bit_sizes),
                scale_bits=cfg.scale_bits, n_ciphertexts=cfg.n_ciphertexts(params))


def run_ckks(args: argparse.Namespace) -> dict[str, Any]:
    """One CKKS aggregation round in this process; returns the "ckks" row."""
    cfg = HEConfig()
    ctx = make_secret_context(cfg, n_threads=1)
    pub = load_context(public_context_bytes(ctx), n_threads=1)
    assert not pub.is_private()
    agg = Aggregator(pub, expected_count=cfg.n_ciphertexts(args.params), cfg=cfg)
    if args.warmup_rounds:  # untimed: first-call costs, like the Flower methods' warm-up round
        warm = encrypt_update(ctx, device_vector(args.seed, 0, args.params, args.std), weight=1, cfg=cfg)
        Aggregator(pub, expected_count=cfg.n_ciphertexts(args.params), cfg=cfg).add(warm)
    enc, add, up = encrypt_and_add(ctx, agg, cfg, args)
    t0 = time.perf_counter()
    summed = agg.to_bytes()
    ser = time.perf_counter() - t0
    t0 = time.perf_counter()
    avg, total_weight = decrypt_average(ctx, summed, cfg=cfg)
    dec = time.perf_counter() - t0
    server = add + ser
    return dict(method="ckks", round_s=sum(enc) + server + dec, proj_s=max(enc) + server + dec, server_s=server,
                up_bytes=float(np.mean(up)), down_bytes=float(len(summed)), encrypt_mean_s=float(np.mean(enc)),
                encrypt_max_s=float(max(enc)), encrypt_sum_s=float(sum(enc)), aggregate_add_s=add,
                aggregate_serialize_s=ser, decrypt_s=dec, rel_err=rel_err(avg, plain_average(args)),
                total_weight=float(total_weight), he=he_settings(cfg, args.params))
