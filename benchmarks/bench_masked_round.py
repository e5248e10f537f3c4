#!/usr/bin/env python
"""The masked round as the system runs it (``he.masking``): ``server/masks.py`` routing, ``client/masks.py``
answering with its secrets in a state folder, the JSON codec, signed round keys, ``encode_update`` with the
mask, ``SecureAggregation`` summing, unmasking and one decryption, for D in-process devices.

    python benchmarks/bench_masked_round.py --params 211136 --devices 100 --dropout 0.3

Devices answer one after another in this process; each device's CPU seconds per stage are measured
(``time.process_time``: what it costs on an idle core, whatever else the machine runs). ``proj s``: devices
in parallel, i.e. the slowest device per stage summed, plus the server's own seconds, plus one decryption.
``up B/param``: a surviving device's update plus every masking reply it sent, over the parameters.
``rel err``: relative L2 error of the decrypted average against the float64 average of the updates in the sum.
Synthetic updates and weights: ``benchmarks/secagg/devices.py`` (as bench_secagg.py and bench_masked_ckks.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))

from secagg.devices import device_vector, rel_err  # noqa: E402
from client.masks import answer, upload_mask  # noqa: E402
from client.secure import encode_update  # noqa: E402
from client.store import DeviceStore  # noqa: E402
from server.masks import MaskCoordinator  # noqa: E402
from server.secure import SecureAggregation  # noqa: E402
from shared_models.config import build_config  # noqa: E402
from shared_models.crypto import decrypt_average, init_keys, load_device_keys, load_server_keys  # noqa: E402
from shared_models.messages import TrainReply  # noqa: E402

RUN = "bench-run"


def masked_round(args: argparse.Namespace, root: Path, dropped: set[int]) -> dict:
    cfg = build_config({"he": {"masking": True, "mask-neighbours": args.num_shares, "mask-threshold": args.threshold,
                               "max-weight": args.max_weight},
                        "federated": {"min-train-nodes": args.threshold + 1}})
    ids = [f"d{i}" for i in range(args.devices)]
    keys_dir = root / "keys"
    if not keys_dir.exists():
        init_keys(keys_dir, device_ids=ids, he=cfg.he.to_he_config())
    dev_keys = {i: load_device_keys(keys_dir, d, n_threads=1) for i, d in enumerate(ids)}
    stores = {i: DeviceStore(root / f"state-{len(dropped)}" / d) for i, d in enumerate(ids)}
    cpu: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    sent: dict[int, int] = defaultdict(int)

    def exchange(round_id, stage, requests):
        out = {}
        for n, req in requests.items():
            t0 = time.process_time()
            out[n] = answer(stage, req, store=stores[n], keys=dev_keys[n], run_id=RUN, round_id=round_id)
            cpu[stage][n] += time.process_time() - t0
            sent[n] += len(out[n])
        return out

    agg = SecureAggregation(load_server_keys(keys_dir, n_threads=1), n_params=args.params, run_id=RUN)
    agg.masks = MaskCoordinator(exchange, agg.keys, he=cfg.he, run_id=RUN, node_of=agg.node_of)
    weights = np.random.default_rng([args.seed, 10**6]).integers(1, args.max_weight + 1, args.devices)
    t_all = time.process_time()
    agg.begin(1, list(range(args.devices)))
    ready, _ = agg.prepare(1, list(range(args.devices)))
    for n in ready:
        if n in dropped:
            continue
        t0 = time.process_time()
        payload, sig, _ = encode_update({"w": device_vector(args.seed, n, args.params, args.std)},
                                        weight=int(weights[n]), keys=dev_keys[n], round_id=1, run_id=RUN,
                                        mask=lambda size, n=n: upload_mask(stores[n], dev_keys[n], size, run_id=RUN,
                                                                           round_id=1))
        cpu["upload"][n] += time.process_time() - t0
        sent[n] += len(payload)
        assert not agg.offer(TrainReply(node=n, device_id=ids[n], round_id=1, payload=payload, signature=sig))
    assert agg.finish(min_train_nodes=args.threshold + 1), agg.rejected
    device_cpu = sum(sum(v.values()) for v in cpu.values())
    server_s = time.process_time() - t_all - device_cpu
    t0 = time.process_time()
    avg, _ = decrypt_average(dev_keys[0].context, agg.broadcast(), cfg=dev_keys[0].he)
    dec = time.process_time() - t0
    alive = [n for n in ready if n not in dropped]
    w = weights[alive].astype(np.float64)
    ref = sum(float(weights[n]) * device_vector(args.seed, n, args.params, args.std).astype(np.float64)
              for n in alive) / w.sum()
    stage_max = {s: max(v.values()) for s, v in cpu.items()}
    return dict(dropped=len(dropped), up=float(np.mean([sent[n] for n in alive])), stage_max=stage_max,
                server_s=server_s, decrypt_s=dec, proj_s=sum(stage_max.values()) + server_s + dec,
                one_core_s=device_cpu + server_s + dec, rel_err=rel_err(avg, ref))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=int, default=211_136)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--num-shares", type=int, default=25)
    ap.add_argument("--threshold", type=int, default=8)
    ap.add_argument("--dropout", type=float, default=0.3, help="share of devices silent after the key exchange")
    ap.add_argument("--max-weight", type=int, default=32)
    ap.add_argument("--std", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_drop = int(round(args.dropout * args.devices))
    drop = {int(i) for i in np.random.default_rng([args.seed, 7]).choice(args.devices, n_drop, replace=False)}
    with tempfile.TemporaryDirectory() as tmp:
        rows = [masked_round(args, Path(tmp), set()), masked_round(args, Path(tmp), drop)]
    print(f"params={args.params} devices={args.devices} neighbours={args.num_shares} threshold={args.threshold}")
    print(f"{'dropped':>7s} {'up B/param':>10s} {'proj s':>7s} {'1-core s':>8s} {'server s':>8s} {'rel err':>8s}")
    for r in rows:
        print(f"{r['dropped']:7d} {r['up'] / args.params:10.3f} {r['proj_s']:7.2f} {r['one_core_s']:8.2f} "
              f"{r['server_s']:8.2f} {r['rel_err']:8.1e}")
        print("        slowest device per stage (CPU s): "
              + ", ".join(f"{s} {v:.3f}" for s, v in r["stage_max"].items()) + f"; decrypt {r['decrypt_s']:.3f}")


if __name__ == "__main__":
    main()
