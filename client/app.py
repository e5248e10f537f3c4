"""The Flower ClientApp: thin glue. Converts Messages <-> arrays/bytes and calls ``client.round``.

Each message carries the run config. Simulation: the device's data is the population entry at
``partition-id``; personal weights and the privacy ledger live in the device's state directory under the run
dir, so they survive rounds, restarts and Ray actor recycling. Deployment (``--node-config
"state-dir='/path'"``): the device's own state directory (``fedinterest device init``) supplies its history,
personal weights, ledger and keys, and keeps the latest global model for ``fedinterest recommend``.
Only shared weights (plaintext) or an encrypted, signed update (HE) are ever replied.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.round import evaluate_round, train_round
from client.store import DeviceStore
from shared_models.broadcast import fetch, fetch_arrays
from shared_models.messages import (ARRAYS, CONFIG, GLOBAL_SUM, KEY_BROADCAST, KEY_BROADCAST_DIR, KEY_CONFIG_JSON,
                                    KEY_DEVICE_ID, KEY_KEYS_DIR, KEY_REASON, KEY_ROUND, KEY_RUN_DIR, KEY_SIGNATURE,
                                    KEY_SIGNED_ROUND, KEY_STAGE, METRICS, UPDATE, bytes_array, config_from_json)
from simulations.devices import device_state_dir, population

DEVICE_THREADS = 1
STATE_DIR = "state-dir"  # node-config key of a deployed device's state directory
app = ClientApp()


def _setup(msg: Message, context: Context):
    """(cfg, data, store, received, conf, text, max_interactions, keys_dir) for this device and message."""
    torch.set_num_threads(DEVICE_THREADS)
    conf = msg.content[CONFIG]
    cfg = config_from_json(str(conf[KEY_CONFIG_JSON]))
    arrays = msg.content[ARRAYS]
    if conf.get(KEY_BROADCAST):  # in-process simulation: the state was published once, by digest
        where, digest = str(conf[KEY_BROADCAST_DIR]), str(conf[KEY_BROADCAST])
        received = fetch(where, digest) if cfg.he.enabled else fetch_arrays(where, digest)
    elif cfg.he.enabled:
        received = bytes(arrays[GLOBAL_SUM].data) if GLOBAL_SUM in arrays else None
    else:
        received = {k: a.numpy() for k, a in arrays.items()}
    if STATE_DIR in context.node_config:
        from client.runtime import deployed_device

        dev = deployed_device(str(context.node_config[STATE_DIR]), cfg, received)
        return cfg, dev.data, dev.store, received, conf, dev.text, dev.max_interactions, dev.keys_dir
    pop = population(cfg)
    data = pop.devices[int(context.node_config["partition-id"])]
    store = DeviceStore(device_state_dir(str(conf[KEY_RUN_DIR]), data.device_id))
    return cfg, data, store, received, conf, pop.text, pop.max_interactions, str(conf[KEY_KEYS_DIR])


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg, data, store, received, conf, text, max_interactions, keys_dir = _setup(msg, context)
    rep = train_round(data=data, store=store, received=received, cfg=cfg, round_id=int(conf[KEY_ROUND]), node=-1,
                      text=text, max_interactions=max_interactions, keys_dir=keys_dir)
    metrics = {"num-examples": rep.num_examples, "refused": int(rep.refused), **rep.metrics}
    content = RecordDict({
        METRICS: MetricRecord({k: _finite(v) for k, v in metrics.items()}),
        CONFIG: ConfigRecord({KEY_REASON: rep.reason, KEY_DEVICE_ID: rep.device_id, KEY_SIGNED_ROUND: rep.round_id,
                              KEY_SIGNATURE: rep.signature})})
    if rep.payload is not None:
        content[ARRAYS] = ArrayRecord({UPDATE: bytes_array(rep.payload)})
    elif rep.shared:
        content[ARRAYS] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in rep.shared.items()})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, data, store, received, conf, text, _, keys_dir = _setup(msg, context)
    rank = evaluate_round(data=data, store=store, received=received, cfg=cfg, stage=str(conf[KEY_STAGE]),
                          text=text, keys_dir=keys_dir)
    return Message(RecordDict({METRICS: MetricRecord({"rank": rank})}), reply_to=msg)


def _finite(v):
    return v if isinstance(v, int) or np.isfinite(v) else 0.0
