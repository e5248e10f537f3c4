"""Crash-safe JSON persistence for the on-device privacy ledger.

The new content is written to a temporary file in the SAME directory, flushed
and fsync'ed, then moved over the target with ``os.replace`` (atomic on POSIX
and Windows within one filesystem), and finally the directory entry is
fsync'ed.  A crash at any point leaves either the old file or the new one,
never a torn mix; a failed write removes its temporary file.
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


def _fsync_directory(directory: Path) -> None:
    """Persist a rename by fsync'ing its directory (best effort: unsupported on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as strict JSON (no NaN/Infinity) to ``path`` atomically."""
    text = json.dumps(data, indent=JSON_INDENT, sort_keys=True, allow_nan=False) + "\n"
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(directory)
