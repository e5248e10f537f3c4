"""The ``[sweep]`` table of a sweep config: which dotted keys vary, which reference points to add.

A sweep config is an ordinary run config (``[data] [model] [federated] [privacy] [he]``, optionally
``[train]``) plus::

    [sweep]
    grid = { "privacy.noise-multiplier" = [0.5, 1.0, 2.0], "privacy.mode" = ["none", "example"] }
    references = ["central", "pop"]

    [sweep.central]          # optional: train.* keys for the centralized reference
    epochs = 20
    patience = 3

``--set`` overrides aimed at ``sweep.*`` edit this table (``sweep.grid.privacy.noise-multiplier=[1, 2]``,
``sweep.references=[]``); every other override edits the base run config. Errors name the offending key.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_models.config import Config, ConfigError, TrainConfig, build_config, parse_overrides, read_toml

SWEEP_TABLE = "sweep"
SWEEP_KEYS = ("grid", "references", "central")
REFERENCE_KINDS = ("central", "pop")
SCALAR_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated sweep: the base run config plus the grid and the reference points."""

    base: dict[str, Any]  # run sections of the TOML (everything but [sweep])
    base_overrides: tuple[str, ...] = ()  # --set items for the base config (dotted key=value)
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # kebab-case dotted key -> values
    references: tuple[str, ...] = ()
    central: dict[str, Any] = field(default_factory=dict)  # train.* values for the central reference
    source: str = ""  # the config file (for messages and the regenerate command)
    overrides: tuple[str, ...] = ()  # every --set item as given

    def base_config(self, extra: list[str] | None = None) -> Config:
        """The base Config with the base overrides and then ``extra`` dotted overrides applied."""
        return build_config(self.base, [*self.base_overrides, *(extra or [])])


def norm_key(dotted: str) -> str:
    """Canonical spelling of a dotted config key (kebab-case, no surrounding blanks)."""
    return ".".join(part.strip().replace("_", "-") for part in dotted.split("."))


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read a sweep TOML file and apply ``--set`` overrides; errors name the file and the key."""
    p = Path(path)
    doc = read_toml(p, what="sweep config")
    try:
        return parse_sweep(doc, list(overrides), source=str(p))
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def parse_sweep(doc: dict[str, Any], overrides: list[str] | None = None, *, source: str = "") -> SweepSpec:
    """Split a TOML document into base run config and ``[sweep]`` table, then validate both."""
    doc = dict(doc)
    table = doc.pop(SWEEP_TABLE, None)
    if table is None:
        raise ConfigError(f"missing [{SWEEP_TABLE}] table (needs at least 'grid' or 'references')")
    if not isinstance(table, dict):
        raise ConfigError(f"'{SWEEP_TABLE}': expected a table, got {table!r}")
    overrides = list(overrides or [])
    sweep_items = [o for o in overrides if norm_key(o.split("=", 1)[0]).startswith(f"{SWEEP_TABLE}.")]
    base_items = [o for o in overrides if o not in sweep_items]
    _check_table_keys(table, SWEEP_KEYS, SWEEP_TABLE)
    grid = _flatten_grid(table.get("grid", {}), f"{SWEEP_TABLE}.grid")
    table = dict(table)
    if sweep_items:
        patch = parse_overrides(sweep_items)[SWEEP_TABLE]
        _check_table_keys(patch, SWEEP_KEYS, SWEEP_TABLE)
        grid.update(_flatten_grid(patch.pop("grid", {}), f"{SWEEP_TABLE}.grid"))
        table["central"] = {**table.get("central", {}), **patch.pop("central", {})}
        table.update(patch)
    spec = SweepSpec(base=doc, base_overrides=tuple(base_items), grid=_validate_grid(grid),
                     references=_validate_references(table.get("references", [])),
                     central=_validate_central(table.get("central", {})), source=source,
                     overrides=tuple(overrides))
    _check_base(spec)
    return spec


def _check_table_keys(table: dict[str, Any], valid: tuple[str, ...], prefix: str) -> None:
    for key in table:
        if key not in valid:
            raise ConfigError(f"unknown key '{prefix}.{key}' (valid here: {', '.join(valid)})")


def _flatten_grid(grid: Any, prefix: str) -> dict[str, Any]:
    """``{"privacy": {"noise-multiplier": [..]}}`` and ``{"privacy.noise-multiplier": [..]}`` -> dotted keys."""
    if not isinstance(grid, dict):
        raise ConfigError(f"'{prefix}': expected a table of dotted.key = [values], got {grid!r}")
    flat: dict[str, Any] = {}
    for key, value in grid.items():
        if isinstance(value, dict):
            for sub, inner in _flatten_grid(value, f"{prefix}.{key}").items():
                flat[norm_key(f"{key}.{sub}")] = inner
        else:
            flat[norm_key(key)] = value
    return flat


def _validate_grid(grid: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Each key must name a config field; each value a non-empty list of distinct, well-typed values."""
    out: dict[str, tuple[Any, ...]] = {}
    for key, values in grid.items():
        label = f"sweep.grid '{key}'"
        _check_config_key(key, label)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{label}: expected a non-empty list of values, got {values!r}")
        for v in values:
            if not isinstance(v, (*SCALAR_TYPES, list)):
                raise ConfigError(f"{label}: expected scalars (or lists for list-valued keys), got {v!r}")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{label}: duplicate values in {values!r}")
        out[key] = tuple(values)
    return out


def _check_config_key(dotted: str, label: str) -> None:
    """Raise unless ``dotted`` names a leaf field of :class:`Config` (e.g. ``privacy.noise-multiplier``)."""
    node: Any = Config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(node) if dataclasses.is_dataclass(node) else {}
        name = part.replace("-", "_")
        if name not in hints:
            where = ".".join(parts[:i]) or "the top level"
            valid = ", ".join(sorted(h.replace("_", "-") for h in hints)) or "none (not a section)"
            raise ConfigError(f"{label}: unknown config key '{dotted}' (valid under {where}: {valid})")
        node = hints[name]
    if dataclasses.is_dataclass(node):
        raise ConfigError(f"{label}: '{dotted}' is a section, not a key")


def _validate_references(refs: Any) -> tuple[str, ...]:
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise ConfigError(f"'sweep.references': expected a list of names, got {refs!r}")
    for r in refs:
        if r not in REFERENCE_KINDS:
            raise ConfigError(f"'sweep.references': unknown reference {r!r} (valid: {', '.join(REFERENCE_KINDS)})")
    if len(set(refs)) != len(refs):
        raise ConfigError(f"'sweep.references': duplicate names in {refs!r}")
    return tuple(refs)


def _validate_central(central: Any) -> dict[str, Any]:
    if not isinstance(central, dict):
        raise ConfigError(f"'sweep.central': expected a table of train keys, got {central!r}")
    train_keys = {k.replace("_", "-") for k in typing.get_type_hints(TrainConfig)}
    for key in central:
        if norm_key(key) not in train_keys:
            raise ConfigError(f"unknown key 'sweep.central.{key}' (valid here: {', '.join(sorted(train_keys))})")
    try:
        build_config({"train": central})
    except ConfigError as exc:
        raise ConfigError(f"sweep.central: {exc}") from None
    return {norm_key(k): v for k, v in central.items()}


def _check_base(spec: SweepSpec) -> None:
    """The base config must build, and a ``--set`` may not silently lose to a grid key."""
    for item in spec.base_overrides:
        key = norm_key(item.split("=", 1)[0])
        if key in spec.grid:
            raise ConfigError(f"override '{item}' sets a sweep grid key; use --set sweep.grid.{key}=[...] instead")
    spec.base_config()
