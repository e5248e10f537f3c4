"""``load_interactions``: one entry point for every supported interaction source."""

from __future__ import annotations

from pathlib import Path

from .atomic import read_atomic_inter, read_atomic_items
from .csvfile import read_csv
from .errors import located
from .fetch import fetch_ml100k
from .rows import build_interactions
from .types import Interactions

ML100K_SPEC = "ml-100k"
ML100K_INTER = "ml-100k.inter"
ATOMIC_SUFFIX = ".inter"
ITEM_SUFFIX = ".item"
CSV_SUFFIX = ".csv"


def load_interactions(spec: str | Path) -> Interactions:
    """Load interactions from ``"ml-100k"``, a RecBole ``.inter`` file or a ``.csv`` file.

    A ``.inter`` file's sibling ``<stem>.item`` (if present) supplies item text.
    Raises DatasetError (a ValueError) naming the file, line and column on bad input.
    """
    if str(spec) == ML100K_SPEC:
        return _load_atomic(fetch_ml100k() / ML100K_INTER, source=ML100K_SPEC)
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix not in (ATOMIC_SUFFIX, CSV_SUFFIX):
        raise located(path, f"unknown extension {suffix or '(none)'!r}: expected "
                      f"{ATOMIC_SUFFIX!r} (RecBole atomic), {CSV_SUFFIX!r}, or {ML100K_SPEC!r}")
    if not path.is_file():
        raise located(path, "file not found")
    if suffix == CSV_SUFFIX:
        return build_interactions(read_csv(path), source=str(path))
    return _load_atomic(path, source=str(path))


def _load_atomic(path: Path, source: str) -> Interactions:
    """Read a ``.inter`` file plus its optional sibling ``.item`` metadata."""
    raw = read_atomic_inter(path)
    item_file = path.with_suffix(ITEM_SUFFIX)
    texts = read_atomic_items(item_file) if item_file.is_file() else None
    return build_interactions(raw, source=source, item_text=texts)
