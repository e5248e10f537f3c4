"""Crash-safe file writes shared by every store (ledger, personal weights, dataset cache, run outputs).

The new content goes to a temporary file in the SAME directory, is flushed and fsync'ed, then moved over
the target with ``os.replace`` (atomic within one filesystem), and the directory entry is fsync'ed. A
crash at any point leaves either the old file or the new one, never a torn mix; a failed write removes
its temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
JSON_INDENT = 2


def fsync_directory(directory: Path) -> None:
    """Persist a rename by fsync'ing its directory (best effort: unsupported on some platforms)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path | str, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically; ``mode`` (e.g. 0o600) applies to the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    fsync_directory(path.parent)


def atomic_write_json(path: Path | str, data: Any) -> None:
    """Write ``data`` as strict JSON (no NaN/Infinity, sorted keys) to ``path`` atomically."""
    text = json.dumps(data, indent=JSON_INDENT, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
