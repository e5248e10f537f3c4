"""The on-device interaction store: an append-only SQLite log of (item token, timestamp) events.

Durability: WAL journal with ``synchronous=FULL``, so an acknowledged ``add`` or ``import_csv`` survives a
crash or power loss. Atomicity: every call is ONE transaction (``BEGIN IMMEDIATE ... COMMIT``); a process
killed mid-import leaves the store exactly as it was before that import. ``import_csv`` validates the whole
file before it writes anything, so a bad row commits nothing and the error names the file and line.

``history()`` is chronological by timestamp; equal timestamps keep insertion order (``seq``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)
STORE_NAME = "interactions.sqlite"
ITEM_COL, TIME_COL, USER_COL = "item", "timestamp", "user"
PROGRESS_EVERY = 10_000  # rows between progress callbacks inside an import transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS interactions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS interactions_time ON interactions (ts, seq);
"""


class InteractionError(ValueError):
    """A bad interaction (row, item or timestamp); the message names the file and line when there is one."""


class InteractionStore:
    """One device's interaction log at ``STATE_DIR/interactions.sqlite``."""

    def __init__(self, path: Path | str, *, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no interaction store (run `fedinterest device init` first)")
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "InteractionStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, item: str, ts: float | None = None) -> int:
        """Append one event (``ts`` defaults to now, Unix seconds); returns its sequence number."""
        row = _check_row(item, time.time() if ts is None else ts, where=f"{self.path}")
        with self._transaction():
            cur = self._db.execute("INSERT INTO interactions (item, ts) VALUES (?, ?)", row)
        return int(cur.lastrowid)

    def add_many(self, rows: Iterable[tuple[str, float]],
                 progress: Callable[[int], None] | None = None) -> int:
        """Append validated ``(item, ts)`` rows in one transaction: all of them or none."""
        count = 0
        with self._transaction():
            for item, ts in rows:
                self._db.execute("INSERT INTO interactions (item, ts) VALUES (?, ?)", (item, float(ts)))
                count += 1
                if progress is not None and count % PROGRESS_EVERY == 0:
                    progress(count)
        return count

    def import_csv(self, path: Path | str, *, user_id: str | None = None,
                   known: Callable[[str], bool] | None = None,
                   progress: Callable[[int], None] | None = None) -> int:
        """Import ``item,timestamp`` or ``user,item,timestamp`` rows (the latter filtered to ``user_id``).

        Every row is checked first (``known(item)`` rejects items outside the catalogue); then all are
        written in one transaction. Duplicate policy (the same as the simulation's datasets,
        ``shared_models/datasets/rows.py``): a row that repeats an event exactly (same item and timestamp for
        this user), earlier in the file or already in the store, is dropped, so re-importing a file adds
        nothing. Returns the number of events imported.
        """
        rows = read_interaction_csv(Path(path), user_id=user_id, known=known)
        seen = {(item, ts) for _, item, ts in self.events()}
        fresh = [row for row in rows if not (row in seen or seen.add(row))]
        if len(fresh) < len(rows):
            log.warning("%s: %d row(s) repeat an event already imported or earlier in the file; dropped", path,
                        len(rows) - len(fresh))
        return self.add_many(fresh, progress=progress)

    def history(self) -> list[str]:
        """Item tokens, oldest first (ties in timestamp keep insertion order)."""
        return [r[0] for r in self._db.execute("SELECT item FROM interactions ORDER BY ts, seq")]

    def events(self) -> list[tuple[int, str, float]]:
        """(seq, item, ts) rows in chronological order."""
        return list(self._db.execute("SELECT seq, item, ts FROM interactions ORDER BY ts, seq"))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM interactions").fetchone()[0])

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE on enter; COMMIT on success, ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _check_row(item: str, ts: object, *, where: str) -> tuple[str, float]:
    token = str(item).strip()
    if not token:
        raise InteractionError(f"{where}: field 'item' is empty")
    try:
        stamp = float(ts)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InteractionError(f"{where}: field 'timestamp': {ts!r} is not a number") from None
    if not math.isfinite(stamp):
        raise InteractionError(f"{where}: field 'timestamp': {ts!r} is not finite")
    return token, stamp


def _header(path: Path, header: list[str] | None) -> dict[str, int]:
    cols = {c.strip().lower(): i for i, c in enumerate(header or [])}
    if ITEM_COL not in cols or TIME_COL not in cols:
        raise InteractionError(f"{path}:1: header must be 'item,timestamp' or 'user,item,timestamp', "
                               f"got {','.join(header or []) or '(empty file)'}")
    return cols


def read_interaction_csv(path: Path, *, user_id: str | None = None,
                         known: Callable[[str], bool] | None = None) -> list[tuple[str, float]]:
    """Parse and check every row of an interaction CSV; InteractionError names ``file:line`` and the field."""
    if not path.is_file():
        raise InteractionError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a leading BOM is no part of the header
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InteractionError(f"{path}:{line}: not valid UTF-8 text ({exc.reason} at byte {exc.start}); "
                               "save the file as UTF-8") from None
    with io.StringIO(text, newline="") as fh:
        reader = csv.reader(fh)
        try:
            cols = _header(path, next(reader, None))
            if USER_COL in cols and user_id is None:
                raise InteractionError(f"{path}:1: file has a 'user' column but no device user id was given")
            return [row for row in (_parse(path, reader.line_num, f, cols, user_id, known) for f in reader)
                    if row is not None]
        except csv.Error as exc:
            raise InteractionError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None


def _parse(path: Path, line: int, fields: list[str], cols: dict[str, int], user_id: str | None,
           known: Callable[[str], bool] | None) -> tuple[str, float] | None:
    if not any(f.strip() for f in fields):
        return None
    if len(fields) != len(cols):
        raise InteractionError(f"{path}:{line}: expected {len(cols)} fields as in the header, got {len(fields)}")
    if USER_COL in cols and fields[cols[USER_COL]].strip() != user_id:
        return None
    item, ts = _check_row(fields[cols[ITEM_COL]], fields[cols[TIME_COL]], where=f"{path}:{line}")
    if known is not None and not known(item):
        raise InteractionError(f"{path}:{line}: field 'item': {item!r} is not in the device catalogue")
    return item, ts
