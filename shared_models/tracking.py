"""Round-by-round tracking of a run: TensorBoard event files and, optionally, an MLflow run.

Both writers are the libraries' own (``torch.utils.tensorboard.SummaryWriter``, ``mlflow.MlflowClient``);
``[tracking]`` in the config chooses them (``tensorboard``, ``mlflow-uri``). One :class:`Tracker` serves the
federated run driver (one step per round) and centralized training (one step per epoch); ``finish`` logs the
run's hyperparameters (the flattened config) with its final metrics and closes the writers.

Tags (TensorBoard; MLflow gets the same names with ``@`` spelled ``_at_``)::

    train/loss                      mean device training loss (absent under HE: devices report none)
    valid/<metric>                  validation metrics of an evaluated round (recall@10, ndcg@10, ...)
    privacy/epsilon_max, _mean      epsilon spent so far: largest and mean over devices
    devices/sampled, participants, refused, failed, rejected
    bytes/up, bytes/down            encrypted payloads (HE) or valid updates x model size; broadcast x sampled
    time/round_s, aggregate_s, encrypt_s, decrypt_s   wall time per stage (encrypt/decrypt: mean per update)
    final/<metric>                  with the hparams: test metrics, epsilon, wall time
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from shared_models.config import Config, ConfigError

log = logging.getLogger(__name__)

TRACKING_DIR = "tensorboard"  # RUN_DIR/tensorboard
HPARAMS_RUN = "hparams"  # TensorBoard's HParams record goes to RUN_DIR/tensorboard/hparams
MLFLOW_PARAMS_PER_BATCH = 100  # MLflow's limit on params in one log_batch call


class Tracker:
    """Fans scalars out to the configured writers; with none configured every call is a no-op."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks
        self._broadcast_bytes = 0  # size of the state the next round sends to each sampled device

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in scalars.items() if v is not None and math.isfinite(float(v))}
        for sink in self.sinks:
            sink.log(step, finite)

    def watch(self, strategy) -> None:
        """Remember the size of what the strategy broadcasts now (what the next round downloads)."""
        if self.sinks:
            self._broadcast_bytes = state_bytes(strategy.broadcast())

    def log_round(self, st, strategy) -> None:
        """One federated round (a ``server.loop.RoundStats``) and the strategy that aggregated it."""
        if not self.sinks:
            return
        down = self._broadcast_bytes * st.sampled
        self.watch(strategy)  # after this round: what round r+1 sends
        self.log(st.round, round_scalars(st, down_bytes=down, model_bytes=self._broadcast_bytes))

    def finish(self, config: dict[str, Any], final: dict[str, float]) -> None:
        """Hyperparameters (the flattened config) beside the final metrics; closes the writers."""
        params = flat_params(config)
        finals = {f"final/{k}": float(v) for k, v in final.items() if v is not None and math.isfinite(float(v))}
        for sink in self.sinks:
            sink.finish(params, finals)
        self.sinks = []


def run_finals(result: dict[str, Any]) -> dict[str, float]:
    """The final figures of a metrics.json dict: test metrics, epsilon (when private), wall time."""
    out = dict(result.get("metrics", {}))
    eps = (result.get("privacy") or {}).get("epsilon")
    if eps is not None:
        out["epsilon"] = eps
    wall = (result.get("timing") or {}).get("wall_s", result.get("wall_s"))
    if wall is not None:
        out["wall_s"] = wall
    return out


def round_scalars(st, *, down_bytes: float, model_bytes: float) -> dict[str, float]:
    """The scalars of one round. ``model_bytes``: one plaintext update's size (updates have the model's shapes)."""
    t = st.timings
    sent = t.get("bytes_per_update") or []
    out = {"train/loss": st.loss, "privacy/epsilon_max": st.epsilon_max, "privacy/epsilon_mean": st.epsilon_mean,
           "devices/sampled": st.sampled, "devices/participants": st.valid, "devices/refused": st.refused,
           "devices/failed": st.failed, "devices/rejected": st.rejected,
           "bytes/up": float(sum(sent)) if sent else float(st.valid * model_bytes), "bytes/down": float(down_bytes),
           "time/round_s": st.wall_s, "time/aggregate_s": st.aggregate_s}
    for key in ("encrypt_s", "decrypt_s"):
        if t.get(key):
            out[f"time/{key}"] = sum(t[key]) / len(t[key])
    out.update({f"valid/{k}": v for k, v in st.metrics.items()})
    return out


def state_bytes(state) -> int:
    """Bytes of a broadcast: a dict of arrays (plaintext), bytes (an encrypted sum) or None (nothing yet)."""
    if state is None:
        return 0
    if isinstance(state, (bytes, bytearray)):
        return len(state)
    return int(sum(getattr(v, "nbytes", 0) for v in state.values()))


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"federated": {"lr": 0.1}}`` -> ``{"federated.lr": 0.1}``; lists and None as strings."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_params(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, int, float, str)):
            out[f"{prefix}{key}"] = value
        else:
            out[f"{prefix}{key}"] = str(list(value) if isinstance(value, tuple) else value)
    return out


def open_tracker(cfg: Config, log_dir: Path, *, run_name: str) -> Tracker:
    """The writers ``cfg.tracking`` asks for: TensorBoard event files in ``log_dir``, an MLflow run."""
    sinks: list[Any] = []
    if cfg.tracking.tensorboard:
        sinks.append(_TensorBoard(Path(log_dir)))
    if cfg.tracking.mlflow_uri:
        sinks.append(_MLflow(cfg.tracking.mlflow_uri, cfg.tracking.mlflow_experiment, run_name))
    return Tracker(sinks)


class _TensorBoard:
    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(f"config key 'tracking.tensorboard' is true but TensorBoard cannot be imported "
                              f"({exc}): pip install tensorboard, or pass --no-tracking") from None
        log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()  # a round is on disk when it ends: TensorBoard follows the run, a crash loses nothing

    def finish(self, params: dict[str, Any], finals: dict[str, float]) -> None:
        self.writer.add_hparams(params, finals, run_name=HPARAMS_RUN)
        self.writer.close()


class _MLflow:
    def __init__(self, uri: str, experiment: str, run_name: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError(f"config key 'tracking.mlflow_uri' is {uri!r} but mlflow cannot be imported ({exc}): "
                              "pip install 'fedinterest[mlflow]'") from None
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        except Exception as exc:  # mlflow raises its own MlflowException (and OSError) for a bad store
            raise ConfigError(f"config key 'tracking.mlflow_uri' = {uri!r}: {exc}") from None
        log.info("MLflow: run %s in experiment %r at %s", self.run_id, experiment, uri)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(mlflow_key(k), v, now, step) for k, v in scalars.items()])

    def finish(self, params: dict[str, Any], finals: dict[str, float]) -> None:
        from mlflow.entities import Param

        items = [Param(mlflow_key(k), str(v)) for k, v in params.items()]
        for i in range(0, len(items), MLFLOW_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + MLFLOW_PARAMS_PER_BATCH])
        self.log(0, finals)
        self.client.set_terminated(self.run_id)


def mlflow_key(tag: str) -> str:
    """MLflow names allow letters, digits, ``_-./`` and spaces: ``valid/recall@10`` -> ``valid/recall_at_10``."""
    return tag.replace("@", "_at_")
