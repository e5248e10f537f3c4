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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("plain", "secagg+", "ckks-sim", "ckks")
BENCH_RECORD = "bench-timing"  # ConfigRecord the client-side timing mod adds to replies (removed before metering)


# ----------------------------------------------------------------------------------------- synthetic devices
def device_vector(seed: int, d: int, n: int, std: float) -> np.ndarray:
    return np.random.default_rng([seed, d]).normal(0.0, std, n).astype(np.float32)


def device_weights(args: argparse.Namespace) -> np.ndarray:
    rng = np.random.default_rng([args.seed, 10**6])
    return rng.integers(args.min_weight, args.max_weight + 1, args.devices)


def plain_average(args: argparse.Namespace) -> np.ndarray:
    w = device_weights(args)
    acc = np.zeros(args.params, dtype=np.float64)
    for d in range(args.devices):
        acc += float(w[d]) * device_vector(args.seed, d, args.params, args.std)
    return acc / w.sum()


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(got, dtype=np.float64) - ref) / np.linalg.norm(ref))


def default_num_shares(devices: int) -> int:
    """SecAgg+ neighbourhood ~ O(log D): 2*ceil(log2 D) + 1 (odd, as the workflow wants), capped at D."""
    return min(2 * math.ceil(math.log2(max(devices, 2))) + 1, devices)


# ----------------------------------------------------------------------------- Flower simulation (child)
def ckks_cache() -> dict:
    """Per-process cache for Ray actors (the ClientApp is unpickled anew for every message)."""
    return sys.__dict__.setdefault("_fedinterest_bench_secagg_cache", {})


def run_flower(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one Flower simulation (plain, secagg+ or ckks-sim) in this process and return the measurements."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    import logging

    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import (GetPropertiesIns, ndarrays_to_parameters, parameters_to_ndarrays)
    from flwr.common.constant import MessageTypeLegacy
    from flwr.common.serde import message_to_proto
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
    from flwr.server.workflow.default_workflows import default_fit_workflow
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from shared_models.crypto import (Aggregator, HEConfig, decrypt_average, encrypt_update, load_context,
                                      make_secret_context, public_context_bytes, secret_context_bytes)
    from shared_models.messages import GLOBAL_SUM, UPDATE, bytes_array

    logging.getLogger("flwr").setLevel(logging.ERROR)
    n, devices, seed, std = args.params, args.devices, args.seed, args.std
    weights = [int(w) for w in device_weights(args)]
    tmp = tempfile.TemporaryDirectory()

    # ---- client side (runs in Ray actors) ----
    def timing_mod(msg: Message, ctxt: Context, call_next) -> Message:
        """Outermost mod: device time for this message (incl. secaggplus_mod's work)."""
        t0 = time.perf_counter()
        out = call_next(msg, ctxt)
        dt = time.perf_counter() - t0
        if out.has_content():
            rec = out.content[BENCH_RECORD] if BENCH_RECORD in out.content else ConfigRecord({})
            rec["device_s"] = dt
            out.content[BENCH_RECORD] = rec
        return out

    if method in ("plain", "secagg+"):
        class NoopClient(NumPyClient):
            def __init__(self, pid: int) -> None:
                self.pid = pid

            def fit(self, parameters, config):  # "training" = return this device's fixed random vector
                return [device_vector(seed, self.pid, n, std)], weights[self.pid], {}

        def client_fn(context: Context):
            return NoopClient(int(context.node_config["partition-id"])).to_client()

        mods = [timing_mod, secaggplus_mod] if method == "secagg+" else [timing_mod]
        client_app = ClientApp(client_fn=client_fn, mods=mods)
    else:  # ckks-sim: every device holds the secret CKKS context (written once, loaded once per actor)
        he = HEConfig()
        secret_ctx = make_secret_context(he, n_threads=1)
        ctx_path = Path(tmp.name) / "secret.ctx"
        ctx_path.write_bytes(secret_context_bytes(secret_ctx))
        ctx_file = str(ctx_path)

        def device_ctx():
            cache = ckks_cache()
            if ctx_file not in cache:
                cache[ctx_file] = load_context(Path(ctx_file).read_bytes(), n_threads=1)
            return cache[ctx_file]

        client_app = ClientApp(mods=[timing_mod])

        @client_app.query()
        def _warm(msg: Message, context: Context) -> Message:
            device_ctx()
            return Message(RecordDict({"ok": ConfigRecord({"ok": 1})}), reply_to=msg)

        @client_app.train()
        def _train(msg: Message, context: Context) -> Message:
            pid = int(context.node_config["partition-id"])
            ctx = device_ctx()
            t0 = time.perf_counter()
            arrays = msg.content["arrays"]
            if GLOBAL_SUM in arrays:  # the device turns the encrypted global sum into the global model
                decrypt_average(ctx, bytes(arrays[GLOBAL_SUM].data), cfg=he)
            t1 = time.perf_counter()
            vec = device_vector(seed, pid, n, std)  # "training"
            t2 = time.perf_counter()
            payload = encrypt_update(ctx, vec, weight=weights[pid], cfg=he)
            t3 = time.perf_counter()
            return Message(RecordDict({"arrays": ArrayRecord({UPDATE: bytes_array(payload)}),
                                       BENCH_RECORD: ConfigRecord({"decrypt_s": t1 - t0, "encrypt_s": t3 - t2})}),
                           reply_to=msg)

    # ---- server side (runs in a thread of this process) ----
    sink: dict[str, Any] = {}

    def msg_bytes(msg: Message) -> int:
        return message_to_proto(msg).ByteSize()

    class MeteredGrid:
        """Delegates to the simulation's Grid; records per-stage bytes per node, wait time, device times."""

        def __init__(self, grid: Grid) -> None:
            self._grid = grid
            self.stages: list[dict[str, Any]] = []
            self.mark = time.perf_counter()  # end of the last call (or round start): server time is in between

        def __getattr__(self, name: str):
            return getattr(self._grid, name)

        def send_and_receive(self, messages, *, timeout=None):
            t0 = time.perf_counter()
            messages = list(messages)
            down = {m.metadata.dst_node_id: msg_bytes(m) for m in messages}
            t1 = time.perf_counter()
            replies = list(self._grid.send_and_receive(messages, timeout=timeout))
            t2 = time.perf_counter()
            up: dict[int, int] = {}
            dev: dict[str, list[float]] = {}
            for r in replies:
                if r.has_content() and BENCH_RECORD in r.content:
                    for k, v in r.content[BENCH_RECORD].items():
                        dev.setdefault(k, []).append(float(v))
                    del r.content[BENCH_RECORD]
                up[r.metadata.src_node_id] = msg_bytes(r)
            t3 = time.perf_counter()
            stage = dict(messages=len(messages), replies=len(replies), errors=sum(r.has_error() for r in replies),
                         down=down, up=up, wait_s=t2 - t1, meter_s=(t1 - t0) + (t3 - t2),
                         server_before_s=t0 - self.mark)
            self.mark = t3
            for k in ("device_s", "encrypt_s", "decrypt_s"):
                stage[f"{k[:-2]}_max_s"] = max(dev.get(k, []), default=0.0)
                stage[f"{k[:-2]}_mean_s"] = float(np.mean(dev[k])) if dev.get(k) else 0.0
            self.stages.append(stage)
            return replies

    def summarize(stages: list[dict[str, Any]], wall: float, server_after: float) -> dict[str, Any]:
        meter = sum(s["meter_s"] for s in stages)
        wait = sum(s["wait_s"] for s in stages)
        nodes = set().union(*(s["down"].keys() for s in stages)) if stages else set()
        down = [sum(s["down"].get(k, 0) for s in stages) for k in nodes]
        up = [sum(s["up"].get(k, 0) for s in stages) for k in nodes]
        server = wall - meter - wait
        out = dict(round_s=wall - meter, wait_s=wait, server_s=server, server_after_last_stage_s=server_after,
                   proj_s=sum(s["device_max_s"] for s in stages) + server,
                   errors=sum(s["errors"] for s in stages),
                   up_bytes=float(np.mean(up)) if up else 0.0, down_bytes=float(np.mean(down)) if down else 0.0,
                   stages=[{**{k: v for k, v in s.items() if k not in ("up", "down", "meter_s")},
                            "up_bytes_mean": float(np.mean(list(s["up"].values()))) if s["up"] else 0.0,
                            "down_bytes_mean": float(np.mean(list(s["down"].values()))) if s["down"] else 0.0}
                           for s in stages])
        for k in ("device", "encrypt", "decrypt"):
            out[f"{k}_max_s"] = sum(s[f"{k}_max_s"] for s in stages)
            out[f"{k}_mean_s"] = sum(s[f"{k}_mean_s"] for s in stages)
        return out

    class Float32FedAvg(FedAvg):
        """FedAvg that keeps the global model float32 (SecAgg+ dequantizes to float64, which would double
        the next round's download for a float32 model)."""

        def aggregate_fit(self, server_round, results, failures):
            params, metrics = super().aggregate_fit(server_round, results, failures)
            if params is not None:
                params = ndarrays_to_parameters([a.astype(np.float32) for a in parameters_to_ndarrays(params)])
            return params, metrics

    class TimedFit:
        def __init__(self, inner, grid: MeteredGrid) -> None:
            self.inner, self.grid, self.rounds = inner, grid, []

        def __call__(self, grid, context) -> None:
            first = len(self.grid.stages)
            t0 = self.grid.mark = time.perf_counter()
            self.inner(grid, context)
            t1 = time.perf_counter()
            self.rounds.append(summarize(self.grid.stages[first:], t1 - t0, t1 - self.grid.mark))

    def run_ckks_rounds(metered: MeteredGrid, node_ids: list[int]) -> np.ndarray:
        """Server-blind FedAvg under CKKS: broadcast the encrypted sum, collect encrypted updates, add them."""
        public_ctx = load_context(public_context_bytes(secret_ctx), n_threads=1)
        expected = he.n_ciphertexts(n)
        # Encrypted sum the devices download in the first timed round (as if left by a previous round).
        agg0 = Aggregator(public_ctx, expected_count=expected, cfg=he)
        agg0.add(encrypt_update(secret_ctx, np.zeros(n, dtype=np.float32), weight=1, cfg=he))
        latest = agg0.to_bytes()
        rounds = []
        for r in range(args.warmup_rounds + args.rounds):
            first = len(metered.stages)
            t0 = metered.mark = time.perf_counter()
            msgs = [Message(RecordDict({"arrays": ArrayRecord({GLOBAL_SUM: bytes_array(latest)})}), dst_node_id=nid,
                            message_type=MessageType.TRAIN, group_id=str(r + 1)) for nid in node_ids]
            replies = metered.send_and_receive(msgs)
            agg = Aggregator(public_ctx, expected_count=expected, cfg=he)
            for rep in replies:
                if rep.has_content():
                    agg.add(bytes(rep.content["arrays"][UPDATE].data))
            latest = agg.to_bytes()
            t1 = time.perf_counter()
            rounds.append(summarize(metered.stages[first:], t1 - t0, t1 - metered.mark))
        sink["rounds"] = rounds
        return decrypt_average(secret_ctx, latest, cfg=he)[0]

    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        t_wait = time.perf_counter()
        while len(list(grid.get_node_ids())) < devices:
            time.sleep(0.05)
        node_ids = sorted(grid.get_node_ids())
        # Warm-up: one small message per node, so Ray actors load the ClientApp before timing.
        t0 = time.perf_counter()
        if method == "ckks-sim":
            warm = [Message(RecordDict({"ping": ConfigRecord({"ping": 1})}), dst_node_id=nid,
                            message_type=MessageType.QUERY, group_id="warmup") for nid in node_ids]
        else:
            warm = [Message(content=compat.getpropertiesins_to_recorddict(GetPropertiesIns({})), dst_node_id=nid,
                            message_type=MessageTypeLegacy.GET_PROPERTIES, group_id="warmup") for nid in node_ids]
        got = list(grid.send_and_receive(warm))
        sink["warmup_s"] = time.perf_counter() - t0
        sink["node_wait_s"] = t0 - t_wait
        sink["warmup_errors"] = sum(m.has_error() for m in got)

        metered = MeteredGrid(grid)
        if method == "ckks-sim":
            sink["result"] = run_ckks_rounds(metered, node_ids)
            return
        if method == "secagg+":
            fit = SecAggPlusWorkflow(num_shares=args.num_shares, reconstruction_threshold=args.threshold,
                                     max_weight=float(args.secagg_max_weight), clipping_range=args.clipping_range,
                                     quantization_range=args.quantization_range, modulus_range=args.modulus_range)
        else:
            fit = default_fit_workflow
        timed = TimedFit(fit, metered)
        strategy = Float32FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=devices,
                          min_evaluate_clients=0, min_available_clients=devices,
                          initial_parameters=ndarrays_to_parameters([np.zeros(n, dtype=np.float32)]))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=args.warmup_rounds + args.rounds),
                               strategy=strategy)
        DefaultWorkflow(fit_workflow=timed)(metered, legacy)
        sink["rounds"] = timed.rounds
        params = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        sink["result"] = np.concatenate([a.ravel() for a in parameters_to_ndarrays(params)])

    backend_config = {"client_resources": {"num_cpus": 1},
                      "init_args": {"num_cpus": args.cpus, "logging_level": "ERROR", "log_to_driver": False}}
    t0 = time.perf_counter()
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=devices,
                       backend_name="ray", backend_config=backend_config, verbose_logging=False)
    finally:
        tmp.cleanup()
    total = time.perf_counter() - t0
    if "rounds" not in sink or "result" not in sink:
        raise RuntimeError(f"{method}: the ServerApp did not finish (see the log above)")
    rounds = sink["rounds"]
    measured = rounds[args.warmup_rounds:]
    keys = ("round_s", "proj_s", "server_s", "wait_s", "up_bytes", "down_bytes", "errors")
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in measured])) for k in keys}
    # Devices ignore the global model, so every round aggregates the same vectors: the final model is the
    # weighted average of round 1 as well.
    out.update(method=method, simulation_total_s=total, warmup_s=sink["warmup_s"], node_wait_s=sink["node_wait_s"],
               warmup_errors=sink["warmup_errors"], warmup_rounds=rounds[:args.warmup_rounds], rounds=measured,
               rel_err=rel_err(sink["result"], plain_average(args)))
    if method == "secagg+":
        out.update(num_shares=args.num_shares, threshold=args.threshold, clipping_range=args.clipping_range,
                   quantization_range=args.quantization_range, modulus_range=args.modulus_range,
                   max_weight=args.secagg_max_weight)
    if method == "ckks-sim":
        out.update(encrypt_mean_s=float(np.mean([r["encrypt_mean_s"] for r in measured])),
                   encrypt_max_s=float(np.mean([r["encrypt_max_s"] for r in measured])),
                   decrypt_s=float(np.mean([r["decrypt_mean_s"] for r in measured])),
                   decrypt_max_s=float(np.mean([r["decrypt_max_s"] for r in measured])))
    return out


# --------------------------------------------------------------------------------------- CKKS (in process)
def run_ckks(args: argparse.Namespace) -> dict[str, Any]:
    from shared_models.crypto import (Aggregator, HEConfig, decrypt_average, encrypt_update, load_context,
                                      make_secret_context, public_context_bytes)

    cfg = HEConfig()
    ctx = make_secret_context(cfg, n_threads=1)
    pub = load_context(public_context_bytes(ctx), n_threads=1)
    assert not pub.is_private()
    weights = device_weights(args)
    agg = Aggregator(pub, expected_count=cfg.n_ciphertexts(args.params), cfg=cfg)
    if args.warmup_rounds:  # untimed: first-call costs, like the Flower methods' warm-up round
        warm = encrypt_update(ctx, device_vector(args.seed, 0, args.params, args.std), weight=1, cfg=cfg)
        Aggregator(pub, expected_count=cfg.n_ciphertexts(args.params), cfg=cfg).add(warm)
    enc, add, up = [], 0.0, []
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
                total_weight=float(total_weight),
                he=dict(poly_modulus_degree=cfg.poly_modulus_degree, coeff_mod_bit_sizes=list(cfg.coeff_mod_bit_sizes),
                        scale_bits=cfg.scale_bits, n_ciphertexts=cfg.n_ciphertexts(args.params)))


# ---------------------------------------------------------------------------------------------- driver
def run_child(method: str, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
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


def fmt_bytes(b: float) -> str:
    return f"{b / 1e6:.3f} MB"


LABELS = {"plain": "plain FedAvg (sim)", "ckks-sim": "ckks (sim)", "ckks": "ckks (in-process, 1 core)"}


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    base = next((r for r in results if r["method"] == "plain"), None)
    head = (f"{'method':26s} {'round s':>8s} {'x plain':>7s} {'proj s':>7s} {'x plain':>7s} {'server s':>8s} "
            f"{'up/dev':>10s} {'B/param':>7s} {'down/dev':>10s} {'enc s/dev':>9s} {'dec s':>6s} {'rel err':>8s}")
    print(head)
    print("-" * len(head))
    for r in results:
        name = LABELS.get(r["method"], r["method"])
        if r["method"] == "secagg+":
            name = f"secagg+ (sim) k={r['num_shares']} t={r['threshold']}"
        x_round = f"{r['round_s'] / base['round_s']:7.2f}" if base else "    n/a"
        x_proj = f"{r['proj_s'] / base['proj_s']:7.2f}" if base else "    n/a"
        enc = f"{r['encrypt_mean_s']:9.3f}" if "encrypt_mean_s" in r else f"{'-':>9s}"
        dec = f"{r['decrypt_s']:6.3f}" if "decrypt_s" in r else f"{'-':>6s}"
        err = f"{r['rel_err']:8.1e}" if r.get("rel_err") is not None else f"{'-':>8s}"
        print(f"{name:26s} {r['round_s']:8.2f} {x_round} {r['proj_s']:7.2f} {x_proj} {r['server_s']:8.3f} "
              f"{fmt_bytes(r['up_bytes']):>10s} {r['up_bytes'] / args.params:7.2f} {fmt_bytes(r['down_bytes']):>10s} "
              f"{enc} {dec} {err}", flush=True)
    print()
    for r in results:
        if r["method"] == "ckks":
            print(f"ckks: encrypt mean {r['encrypt_mean_s']:.3f} s / max {r['encrypt_max_s']:.3f} s per device, "
                  f"sum over {args.devices} devices {r['encrypt_sum_s']:.2f} s; server add {r['aggregate_add_s']:.3f} s "
                  f"+ serialize {r['aggregate_serialize_s']:.3f} s; decrypt {r['decrypt_s']:.3f} s; "
                  f"{r['he']['n_ciphertexts']} ciphertexts N={r['he']['poly_modulus_degree']} "
                  f"{r['he']['coeff_mod_bit_sizes']} 2^{r['he']['scale_bits']}")
        elif "rounds" in r:
            st = r["rounds"][-1]["stages"]
            parts = "; ".join(f"server {s['server_before_s']:.2f} s, wait {s['wait_s']:.2f} s, "
                              f"slowest device {s['device_max_s']:.3f} s, "
                              f"up {s['up_bytes_mean'] / 1e3:.1f} kB, down {s['down_bytes_mean'] / 1e3:.1f} kB"
                              for s in st)
            extra = ""
            if r["method"] == "ckks-sim":
                extra = (f"; encrypt max {r['encrypt_max_s']:.3f} s, decrypt max {r['decrypt_max_s']:.3f} s")
            print(f"{r['method']}: simulation total {r['simulation_total_s']:.1f} s (start-up + warm-up "
                  f"{r['node_wait_s'] + r['warmup_s']:.1f} s, not timed){extra}; {len(st)} stage(s): {parts}; "
                  f"server after the last stage {r['rounds'][-1]['server_after_last_stage_s']:.2f} s")
        if r.get("errors") or r.get("warmup_errors"):
            print(f"WARNING {r['method']}: {r.get('errors')} error replies in the round, "
                  f"{r.get('warmup_errors')} in the warm-up")


def main() -> None:
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
    argv = sys.argv[1:]
    args = ap.parse_args(argv)
    if args.num_shares is None:
        args.num_shares = default_num_shares(args.devices)
    if args.threshold is None:
        args.threshold = args.num_shares // 2 + 1

    if args.child:
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
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(dict(args={k: (str(v) if isinstance(v, Path) else v)
                                                  for k, v in vars(args).items() if not k.startswith("child")},
                                            results=results), indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
