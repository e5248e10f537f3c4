"""Expand a sweep grid into points: the cartesian product, collapsed where a key cannot matter, with slugs.

A point is one combination of grid values. Where the point is non-private (``privacy.mode = "none"``)
every other ``privacy.*`` grid key is dropped (noise, clipping and budget do nothing), so the noise levels
collapse to one run. Each point has a stable, filesystem-safe slug built from its settings in grid order,
e.g. ``privacy.mode-example__privacy.noise-multiplier-0.5``; it names the point's RUN_DIR.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from shared_models.config import Config, ConfigError
from simulations.sweep.spec import SweepSpec

BASE_SLUG = "base"  # the single point of an empty grid
PRIVACY_MODE_KEY = "privacy.mode"
PRIVACY_PREFIX = "privacy."
KEY_VALUE_SEP = "-"
PART_SEP = "__"
MAX_SLUG_CHARS = 180  # longer slugs are cut and suffixed with a hash (file names stay < 255 bytes)
HASH_CHARS = 10
UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: its slug, the grid values it sets (kebab dotted key -> value) and its Config."""

    slug: str
    settings: dict[str, Any]
    config: Config

    @property
    def overrides(self) -> list[str]:
        return point_overrides(self.settings)


def toml_literal(value: Any) -> str:
    """A value as the TOML literal that ``parse_overrides`` reads back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} as a TOML value")  # pragma: no cover - validated earlier


def point_overrides(settings: dict[str, Any]) -> list[str]:
    """``{"privacy.noise-multiplier": 0.5}`` -> ``["privacy.noise-multiplier=0.5"]``."""
    return [f"{key}={toml_literal(value)}" for key, value in settings.items()]


def slug_value(value: Any) -> str:
    """Short text for a value inside a slug or a label (``true``, ``0.5``, ``44-20``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "-".join(slug_value(v) for v in value)
    return str(value)


def make_slug(settings: dict[str, Any]) -> str:
    """Stable, filesystem-safe name of a point (depends only on its settings, not on its position)."""
    if not settings:
        return BASE_SLUG
    raw = PART_SEP.join(f"{key}{KEY_VALUE_SEP}{slug_value(v)}" for key, v in settings.items())
    slug = UNSAFE_CHARS.sub("_", raw)
    if len(slug) > MAX_SLUG_CHARS:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:HASH_CHARS]
        slug = f"{slug[:MAX_SLUG_CHARS - HASH_CHARS - 1]}_{digest}"
    return slug


def expand_grid(spec: SweepSpec) -> list[SweepPoint]:
    """Every distinct point of the grid, in product order (first key slowest); configs built and validated."""
    keys = list(spec.grid)
    points: dict[str, SweepPoint] = {}
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        settings = dict(zip(keys, combo))
        cfg = _build(spec, settings)
        if cfg.privacy.mode == "none":
            settings = {k: v for k, v in settings.items()
                        if not k.startswith(PRIVACY_PREFIX) or k == PRIVACY_MODE_KEY}
            cfg = _build(spec, settings)
        slug = make_slug(settings)
        points.setdefault(slug, SweepPoint(slug, settings, cfg))
    return list(points.values())


def _build(spec: SweepSpec, settings: dict[str, Any]) -> Config:
    try:
        return spec.base_config(point_overrides(settings))
    except ConfigError as exc:
        raise ConfigError(f"sweep point {make_slug(settings)}: {exc}") from None
