#!/usr/bin/env python
"""No single colluder: CKKS with pairwise masks (design A) vs threshold CKKS (design B) vs Flower SecAgg+.

    python benchmarks/bench_masked_ckks.py --params 211136 --devices 100 \\
        --tckks-json runs/bench-tckks.json --secagg-json runs/bench-secagg.json --out runs/bench-masked.json

masked-ckks (design A, measured here, one thread): the four stages of ``shared_models/crypto/mask_round.py``
    for D devices on a SecAgg+ neighbour graph (``--num-shares`` neighbours, threshold ``--threshold``):
    keys, shares (Shamir via Flower + Fernet), masked upload (``upload_mask`` + ``encrypt_update(c0_mask=)``,
    the server adds with ``Aggregator``), unmasking (replies, ``residual_from_shares``, ``unmask_aggregate``),
    then one device's ``decrypt_average``.  Run twice: no drop-out, and ``--dropout`` of the devices dropping
    after the share stage (their updates never arrive; their pair masks are recovered from shares).
threshold-ckks (design B): the JSON of ``benchmarks/bench_threshold_ckks.py`` (OpenFHE, its own venv).
secagg+: the ``secagg+`` row of a ``benchmarks/bench_secagg.py --out`` JSON (Flower's Ray simulation, wall
    clock), given with ``--secagg-json`` or made by ``--run-secagg`` (runs ``bench_secagg.py --methods secagg+
    --num-shares K --threshold T`` with this run's K and T, a few minutes on 2 cores).

Columns: ``up B/param`` all bytes a device sends in the round / params; ``proj s`` devices in parallel:
sum over stages of the slowest device's time in the stage + server time (+ one decrypt); ``1-core s``:
every device's time summed + server (the D devices sharing this machine's cores one after another);
``rel err`` relative L2 error of the decrypted average against the float64 average of the devices in
the sum.  Synthetic devices and weights: ``benchmarks/secagg/devices.py`` (same as bench_secagg.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))

from secagg.devices import device_vector, rel_err  # noqa: E402
from shared_models.crypto import (Aggregator, HEConfig, decrypt_average, encrypt_update,  # noqa: E402
                                  load_context, make_secret_context, public_context_bytes)
from shared_models.crypto import seed_sharing as sharing  # noqa: E402
from shared_models.crypto.context import context_params  # noqa: E402
from shared_models.crypto.mask_round import MaskDevice, residual_from_shares, unmask_aggregate  # noqa: E402

STAGES = ("keys", "shares", "upload", "unmask")


class Clock:
    """Per-device seconds and bytes per stage, server seconds per step.  ``now``: time.process_time (CPU
    seconds of this single-threaded process: what the wall time is on an idle core, whatever else the
    machine runs) or time.perf_counter (wall)."""

    def __init__(self, ids: list[int], now) -> None:
        self.now = now
        self.dev = {s: {u: 0.0 for u in ids} for s in STAGES}
        self.sent = {u: 0 for u in ids}
        self.steps: dict[str, float] = {}

    @property
    def server(self) -> float:
        return sum(self.steps.values())

    def time(self, stage: str, u: int, fn, *a, **kw):
        t0 = self.now()
        out = fn(*a, **kw)
        self.dev[stage][u] += self.now() - t0
        return out

    def serve(self, step: str, fn, *a, **kw):
        t0 = self.now()
        out = fn(*a, **kw)
        self.steps[step] = self.steps.get(step, 0.0) + self.now() - t0
        return out


def masked_round(args: argparse.Namespace, ctx, pub, cfg: HEConfig, dropped: set[int]) -> dict[str, Any]:
    """One design-A round; ``dropped`` devices complete the share stage and never upload."""
    params = context_params(pub)
    n_ct = cfg.n_ciphertexts(args.params)
    ids = list(range(args.devices))
    weights = np.random.default_rng([args.seed, 10**6]).integers(args.min_weight, args.max_weight + 1, args.devices)
    context = f"bench/round-1/{args.seed}".encode()
    graph = sharing.neighbour_graph(ids, num_shares=args.num_shares, graph_seed=context)
    clock = Clock(ids, time.process_time if args.clock == "cpu" else time.perf_counter)
    devices = {u: clock.time("keys", u, MaskDevice.start, u) for u in ids}
    public = {u: d.public for u, d in devices.items()}
    for u in ids:
        clock.sent[u] += 64
    for u in ids:  # stage 1: shares out, forwarded by the server, opened by the recipients
        tokens = clock.time("shares", u, devices[u].share_tokens, {v: public[v] for v in graph[u]},
                            threshold=args.threshold, context=context)
        clock.sent[u] += sum(len(t) for t in tokens.values())
        for v, token in tokens.items():
            clock.time("shares", v, devices[v].receive_tokens, {u: token}, public, context=context)
    agg = Aggregator(pub, expected_count=n_ct, cfg=cfg)
    enc = {}
    for u in ids:  # stage 2
        if u in dropped:
            continue
        mask = clock.time("upload", u, devices[u].upload_mask, {v: public[v] for v in graph[u]}, context=context,
                          n_ciphertexts=n_ct, degree=params.degree, modulus=params.modulus)
        vec = device_vector(args.seed, u, args.params, args.std)  # "training": not timed
        t0 = clock.now()
        blob = encrypt_update(ctx, vec, weight=int(weights[u]), cfg=cfg, c0_mask=mask)
        enc[u] = clock.now() - t0
        clock.dev["upload"][u] += enc[u]
        clock.sent[u] += len(blob)
        clock.serve("add", agg.add, blob)
    in_sum = set(ids) - dropped
    replies = {}
    for v in sorted(in_sum):  # stage 3
        replies[v] = clock.time("unmask", v, devices[v].unmask_reply, in_sum=in_sum & graph[v],
                                dropped=dropped & graph[v])
        clock.sent[v] += sum(len(s) + 8 for s in replies[v].values())
    summed = clock.serve("add", agg.to_bytes)
    residual = clock.serve("residual", residual_from_shares, replies, graph=graph, keys=public, in_sum=in_sum, dropped=dropped,
                           threshold=args.threshold, context=context, n_ciphertexts=n_ct, degree=params.degree,
                           modulus=params.modulus)
    summed = clock.serve("unmask", unmask_aggregate, pub, summed, residual, cfg=cfg)
    t0 = clock.now()
    avg, total = decrypt_average(ctx, summed, cfg=cfg)
    dec = clock.now() - t0
    w = weights[sorted(in_sum)].astype(np.float64)
    ref = sum(float(weights[u]) * device_vector(args.seed, u, args.params, args.std).astype(np.float64)
              for u in sorted(in_sum)) / w.sum()
    alive = sorted(in_sum)
    stage_max = {s: max(clock.dev[s][u] for u in (ids if s in ("keys", "shares") else alive)) for s in STAGES}
    device_total = sum(sum(clock.dev[s].values()) for s in STAGES)
    sent = [clock.sent[u] for u in alive]
    return dict(method="masked-ckks", dropped=len(dropped), devices=args.devices, params=args.params,
                num_shares=args.num_shares, threshold=args.threshold, up_bytes=float(np.mean(sent)),
                down_bytes=float(len(summed)), stage_max_s=stage_max, encrypt_max_s=max(enc.values()),
                server_s=clock.server, server_steps_s=clock.steps, decrypt_s=dec, clock=args.clock, proj_s=sum(stage_max.values()) + clock.server + dec,
                round_s=device_total + clock.server + dec, rel_err=rel_err(avg, ref),
                total_weight=float(total), ref_total_weight=float(w.sum()))


def secagg_row(path: Path) -> dict[str, Any]:
    """The secagg+ row of a bench_secagg.py JSON, in this table's terms."""
    data = json.loads(path.read_text())
    row = next(r for r in data["results"] if r["method"] == "secagg+")
    return dict(method=f"secagg+ k={row['num_shares']} t={row['threshold']}", dropped=0, up_bytes=row["up_bytes"],
                proj_s=row["proj_s"], round_s=row["round_s"], server_s=row["server_s"], rel_err=row.get("rel_err"),
                params=data["args"]["params"], source=str(path))


def tckks_row(path: Path) -> dict[str, Any]:
    """The bench_threshold_ckks.py JSON."""
    row = json.loads(path.read_text())
    row["method"] = f"threshold-ckks N={row['ring_dim']} t={row['threshold']}"
    row["source"] = str(path)
    return row


def print_table(rows: list[dict[str, Any]], params: int) -> None:
    head = f"{'method':30s} {'dropped':>7s} {'up B/param':>10s} {'proj s':>7s} {'1-core s':>8s} {'server s':>8s} {'rel err':>8s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        err = f"{r['rel_err']:8.1e}" if r.get("rel_err") is not None else f"{'-':>8s}"
        print(f"{r['method']:30s} {r['dropped']:7d} {r['up_bytes'] / params:10.2f} {r['proj_s']:7.2f} "
              f"{r['round_s']:8.2f} {r['server_s']:8.2f} {err}")
    for r in rows:
        if r["method"] == "masked-ckks":
            st = ", ".join(f"{s} {v:.3f}" for s, v in r["stage_max_s"].items())
            sv = ", ".join(f"{s} {v:.3f}" for s, v in r["server_steps_s"].items())
            print(f"masked-ckks, {r['dropped']} dropped ({r['clock']} clock): slowest device per stage: {st} s "
                  f"(encrypt alone {r['encrypt_max_s']:.3f}); server: {sv} s; decrypt {r['decrypt_s']:.3f} s; "
                  f"k={r['num_shares']} t={r['threshold']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=int, default=211_136)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--num-shares", type=int, default=25,
                    help="neighbours per device incl. itself (25: a round survives 30%% random drop-outs at t=8 "
                         "with probability 0.996; SecAgg+'s 15 almost never does)")
    ap.add_argument("--threshold", type=int, default=8, help="shares to recover a seed (server + t-1 colluders learn nothing)")
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--min-weight", type=int, default=10)
    ap.add_argument("--max-weight", type=int, default=300)
    ap.add_argument("--std", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tckks-json", type=Path, default=None, help="output of bench_threshold_ckks.py --out")
    ap.add_argument("--secagg-json", type=Path, default=None, help="output of bench_secagg.py --out (secagg+ row)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="cpu: process_time (idle-core seconds, robust to other load); wall: perf_counter")
    ap.add_argument("--run-secagg", action="store_true", help="run bench_secagg.py's secagg+ row first")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = HEConfig()
    ctx = make_secret_context(cfg, n_threads=1)
    pub = load_context(public_context_bytes(ctx), n_threads=1)
    warm = encrypt_update(ctx, device_vector(args.seed, 0, args.params, args.std), weight=1, cfg=cfg)  # first-call
    Aggregator(pub, expected_count=cfg.n_ciphertexts(args.params), cfg=cfg).add(warm)  # costs, untimed
    n_drop = int(round(args.dropout * args.devices))
    drop = set(int(i) for i in np.random.default_rng([args.seed, 7]).choice(args.devices, n_drop, replace=False))
    rows = [masked_round(args, ctx, pub, cfg, set()), masked_round(args, ctx, pub, cfg, drop)]
    if args.tckks_json:
        rows.append(tckks_row(args.tckks_json))
    if args.run_secagg:
        args.secagg_json = args.secagg_json or Path("runs/bench-secagg-masked.json")
        subprocess.run([sys.executable, str(HERE / "bench_secagg.py"), "--methods", "secagg+", "--params",
                        str(args.params), "--devices", str(args.devices), "--num-shares", str(args.num_shares),
                        "--threshold", str(args.threshold), "--out", str(args.secagg_json)], check=True)
    if args.secagg_json:
        rows.append(secagg_row(args.secagg_json))
    print(f"params={args.params} devices={args.devices} dropout={args.dropout}")
    print_table(rows, args.params)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(args).items()}, results=rows), indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
