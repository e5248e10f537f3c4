#!/usr/bin/env python
"""Benchmark CKKS secure-aggregation settings (a script, not a test).

    python benchmarks/bench_he.py --params 250000 --devices 100

For every setting: bytes per device update and per parameter, device encrypt
time, single-thread server time to deserialize + add D updates (+ serialize
the sum), device decrypt time, and the relative L2 error of the decrypted
weighted average vs the float64 plaintext weighted average.

"native" rows use stock TenSEAL serialization (CKKSVector.serialize); the
other rows use shared_models.crypto (seeded symmetric ciphertexts, bit-packed).
Synthetic data: a shared base model N(0, std^2) (--std, default 0.05; the
model's init_std is 0.02) plus per-device drift N(0, drift^2) (--drift, 0.01);
weights are uniform integers in [--min-weight, --max-weight].  The relative
error scales like 1/std and 1/(total weight) for float-mode rows.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator

import numpy as np
import tenseal as ts

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from shared_models.crypto import (  # noqa: E402
    Aggregator, HEConfig, decrypt_average, encrypt_update, load_context,
    make_secret_context, public_context_bytes)


@dataclasses.dataclass
class Native:
    name: str
    degree: int
    coeffs: tuple[int, ...]
    scale_bits: int
    symmetric: bool


@dataclasses.dataclass
class Ours:
    name: str
    cfg: HEConfig


SETTINGS = [
    Native("native FLARE default (pk)", 8192, (60, 40, 40), 40, False),
    Native("native depth-0 (pk)", 4096, (60, 49), 40, False),
    Native("native depth-0 symmetric", 4096, (44, 20), 21, True),
    Ours("seeded float P=40", HEConfig(coeff_mod_bit_sizes=(40, 20), scale_bits=17)),
    Ours("seeded float P=44 (default)", HEConfig()),
    Ours("seeded packed q16 k=1", HEConfig(coeff_mod_bit_sizes=(60, 20), scale_bits=17,
                                           pack_bits=33, quant_bits=16, max_weight=512)),
    Ours("seeded packed q4 k=2", HEConfig(coeff_mod_bit_sizes=(60, 20), scale_bits=17,
                                          pack_bits=20, quant_bits=4, max_weight=512)),
]


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence TenSEAL's C++ 'input does not fit' warnings (fd-level)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def make_data(args: argparse.Namespace):
    n, seed = args.params, args.seed
    rng = np.random.default_rng(seed)
    base = rng.normal(0, args.std, n)
    weights = rng.integers(args.min_weight, args.max_weight + 1, args.devices)
    devices = args.devices

    def device(d: int) -> np.ndarray:
        r = np.random.default_rng([seed, d])
        return (base + r.normal(0, args.drift, n)).astype(np.float32)

    plain = sum(int(weights[d]) * device(d).astype(np.float64) for d in range(devices))
    return device, weights, plain / weights.sum()


def run_native(s: Native, device, weights, n: int) -> dict:
    enc_type = ts.ENCRYPTION_TYPE.SYMMETRIC if s.symmetric else ts.ENCRYPTION_TYPE.ASYMMETRIC
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, s.degree, coeff_mod_bit_sizes=list(s.coeffs),
                     encryption_type=enc_type, n_threads=1)
    ctx.global_scale = 2.0 ** s.scale_bits
    pub = ts.context_from(ctx.serialize(save_secret_key=False), n_threads=1)
    assert not pub.is_private()
    acc, t_enc, t_srv, sizes = None, 0.0, 0.0, []
    for d, w in enumerate(weights):
        slots = np.concatenate([device(d) * float(w), [float(w)]])
        t0 = time.perf_counter()
        with quiet_stdout():
            blob = ts.ckks_vector(ctx, slots.tolist()).serialize()
        t1 = time.perf_counter()
        v = ts.ckks_vector_from(pub, blob)
        acc = v if acc is None else acc + v
        t_srv += time.perf_counter() - t1
        t_enc += t1 - t0
        sizes.append(len(blob))
    t0 = time.perf_counter()
    summed = acc.serialize()
    t_srv += time.perf_counter() - t0
    t0 = time.perf_counter()
    res = np.asarray(ts.ckks_vector_from(ctx, summed).decrypt())
    avg = res[:n] / res[n]
    return dict(size=float(np.mean(sizes)), enc=t_enc / len(weights), agg=t_srv,
                dec=time.perf_counter() - t0, avg=avg, mode=f"N={s.degree} {list(s.coeffs)} 2^{s.scale_bits}")


def run_ours(s: Ours, device, weights, n: int) -> dict:
    cfg = s.cfg
    ctx = make_secret_context(cfg, n_threads=1)
    pub = load_context(public_context_bytes(ctx), n_threads=1)
    assert not pub.is_private()
    agg = Aggregator(pub, expected_count=cfg.n_ciphertexts(n), cfg=cfg)
    t_enc, t_srv, sizes = 0.0, 0.0, []
    for d, w in enumerate(weights):
        t0 = time.perf_counter()
        blob = encrypt_update(ctx, device(d), weight=int(w), cfg=cfg)
        t1 = time.perf_counter()
        agg.add(blob)
        t_srv += time.perf_counter() - t1
        t_enc += t1 - t0
        sizes.append(len(blob))
    t0 = time.perf_counter()
    summed = agg.to_bytes()
    t_srv += time.perf_counter() - t0
    t0 = time.perf_counter()
    avg, _ = decrypt_average(ctx, summed, cfg=cfg)
    mode = f"N={cfg.poly_modulus_degree} {list(cfg.coeff_mod_bit_sizes)} 2^{cfg.scale_bits}"
    if cfg.packed:
        mode += f" q{cfg.quant_bits}/lane{cfg.pack_bits}x{cfg.values_per_slot}"
    return dict(size=float(np.mean(sizes)), enc=t_enc / len(weights), agg=t_srv,
                dec=time.perf_counter() - t0, avg=avg, mode=mode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=int, default=250_000)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--min-weight", type=int, default=10)
    ap.add_argument("--max-weight", type=int, default=300)
    ap.add_argument("--std", type=float, default=0.05)
    ap.add_argument("--drift", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated substrings of setting names")
    args = ap.parse_args()
    device, weights, plain = make_data(args)
    picks = [s for s in SETTINGS if not args.only or any(k in s.name for k in args.only.split(","))]
    print(f"params={args.params} devices={args.devices} weights~U[{args.min_weight},{args.max_weight}] "
          f"x~N(0,{args.std}^2)+N(0,{args.drift}^2)  (single thread; targets: <=12 B/param, "
          f"rel err <=1e-4, agg <=2 s)")
    head = f"{'setting':30s} {'params':34s} {'B/update':>10s} {'B/param':>8s} {'enc s/param':>11s} " \
           f"{'enc s/dev':>9s} {'agg s':>7s} {'dec s':>6s} {'rel err':>9s}"
    print(head)
    print("-" * len(head))
    for s in picks:
        r = (run_native if isinstance(s, Native) else run_ours)(s, device, weights, args.params)
        err = np.linalg.norm(r["avg"] - plain) / np.linalg.norm(plain)
        print(f"{s.name:30s} {r['mode']:34s} {r['size']:10.0f} {r['size'] / args.params:8.2f} "
              f"{r['enc'] / args.params:11.2e} {r['enc']:9.3f} {r['agg']:7.3f} {r['dec']:6.3f} {err:9.2e}",
              flush=True)


if __name__ == "__main__":
    main()
