"""Message field names and the run description shared by the ServerApp and the ClientApp.

Every train/evaluate message carries the resolved run config as JSON (parsed once per process and cached),
so simulated devices and deployed devices need no side channel to know the experiment.
"""

from __future__ import annotations

import functools
import json

from shared_models.config import Config, build_config

ARRAYS = "arrays"  # ArrayRecord: shared weights (plaintext transport)
METRICS = "metrics"  # MetricRecord: num-examples, refused, epsilon, train_loss, rank
CONFIG = "config"  # ConfigRecord: round, stage, run-config JSON, run-dir, reason

KEY_ROUND = "server-round"
KEY_STAGE = "stage"
KEY_CONFIG_JSON = "fedinterest-config"
KEY_RUN_DIR = "run-dir"
KEY_REASON = "reason"
KEY_KEYS_DIR = "keys-dir"
KEY_DEVICE_ID = "device-id"
KEY_SIGNATURE = "signature"
KEY_SIGNED_ROUND = "signed-round"
KEY_BROADCAST = "broadcast"  # SHA-256 of the round's published global state (in-process simulations)
KEY_BROADCAST_DIR = "broadcast-dir"  # where it was published
GLOBAL_SUM = "global-sum"  # ArrayRecord key of the encrypted global sum (raw bytes)
UPDATE = "update"  # ArrayRecord key of a device's encrypted update (raw bytes)


@functools.lru_cache(maxsize=8)
def config_from_json(text: str) -> Config:
    """Parse (once per process) the JSON run config a message carries."""
    return build_config(json.loads(text))


def config_to_json(cfg: Config) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def bytes_array(data: bytes):
    """A Flower Array carrying raw bytes (no numpy header/copy)."""
    from flwr.app import Array

    return Array("uint8", (len(data),), "raw.bytes", data)
