#!/usr/bin/env python
"""One aggregation round: plaintext FedAvg vs Flower's SecAgg+ vs our server-blind CKKS (a script, not a test).

    python benchmarks/bench_secagg.py --params 211136 --devices 100 --out runs/bench-secagg.json

Same model size (default: the 211,136 float32 shared parameters of the ML-100K long-short model) and the
same D devices for every method.  Device "training" is a no-op: device d returns the fixed random vector
N(0, std^2) seeded by (seed, d) with weight (num_examples) U[min_weight, max_weight], so only the cost of
the aggregation protocol is compared.

plain     Flower simulation (Ray backend, --cpus CPUs, 1 per simulated device), legacy ServerApp:
          LegacyContext + DefaultWorkflow with the default fit workflow (FedAvg of float32 arrays),
          ClientApp(client_fn) with a NumPyClient.
secagg+   the same simulation with DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...)) and
          ClientApp(mods=[secaggplus_mod]): stages setup / share keys / collect masked vectors / unmask.
          Defaults: num_shares = 2*ceil(log2 D)+1 (15 at D=100; SecAgg+ wants O(log D) neighbours, Flower's
          example uses 3 of 5 nodes), reconstruction_threshold = num_shares//2 + 1 (the example's 2 of 3),
          clipping_range / quantization_range / modulus_range / max_weight: the workflow's defaults.
ckks-sim  our CKKS aggregation in the same simulation (Message-API ClientApp): every device decrypts the
          encrypted global sum it receives (decrypt_average), encrypts its update (encrypt_update); the
          ServerApp adds the D updates with Aggregator (public context only) and keeps the encrypted sum.
          The first timed round downloads a sum left by an earlier round (the warm-up round, or a
          pre-made one).  No signatures (the real client also signs a SHA-256 of its payload).
ckks      the same functions in this process on one thread: D encrypt_update calls timed one by one,
          Aggregator.add x D + to_bytes (server), one decrypt_average (a device).

Columns (mean over --rounds timed rounds, after --warmup-rounds untimed ones):
  round s   Flower rows: wall time of the round inside the ServerApp, with the D simulated devices sharing
            --cpus cores (Ray / simulation start-up and a warm-up message to every node excluded; the byte
            metering below excluded).  ckks: sum(encrypt) + aggregate + decrypt on one core.
  proj s    the round if the D devices ran in parallel and the network were free.  Flower rows: sum over
            protocol stages of the slowest device's time in that stage + server time.  ckks:
            max(encrypt) + aggregate + decrypt.
  server s  Flower rows: round time minus the time spent waiting in Grid.send_and_receive (strategy and
            protocol work in the ServerApp; SecAgg+ still calls FedAvg.aggregate_fit on D copies of the
            unmasked sum).  ckks: deserialize + add D updates + serialize the sum.
  up/down   bytes per device per round.  Flower rows: size of the protobuf Message
            (flwr.common.serde.message_to_proto(m).ByteSize()) of every message a device receives / sends
            in the round, mean over devices (SecAgg+: all 4 stages).  ckks: len(encrypted update) up,
            len(encrypted sum) down.  One-time key distribution is not counted for CKKS.
  enc/dec   CKKS device encrypt / decrypt seconds (mean over devices).
  rel err   relative L2 error of the aggregated weighted average vs the float64 plaintext one.

Both Flower strategies cast the aggregate to float32 (SecAgg+ dequantizes to float64, which would double the
next round's download).  Each Flower method runs in its own child process (one Ray instance at a time).
The JSON (--out) holds every number, per round and per protocol stage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
if str(HERE) not in sys.path:  # sibling modules secagg_*.py (also on the Ray workers' path: the script's dir)
    sys.path.insert(1, str(HERE))

# Layout: secagg.devices (synthetic devices, reference average), secagg.ckks (in-process CKKS row),
# secagg.sim (one Flower simulation, in a child) with secagg.apps (ClientApps), secagg.server (ServerApp)
# and secagg.measure (timing / byte metering).  This file: CLI, orchestration, table, JSON.
from secagg.ckks import run_ckks  # noqa: E402

METHODS = ("plain", "secagg+", "ckks-sim", "ckks")
LABELS = {"plain": "plain FedAvg (sim)", "ckks-sim": "ckks (sim)", "ckks": "ckks (in-process, 1 core)"}


def default_num_shares(devices: int) -> int:
    """SecAgg+ neighbourhood ~ O(log D): 2*ceil(log2 D) + 1 (odd, as the workflow wants), capped at D."""
    return min(2 * math.ceil(math.log2(max(devices, 2))) + 1, devices)


# ---------------------------------------------------------------------------------------------- driver
def run_child(method: str, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Run one Flower method in a child process of this script (one Ray instance at a time)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.json"
        cmd = [sys.executable, os.path.abspath(__file__), *argv, "--child", method, "--child-out", str(path)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, timeout=args.child_timeout)
        if proc.returncode != 0 or not path.exists():
            raise RuntimeError(f"{method}: child process failed (exit {proc.returncode})")
        res = json.loads(path.read_text())
        res["process_s"] = time.perf_counter() - t0
        return res


# ----------------------------------------------------------------------------------------------- table
def fmt_bytes(b: float) -> str:
    """Bytes as megabytes."""
    return f"{b / 1e6:.3f} MB"


def table_row(r: dict[str, Any], base: dict[str, Any] | None, args: argparse.Namespace) -> str:
    """One method's line of the table (ratios against the plain row, if run)."""
    name = LABELS.get(r["method"], r["method"])
    if r["method"] == "secagg+":
        name = f"secagg+ (sim) k={r['num_shares']} t={r['threshold']}"
    x_round = f"{r['round_s'] / base['round_s']:7.2f}" if base else "    n/a"
    x_proj = f"{r['proj_s'] / base['proj_s']:7.2f}" if base else "    n/a"
    enc = f"{r['encrypt_mean_s']:9.3f}" if "encrypt_mean_s" in r else f"{'-':>9s}"
    dec = f"{r['decrypt_s']:6.3f}" if "decrypt_s" in r else f"{'-':>6s}"
    err = f"{r['rel_err']:8.1e}" if r.get("rel_err") is not None else f"{'-':>8s}"
    return (f"{name:26s} {r['round_s']:8.2f} {x_round} {r['proj_s']:7.2f} {x_proj} {r['server_s']:8.3f} "
            f"{fmt_bytes(r['up_bytes']):>10s} {r['up_bytes'] / args.params:7.2f} {fmt_bytes(r['down_bytes']):>10s} "
            f"{enc} {dec} {err}")


def ckks_note(r: dict[str, Any], args: argparse.Namespace) -> str:
    """Details of the in-process CKKS row."""
    return (f"ckks: encrypt mean {r['encrypt_mean_s']:.3f} s / max {r['encrypt_max_s']:.3f} s per device, "
            f"sum over {args.devices} devices {r['encrypt_sum_s']:.2f} s; server add {r['aggregate_add_s']:.3f} s "
            f"+ serialize {r['aggregate_serialize_s']:.3f} s; decrypt {r['decrypt_s']:.3f} s; "
            f"{r['he']['n_ciphertexts']} ciphertexts N={r['he']['poly_modulus_degree']} "
            f"{r['he']['coeff_mod_bit_sizes']} 2^{r['he']['scale_bits']}")


def flower_note(r: dict[str, Any]) -> str:
    """Details of a Flower row: simulation overheads and the stages of its last timed round."""
    st = r["rounds"][-1]["stages"]
    parts = "; ".join(f"server {s['server_before_s']:.2f} s, wait {s['wait_s']:.2f} s, "
                      f"slowest device {s['device_max_s']:.3f} s, "
                      f"up {s['up_bytes_mean'] / 1e3:.1f} kB, down {s['down_bytes_mean'] / 1e3:.1f} kB"
                      for s in st)
    extra = ""
    if r["method"] == "ckks-sim":
        extra = (f"; encrypt max {r['encrypt_max_s']:.3f} s, decrypt max {r['decrypt_max_s']:.3f} s")
    return (f"{r['method']}: simulation total {r['simulation_total_s']:.1f} s (start-up + warm-up "
            f"{r['node_wait_s'] + r['warmup_s']:.1f} s, not timed){extra}; {len(st)} stage(s): {parts}; "
            f"server after the last stage {r['rounds'][-1]['server_after_last_stage_s']:.2f} s")


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The comparison table, then one line of details (and any error warning) per method."""
    base = next((r for r in results if r["method"] == "plain"), None)
    head = (f"{'method':26s} {'round s':>8s} {'x plain':>7s} {'proj s':>7s} {'x plain':>7s} {'server s':>8s} "
            f"{'up/dev':>10s} {'B/param':>7s} {'down/dev':>10s} {'enc s/dev':>9s} {'dec s':>6s} {'rel err':>8s}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(table_row(r, base, args), flush=True)
    print()
    for r in results:
        if r["method"] == "ckks":
            print(ckks_note(r, args))
        elif "rounds" in r:
            print(flower_note(r))
        if r.get("errors") or r.get("warmup_errors"):
            print(f"WARNING {r['method']}: {r.get('errors')} error replies in the round, "
                  f"{r.get('warmup_errors')} in the warm-up")


# ------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The command line (the module docstring is the help text)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=int, default=211_136, help="shared-model size (float32 parameters)")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--cpus", type=int, default=2, help="Ray num_cpus (each simulated device takes 1)")
    ap.add_argument("--rounds", type=int, default=1, help="measured Flower rounds (timings averaged)")
    ap.add_argument("--warmup-rounds", type=int, default=1,
                    help="untimed Flower rounds first (the first round pays one-off per-actor costs)")
    ap.add_argument("--num-shares", type=int, default=None,
                    help="SecAgg+ num_shares (default 2*ceil(log2 D)+1, i.e. 15 for D=100)")
    ap.add_argument("--threshold", type=int, default=None,
                    help="SecAgg+ reconstruction_threshold (default num_shares//2 + 1)")
    ap.add_argument("--clipping-range", type=float, default=8.0, help="SecAgg+ clipping_range (Flower default)")
    ap.add_argument("--quantization-range", type=int, default=2**22, help="SecAgg+ quantization_range (Flower default)")
    ap.add_argument("--modulus-range", type=int, default=2**32, help="SecAgg+ modulus_range (Flower default)")
    ap.add_argument("--secagg-max-weight", type=float, default=1000.0, help="SecAgg+ max_weight (Flower default)")
    ap.add_argument("--min-weight", type=int, default=10)
    ap.add_argument("--max-weight", type=int, default=300)
    ap.add_argument("--std", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child-timeout", type=float, default=900.0, help="seconds per Flower simulation")
    ap.add_argument("--out", type=Path, default=None, help="write all measurements as JSON here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    return ap


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` and fill in the SecAgg+ defaults that depend on the number of devices."""
    args = build_parser().parse_args(argv)
    if args.num_shares is None:
        args.num_shares = default_num_shares(args.devices)
    if args.threshold is None:
        args.threshold = args.num_shares // 2 + 1
    return args


def write_json(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """All measurements and the settings (without the internal --child ones) to --out."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(args={k: (str(v) if isinstance(v, Path) else v)
                                              for k, v in vars(args).items() if not k.startswith("child")},
                                        results=results), indent=1))
    print(f"wrote {args.out}")


def main() -> None:
    """Run the chosen methods (Flower ones in child processes), print the table, write the JSON."""
    argv = sys.argv[1:]
    args = parse_args(argv)
    if args.child:
        from secagg.sim import run_flower  # imports Flower after setting its environment

        res = run_flower(args.child, args)
        args.child_out.write_text(json.dumps(res))
        return

    print(f"params={args.params} devices={args.devices} cpus={args.cpus} rounds={args.rounds} "
          f"(+{args.warmup_rounds} warm-up) "
          f"x~N(0,{args.std}^2) weights~U[{args.min_weight},{args.max_weight}]; SecAgg+ num_shares={args.num_shares} "
          f"threshold={args.threshold} clip={args.clipping_range} q={args.quantization_range} "
          f"mod={args.modulus_range} max_weight={args.secagg_max_weight}", flush=True)
    results = []
    load0 = tuple(round(x, 1) for x in os.getloadavg())
    t0 = time.perf_counter()
    for method in args.methods:
        t1 = time.perf_counter()
        res = run_ckks(args) if method == "ckks" else run_child(method, args, argv)
        print(f"[{method} done in {time.perf_counter() - t1:.1f} s]", flush=True)
        results.append(res)
    print()
    print_table(results, args)
    print(f"total {time.perf_counter() - t0:.1f} s; load average (1/5/15 min) at start {load0}, at end "
          f"{tuple(round(x, 1) for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    if args.out:
        write_json(args, results)


if __name__ == "__main__":
    main()
