"""Where fedinterest keeps its caches (datasets, text embeddings) and a run's keys, and how a device id becomes a
directory name."""

from __future__ import annotations

import hashlib
import os
import re
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


KEYS_SUFFIX = ".keys"  # RUN_DIR's keys live in the sibling RUN_DIR.keys
KEYS_MARKER = ".fedinterest-keys"  # written in a keys directory the harness made: --fresh deletes only those


def run_keys_dir(run_dir: str | os.PathLike, keys_dir: str = "") -> Path:
    """Where a run's keys live: ``keys_dir`` (``he.keys_dir``) when set, else ``RUN_DIR.keys`` beside the run
    directory, never inside it: whoever can edit a run must not find there the key that signs its round log,
    nor may an audit take its verify key from there."""
    if keys_dir:
        return Path(keys_dir)
    run = Path(run_dir).resolve()
    if not run.name:
        raise ValueError(f"run directory {run_dir!r} has no name to put its keys beside (use a sub-folder)")
    return run.parent / f"{run.name}{KEYS_SUFFIX}"


def mark_keys_dir(keys_dir: Path) -> None:
    """Mark a keys directory the harness made (what ``--fresh`` requires before deleting it)."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    marker = keys_dir / KEYS_MARKER
    if not marker.is_file():
        marker.write_text("fedinterest run keys\n")


SAFE_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # never '.', '..', '/', or a leading '.'/'_'
HASHED_PREFIX = "_"  # a directory name made from an id that is not safe; a safe id never starts with it
HASHED_HEX = 32  # 128 bits of SHA-256: distinct ids get distinct names


def is_safe_device_id(device_id: object) -> bool:
    return isinstance(device_id, str) and SAFE_DEVICE_ID.fullmatch(device_id) is not None


def check_device_id(device_id: object, *, what: str = "device id") -> str:
    """``device_id`` if it can name a directory as it is; ValueError naming it otherwise."""
    if not is_safe_device_id(device_id):
        raise ValueError(f"{what} {device_id!r} is not allowed: use 1-64 of [A-Za-z0-9_.-], starting with a "
                         "letter or digit (no path separators, no '.' or '..')")
    return str(device_id)


def device_dir_name(device_id: str) -> str:
    """The directory name of a device: the id itself when safe, else ``_`` + the first 128 bits of the
    SHA-256 of its UTF-8 bytes (collision-free: safe ids never start with ``_``)."""
    if is_safe_device_id(device_id):
        return device_id
    return HASHED_PREFIX + hashlib.sha256(str(device_id).encode("utf-8", "surrogatepass")).hexdigest()[:HASHED_HEX]


def device_state_dir(run_dir: Path | str, device_id: str) -> Path:
    """A simulated device's state directory inside its run directory (``devices/<device_dir_name(id)>``): a
    dataset's user id never becomes a raw path component."""
    return Path(run_dir) / "devices" / device_dir_name(device_id)
