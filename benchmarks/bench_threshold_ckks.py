#!/usr/bin/env python
"""Threshold (multiparty) CKKS with OpenFHE: one aggregation round, measured, not integrated.

Needs the ``openfhe`` wheel, which is not in the project's environment (the 22.04 wheels are built for
CPython 3.10)::

    python3.10 -m venv /tmp/openfhe-venv && /tmp/openfhe-venv/bin/pip install openfhe==1.6.1.0.22.4 numpy
    /tmp/openfhe-venv/bin/python benchmarks/bench_threshold_ckks.py --devices 100 --params 211136 --out runs/bench-tckks.json

Protocol (OpenFHE's "threshold FHE with aborts"): the D devices build a joint public key in a chain
(``KeyGen`` then ``MultipartyKeyGen`` D-1 times; nobody holds the joint secret) and each Shamir-shares its
secret key share among all devices (``ShareKeys``, threshold t).  A round: each device encrypts ``[w*x, w]``
under the joint public key (``Encrypt``; ``ceil((P+1) / (N/2))`` ciphertexts); the server adds them; every
surviving device sends a partial decryption of the sum (``MultipartyDecryptLead/Main``); for every dropped
device the server collects t shares of its secret key (``RecoverSharedKey``) and computes its partial
decryption; ``MultipartyDecryptFusion`` gives the sum.  Dropped devices do not upload: the sum is that of the
survivors.  Fusion runs at the server here, so the server learns the sum (keeping it from the server costs
every device a download of all D partial decryptions).

Timing: each step per device, one thread.  ``proj s`` (devices in parallel) = max encrypt + server add +
max partial decryption + server recovery and partial decryptions of the dropped devices + fusion;
``round s`` (one core) = all of it summed.  Key set-up (the D-step keygen chain and the key sharing) is
one-off per key epoch and reported apart.  Bytes are OpenFHE's BINARY serialisation; a device uploads its
ciphertexts and its partial decryption.  ``--params`` smaller than the model is scaled linearly in the
ciphertext count (``--extrapolate``), the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import openfhe as fhe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from secagg.devices import device_vector  # noqa: E402  (numpy only)


def make_context(args: argparse.Namespace):
    """CKKS, depth 0 (adds only), multiparty, 128-bit classical security; OpenFHE picks the ring."""
    params = fhe.CCParamsCKKSRNS()
    params.SetMultiplicativeDepth(0)
    params.SetScalingModSize(args.scale_bits)
    params.SetFirstModSize(args.first_mod_bits)
    params.SetScalingTechnique(fhe.FIXEDMANUAL)
    params.SetSecurityLevel(fhe.HEStd_128_classic)
    cc = fhe.GenCryptoContext(params)
    for feature in (fhe.PKE, fhe.KEYSWITCH, fhe.LEVELEDSHE, fhe.MULTIPARTY):
        cc.Enable(feature)
    return cc


def timed(fn, *a):
    t0 = time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - t0


def bad_recoveries(cc, first_ct, partial: dict, keys: list, dropped: set[int]) -> list[int]:
    """Dropped devices whose recovered key does not decrypt: fuse the first ciphertext with that one
    recovered partial decryption and the real key's for everyone else (untimed check)."""
    truth = {i: cc.MultipartyDecryptMain([first_ct], keys[i].secretKey)[0] for i in dropped}
    bad = []
    for i in sorted(dropped):
        parts = [partial[j][0] if (j == i or j not in dropped) else truth[j] for j in range(len(keys))]
        try:
            cc.MultipartyDecryptFusion(parts)
        except RuntimeError:  # OpenFHE: "approximation error is too high"
            bad.append(i)
    return bad


def run(args: argparse.Namespace) -> dict:
    cc = make_context(args)
    ring = cc.GetRingDimension()
    slots = ring // 2
    n_slots = args.params + 1
    n_ct = math.ceil(n_slots / slots)
    d = args.devices
    rng = np.random.default_rng([args.seed, 10**6])
    weights = rng.integers(args.min_weight, args.max_weight + 1, d)
    n_drop = int(round(args.dropout * d))
    dropped = set(int(i) for i in np.random.default_rng([args.seed, 7]).choice(d, n_drop, replace=False))
    alive = [i for i in range(d) if i not in dropped]

    # key set-up (one-off): chained joint key, Shamir shares of every key share
    keys, keygen = [], []
    kp, dt = timed(cc.KeyGen)
    keys.append(kp)
    keygen.append(dt)
    for _ in range(1, d):
        kp, dt = timed(cc.MultipartyKeyGen, keys[-1].publicKey)
        keys.append(kp)
        keygen.append(dt)
    joint = keys[-1].publicKey
    shares, share_s = {}, []
    for i in range(d):
        shares[i], dt = timed(cc.ShareKeys, keys[i].secretKey, d, args.threshold, i + 1, "shamir")
        share_s.append(dt)

    # round: encrypt (survivors), add, partial decryptions, recovery of the dropped, fusion
    enc_s, up_ct = [], 0
    total = None
    add_s = 0.0
    for i in alive:
        vec = device_vector(args.seed, i, args.params, args.std).astype(np.float64)
        data = np.concatenate([vec * weights[i], [float(weights[i])]])
        t0 = time.perf_counter()
        cts = [cc.Encrypt(joint, cc.MakeCKKSPackedPlaintext(data[k * slots:(k + 1) * slots].tolist()))
               for k in range(n_ct)]
        enc_s.append(time.perf_counter() - t0)
        up_ct = sum(len(fhe.Serialize(c, fhe.BINARY)) for c in cts)
        t0 = time.perf_counter()
        total = cts if total is None else [cc.EvalAdd(a, b) for a, b in zip(total, cts)]
        add_s += time.perf_counter() - t0
    down = sum(len(fhe.Serialize(c, fhe.BINARY)) for c in total)
    partial, dec_s = {}, []
    for j, i in enumerate(alive):
        fn = cc.MultipartyDecryptLead if j == 0 else cc.MultipartyDecryptMain
        partial[i], dt = timed(fn, total, keys[i].secretKey)
        dec_s.append(dt)
    up_share = sum(len(fhe.Serialize(c, fhe.BINARY)) for c in partial[alive[0]])
    t0 = time.perf_counter()
    holders = alive[:args.threshold]
    for i in sorted(dropped):
        recovered = fhe.PrivateKey(cc)  # empty; RecoverSharedKey fills it
        cc.RecoverSharedKey(recovered, {h + 1: shares[i][h + 1] for h in holders}, d, args.threshold, "shamir")
        partial[i] = cc.MultipartyDecryptMain(total, recovered)
    recover_s = time.perf_counter() - t0
    bad = bad_recoveries(cc, total[0], partial, keys, dropped)
    for i in bad:  # untimed: continue with the real key share so the sum can still be checked
        partial[i] = cc.MultipartyDecryptMain(total, keys[i].secretKey)
    t0 = time.perf_counter()
    result = []
    for k in range(n_ct):
        pt = cc.MultipartyDecryptFusion([partial[i][k] for i in range(d)])
        pt.SetLength(slots)
        result.extend(pt.GetRealPackedValue())
    fusion_s = time.perf_counter() - t0
    out = np.asarray(result[:n_slots])
    avg = out[:args.params] / out[args.params]
    w = weights[alive].astype(np.float64)
    ref = sum(float(weights[i]) * device_vector(args.seed, i, args.params, args.std).astype(np.float64)
              for i in alive) / w.sum()
    rel = float(np.linalg.norm(avg - ref) / np.linalg.norm(ref))
    server = add_s + recover_s + fusion_s
    return dict(method="threshold-ckks (openfhe)", ring_dim=ring, n_ciphertexts=n_ct, devices=d, params=args.params,
                dropped=len(dropped), bad_recoveries=len(bad), threshold=args.threshold, up_bytes=up_ct + up_share, up_ct_bytes=up_ct,
                up_share_bytes=up_share, down_bytes=down, encrypt_max_s=max(enc_s), encrypt_sum_s=sum(enc_s),
                partial_max_s=max(dec_s), partial_sum_s=sum(dec_s), add_s=add_s, recover_s=recover_s,
                fusion_s=fusion_s, server_s=server, proj_s=max(enc_s) + max(dec_s) + server,
                round_s=sum(enc_s) + sum(dec_s) + server, keygen_chain_s=sum(keygen), share_keys_max_s=max(share_s),
                rel_err=rel, total_weight=float(out[args.params]), ref_total_weight=float(w.sum()))


def extrapolate(res: dict, model_params: int) -> dict:
    """Scale the per-ciphertext costs of a run on fewer parameters to ``model_params`` (linear in n_ct)."""
    slots = res["ring_dim"] // 2
    factor = math.ceil((model_params + 1) / slots) / res["n_ciphertexts"]
    out = dict(res, extrapolated_from_params=res["params"], params=model_params, scale=factor)
    for key in ("up_bytes", "up_ct_bytes", "up_share_bytes", "down_bytes", "encrypt_max_s", "encrypt_sum_s",
                "partial_max_s", "partial_sum_s", "add_s", "recover_s", "fusion_s", "server_s", "proj_s", "round_s"):
        out[key] = res[key] * factor
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--params", type=int, default=211_136)
    ap.add_argument("--extrapolate", type=int, default=None, help="scale the measured run to this many params")
    ap.add_argument("--threshold", type=int, default=None,
                    help="shares needed to recover a dropped device's key (OpenFHE wants > D/2; default D//2 + 1)")
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--scale-bits", type=int, default=40)
    ap.add_argument("--first-mod-bits", type=int, default=60)
    ap.add_argument("--min-weight", type=int, default=10)
    ap.add_argument("--max-weight", type=int, default=300)
    ap.add_argument("--std", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threshold is None:
        args.threshold = args.devices // 2 + 1
    res = run(args)
    if args.extrapolate:
        res = extrapolate(res, args.extrapolate)
    per = res["params"]
    print(f"{res['method']}: N={res['ring_dim']} {res['n_ciphertexts']} ct, {res['devices']} devices, "
          f"{res['dropped']} dropped ({res['bad_recoveries']} recovered keys did not decrypt), t={res['threshold']}"
          + (f" (measured at {res['extrapolated_from_params']} params, x{res['scale']:.1f})" if args.extrapolate else ""))
    print(f"  upload {res['up_bytes'] / per:.2f} B/param (ciphertexts {res['up_ct_bytes'] / per:.2f} + partial "
          f"decryption {res['up_share_bytes'] / per:.2f}), download {res['down_bytes'] / per:.2f} B/param")
    print(f"  proj {res['proj_s']:.2f} s (encrypt max {res['encrypt_max_s']:.3f} + partial max "
          f"{res['partial_max_s']:.3f} + server {res['server_s']:.2f}: add {res['add_s']:.2f}, recover "
          f"{res['recover_s']:.2f}, fusion {res['fusion_s']:.2f}); one core {res['round_s']:.2f} s; rel err "
          f"{res['rel_err']:.1e}; key set-up: chain {res['keygen_chain_s']:.2f} s, ShareKeys max "
          f"{res['share_keys_max_s']:.3f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
