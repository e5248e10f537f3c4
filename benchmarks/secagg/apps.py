"""Flower ClientApps of bench_secagg.py (they run in the simulation's Ray actors).

plain     ClientApp(client_fn) with a NumPyClient whose fit returns the device's fixed vector.
secagg+   the same with mods=[timing_mod, secaggplus_mod].
ckks-sim  Message-API ClientApp: every device holds the secret CKKS context (written once to a file by
          ``make_ckks_keys``, loaded once per actor), decrypts the encrypted global sum it receives
          (decrypt_average) and encrypts its update (encrypt_update).
Every app has ``timing_mod`` outermost.  Imports Flower: load it only in the simulation child.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client import Client, ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod

from secagg.devices import Workload
from secagg.measure import BENCH_RECORD, timing_mod
from shared_models.crypto import (HEConfig, decrypt_average, encrypt_update, load_context, make_secret_context,
                                  secret_context_bytes)
from shared_models.messages import GLOBAL_SUM, UPDATE, bytes_array


# ------------------------------------------------------------------------------- plain / secagg+ devices
class NoopClient(NumPyClient):
    """A device whose "training" returns its fixed random vector and weight."""

    def __init__(self, pid: int, work: Workload) -> None:
        self.pid = pid
        self.work = work

    def fit(self, parameters: Any, config: Any) -> tuple[list[Any], int, dict[str, Any]]:
        """Training = return this device's fixed random vector and its weight."""
        return [self.work.vector(self.pid)], self.work.weights[self.pid], {}


def legacy_client_app(work: Workload, secagg: bool) -> ClientApp:
    """ClientApp(client_fn) of the plain and (with secaggplus_mod) SecAgg+ methods."""

    def client_fn(context: Context) -> Client:
        return NoopClient(int(context.node_config["partition-id"]), work).to_client()

    mods = [timing_mod, secaggplus_mod] if secagg else [timing_mod]
    return ClientApp(client_fn=client_fn, mods=mods)


# ------------------------------------------------------------------------------------- ckks-sim devices
@dataclass
class CkksKeys:
    """The CKKS configuration, the secret context (server side) and the file the devices load it from."""

    he: HEConfig
    secret_ctx: Any
    ctx_file: str


def make_ckks_keys(tmp_dir: str) -> CkksKeys:
    """Make a secret CKKS context and write it to ``tmp_dir`` for the devices."""
    he = HEConfig()
    secret_ctx = make_secret_context(he, n_threads=1)
    ctx_path = Path(tmp_dir) / "secret.ctx"
    ctx_path.write_bytes(secret_context_bytes(secret_ctx))
    return CkksKeys(he=he, secret_ctx=secret_ctx, ctx_file=str(ctx_path))


def ckks_cache() -> dict:
    """Per-process cache for Ray actors (the ClientApp is unpickled anew for every message)."""
    return sys.__dict__.setdefault("_fedinterest_bench_secagg_cache", {})


def device_ctx(ctx_file: str) -> Any:
    """The secret context of this actor, loaded from ``ctx_file`` on first use."""
    cache = ckks_cache()
    if ctx_file not in cache:
        cache[ctx_file] = load_context(Path(ctx_file).read_bytes(), n_threads=1)
    return cache[ctx_file]


def ckks_train(msg: Message, context: Context, work: Workload, he: HEConfig, ctx_file: str) -> Message:
    """Decrypt the global sum (if sent), "train", encrypt the update; reply with it and the CKKS timings."""
    pid = int(context.node_config["partition-id"])
    ctx = device_ctx(ctx_file)
    t0 = time.perf_counter()
    arrays = msg.content["arrays"]
    if GLOBAL_SUM in arrays:  # the device turns the encrypted global sum into the global model
        decrypt_average(ctx, bytes(arrays[GLOBAL_SUM].data), cfg=he)
    t1 = time.perf_counter()
    vec = work.vector(pid)  # "training"
    t2 = time.perf_counter()
    payload = encrypt_update(ctx, vec, weight=work.weights[pid], cfg=he)
    t3 = time.perf_counter()
    return Message(RecordDict({"arrays": ArrayRecord({UPDATE: bytes_array(payload)}),
                               BENCH_RECORD: ConfigRecord({"decrypt_s": t1 - t0, "encrypt_s": t3 - t2})}),
                   reply_to=msg)


def ckks_client_app(work: Workload, he: HEConfig, ctx_file: str) -> ClientApp:
    """Message-API ClientApp of the ckks-sim method (query: load the context; train: ``ckks_train``)."""
    client_app = ClientApp(mods=[timing_mod])

    @client_app.query()
    def _warm(msg: Message, context: Context) -> Message:
        device_ctx(ctx_file)
        return Message(RecordDict({"ok": ConfigRecord({"ok": 1})}), reply_to=msg)

    @client_app.train()
    def _train(msg: Message, context: Context) -> Message:
        return ckks_train(msg, context, work, he, ctx_file)

    return client_app


def make_client_app(method: str, work: Workload, keys: CkksKeys | None) -> ClientApp:
    """The ClientApp of ``method`` (plain, secagg+ or ckks-sim; ckks-sim needs ``keys``)."""
    if method in ("plain", "secagg+"):
        return legacy_client_app(work, secagg=method == "secagg+")
    assert keys is not None
    return ckks_client_app(work, keys.he, keys.ctx_file)
