"""Where fedinterest keeps its caches (datasets, text embeddings)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FEDINTEREST_CACHE"
XDG_ENV = "XDG_CACHE_HOME"
APP_DIR = "fedinterest"


def cache_root() -> Path:
    """``$FEDINTEREST_CACHE``, else ``$XDG_CACHE_HOME/fedinterest``, else ``~/.cache/fedinterest``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get(XDG_ENV)
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / APP_DIR


def device_state_dir(run_dir: Path | str, device_id: str) -> Path:
    """A simulated device's state directory inside its run directory."""
    return Path(run_dir) / "devices" / device_id
