"""Flower ServerApp of bench_secagg.py (runs in a thread of the simulation child).

It waits for the D nodes, sends every node a small warm-up message (so the Ray actors load the ClientApp
before timing), then runs --warmup-rounds + --rounds rounds on a MeteredGrid:
plain / secagg+  legacy ServerApp: LegacyContext + DefaultWorkflow, fit workflow = the default one or
                 SecAggPlusWorkflow(...), strategy = FedAvg that keeps the global model float32.
ckks-sim         broadcast the encrypted sum, collect encrypted updates, add them with Aggregator (public
                 context only); the final encrypted sum is decrypted here for the error only.
Everything the driver needs lands in ``sink``: warmup_s, node_wait_s, warmup_errors, rounds, result.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common import GetPropertiesIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import MessageTypeLegacy
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.server.workflow.default_workflows import default_fit_workflow
from flwr.serverapp import Grid, ServerApp

from secagg.apps import CkksKeys
from secagg.measure import MeteredGrid, RoundTimer, TimedFit
from shared_models.crypto import Aggregator, decrypt_average, encrypt_update, load_context, public_context_bytes
from shared_models.messages import GLOBAL_SUM, UPDATE, bytes_array


class Float32FedAvg(FedAvg):
    """FedAvg that keeps the global model float32 (SecAgg+ dequantizes to float64, which would double
    the next round's download for a float32 model)."""

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> tuple[Any, dict[str, Any]]:
        params, metrics = super().aggregate_fit(server_round, results, failures)
        if params is not None:
            params = ndarrays_to_parameters([a.astype(np.float32) for a in parameters_to_ndarrays(params)])
        return params, metrics


def warm_up(grid: Grid, method: str, devices: int, sink: dict[str, Any]) -> list[int]:
    """Wait for the D nodes, send each one warm-up message (not timed); return the sorted node ids."""
    t_wait = time.perf_counter()
    while len(list(grid.get_node_ids())) < devices:
        time.sleep(0.05)
    node_ids = sorted(grid.get_node_ids())
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
    return node_ids


def run_ckks_rounds(metered: MeteredGrid, node_ids: list[int], keys: CkksKeys, n: int, num_rounds: int,
                    sink: dict[str, Any]) -> np.ndarray:
    """Server-blind FedAvg under CKKS: broadcast the encrypted sum, collect encrypted updates, add them."""
    he = keys.he
    public_ctx = load_context(public_context_bytes(keys.secret_ctx), n_threads=1)
    expected = he.n_ciphertexts(n)
    # Encrypted sum the devices download in the first timed round (as if left by a previous round).
    agg0 = Aggregator(public_ctx, expected_count=expected, cfg=he)
    agg0.add(encrypt_update(keys.secret_ctx, np.zeros(n, dtype=np.float32), weight=1, cfg=he))
    latest = agg0.to_bytes()
    timer = RoundTimer(metered)
    for r in range(num_rounds):
        timer.start()
        msgs = [Message(RecordDict({"arrays": ArrayRecord({GLOBAL_SUM: bytes_array(latest)})}), dst_node_id=nid,
                        message_type=MessageType.TRAIN, group_id=str(r + 1)) for nid in node_ids]
        replies = metered.send_and_receive(msgs)
        agg = Aggregator(public_ctx, expected_count=expected, cfg=he)
        for rep in replies:
            if rep.has_content():
                agg.add(bytes(rep.content["arrays"][UPDATE].data))
        latest = agg.to_bytes()
        timer.stop()
    sink["rounds"] = timer.rounds
    return decrypt_average(keys.secret_ctx, latest, cfg=he)[0]


def fit_workflow(method: str, args: argparse.Namespace) -> Any:
    """SecAggPlusWorkflow with the command-line settings for secagg+, else Flower's default fit workflow."""
    if method == "secagg+":
        return SecAggPlusWorkflow(num_shares=args.num_shares, reconstruction_threshold=args.threshold,
                                  max_weight=float(args.secagg_max_weight), clipping_range=args.clipping_range,
                                  quantization_range=args.quantization_range, modulus_range=args.modulus_range)
    return default_fit_workflow


def run_legacy_rounds(metered: MeteredGrid, context: Context, method: str, args: argparse.Namespace,
                      sink: dict[str, Any]) -> None:
    """plain / secagg+: DefaultWorkflow with a timed fit workflow; the final global model goes to the sink."""
    n, devices = args.params, args.devices
    timed = TimedFit(fit_workflow(method, args), metered)
    strategy = Float32FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=devices,
                             min_evaluate_clients=0, min_available_clients=devices,
                             initial_parameters=ndarrays_to_parameters([np.zeros(n, dtype=np.float32)]))
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=args.warmup_rounds + args.rounds),
                           strategy=strategy)
    DefaultWorkflow(fit_workflow=timed)(metered, legacy)
    sink["rounds"] = timed.rounds
    params = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    sink["result"] = np.concatenate([a.ravel() for a in parameters_to_ndarrays(params)])


def make_server_app(method: str, args: argparse.Namespace, keys: CkksKeys | None,
                    sink: dict[str, Any]) -> ServerApp:
    """The ServerApp of ``method``: warm-up, then the metered rounds; results go to ``sink``."""
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        node_ids = warm_up(grid, method, args.devices, sink)
        metered = MeteredGrid(grid)
        if method == "ckks-sim":
            assert keys is not None
            sink["result"] = run_ckks_rounds(metered, node_ids, keys, args.params,
                                             args.warmup_rounds + args.rounds, sink)
            return
        run_legacy_rounds(metered, context, method, args, sink)

    return server_app
