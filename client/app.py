"""The Flower ClientApp: thin glue. Converts Messages <-> arrays and calls ``client.device`` functions.

Each message carries the run config; the device's data is the population entry at ``partition-id``
(simulation). Personal weights and the privacy ledger live in the device's state directory under the run
dir, so they survive rounds, restarts and Ray actor recycling. Only shared weights are ever replied.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.device import device_evaluate, device_train
from client.store import DeviceStore
from shared_models.messages import (ARRAYS, CONFIG, KEY_CONFIG_JSON, KEY_REASON, KEY_ROUND, KEY_RUN_DIR,
                                    KEY_STAGE, METRICS, config_from_json)
from simulations.devices import device_state_dir, population

DEVICE_THREADS = 1
app = ClientApp()


def _setup(msg: Message, context: Context):
    torch.set_num_threads(DEVICE_THREADS)
    conf = msg.content[CONFIG]
    cfg = config_from_json(str(conf[KEY_CONFIG_JSON]))
    pop = population(cfg)
    data = pop.devices[int(context.node_config["partition-id"])]
    store = DeviceStore(device_state_dir(str(conf[KEY_RUN_DIR]), data.device_id))
    shared = {k: a.numpy() for k, a in msg.content[ARRAYS].items()}
    return cfg, pop, data, store, shared, conf


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg, pop, data, store, shared, conf = _setup(msg, context)
    out = device_train(data=data, store=store, global_shared=shared, cfg=cfg, round_id=int(conf[KEY_ROUND]),
                       text=pop.text, max_interactions=pop.max_interactions)
    metrics = {"num-examples": out.num_examples, "refused": int(out.refused), **out.metrics}
    content = RecordDict({METRICS: MetricRecord({k: _finite(v) for k, v in metrics.items()}),
                          CONFIG: ConfigRecord({KEY_REASON: out.reason})})
    if not out.refused:
        content[ARRAYS] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in out.shared.items()})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, pop, data, store, shared, conf = _setup(msg, context)
    rank = device_evaluate(data=data, store=store, global_shared=shared, cfg=cfg, stage=str(conf[KEY_STAGE]),
                           text=pop.text)
    return Message(RecordDict({METRICS: MetricRecord({"rank": rank})}), reply_to=msg)


def _finite(v):
    return v if isinstance(v, int) or np.isfinite(v) else 0.0
