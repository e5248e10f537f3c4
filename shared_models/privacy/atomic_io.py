"""Crash-safe JSON persistence for the on-device privacy ledger.

The new content is written to a temporary file in the SAME directory, flushed
and fsync'ed, then moved over the target with ``os.replace`` (atomic on POSIX
and Windows within one filesystem), and finally the directory entry is
fsync'ed.  A crash at any point leaves either the old file or the new one,
never a torn mix; a failed write removes its temporary file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared_models.atomic_io import atomic_write_bytes

JSON_INDENT = 2


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as strict JSON (no NaN/Infinity) to ``path`` atomically."""
    text = json.dumps(data, indent=JSON_INDENT, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
