"""Shared parsing pieces: reading a text file, numeric fields, raw rows -> Interactions."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import located
from .types import PAD_TOKEN, Interactions

log = logging.getLogger(__name__)

ENCODING = "utf-8"
READ_ENCODING = "utf-8-sig"  # what is read: UTF-8, a leading byte-order mark dropped (never part of a header)
FIRST_USER_INDEX = 0
FIRST_ITEM_INDEX = 1  # index 0 is the padding item


@dataclass
class RawRows:
    """Validated rows of one interaction file, still as raw tokens."""

    path: Path
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    blank_lines: int = 0

    def add(self, user: str, item: str, timestamp: float) -> None:
        """Append one interaction."""
        self.users.append(user)
        self.items.append(item)
        self.timestamps.append(timestamp)


def read_text(path: Path) -> str:
    """Whole file as UTF-8 text (a leading BOM dropped); DatasetError (with the line) if missing or
    undecodable (e.g. Latin-1 bytes)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise located(path, "file not found") from None
    except OSError as exc:
        raise located(path, f"cannot read file: {exc.strerror or exc}") from None
    try:
        return data.decode(READ_ENCODING)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise located(path, f"not valid {ENCODING} text ({exc.reason})", line=line) from None


def column_positions(path: Path, names: list[str], required: tuple[str, ...], *,
                     header_line: int) -> dict[str, int]:
    """Column name -> position for an already-normalised header; duplicate or missing required columns are
    DatasetErrors naming the file, the header line and the column."""
    columns: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in columns:
            raise located(path, "duplicate column in header", line=header_line, column=name)
        columns[name] = position
    for name in required:
        if name not in columns:
            raise located(path, f"header lacks a required column (has {sorted(columns)})",
                          line=header_line, column=name)
    return columns


def to_number(text: str, path: Path, line: int, column: str) -> float:
    """Parse a finite float or raise DatasetError naming file, line and column."""
    try:
        value = float(text)
    except ValueError:
        raise located(path, f"expected a number, got {text!r}", line=line, column=column) from None
    if not math.isfinite(value):
        raise located(path, f"expected a finite number, got {text!r}", line=line, column=column)
    return value


def require_token(text: str, path: Path, line: int, column: str) -> str:
    """Return a stripped, non-empty token or raise DatasetError."""
    token = text.strip()
    if not token:
        raise located(path, "empty value", line=line, column=column)
    return token


def _dense_codes(tokens: list[str], first: int) -> tuple[np.ndarray, list[str]]:
    """Dense codes in order of first appearance, starting at ``first``; plus the vocabulary."""
    index: dict[str, int] = {}
    codes = [index.setdefault(token, len(index) + first) for token in tokens]
    return np.asarray(codes, dtype=np.int64), list(index)


def drop_repeated_rows(raw: RawRows) -> int:
    """Drop every row that repeats an earlier (user, item, timestamp) row exactly (file order kept, the first
    copy stays); returns how many were dropped. The one duplicate policy of fedinterest: the simulation's
    datasets and ``device import`` (client/interactions.py) both drop exact repeats."""
    seen: set[tuple[str, str, float]] = set()
    keep = [i for i, row in enumerate(zip(raw.users, raw.items, raw.timestamps)) if not (row in seen or seen.add(row))]
    dropped = len(raw.users) - len(keep)
    if dropped:
        raw.users, raw.items = [raw.users[i] for i in keep], [raw.items[i] for i in keep]
        raw.timestamps = [raw.timestamps[i] for i in keep]
    return dropped


def _log_row_notes(raw: RawRows) -> None:
    """Log blank lines; drop (and log) rows that repeat an earlier (user, item, timestamp) row exactly."""
    if raw.blank_lines:
        log.warning("%s: skipped %d blank line(s)", raw.path, raw.blank_lines)
    repeats = drop_repeated_rows(raw)
    if repeats:
        log.warning("%s: %d row(s) repeat an earlier (user, item, timestamp) row; dropped",
                    raw.path, repeats)


def build_interactions(raw: RawRows, source: str,
                       item_text: dict[str, str] | None = None) -> Interactions:
    """Turn raw token rows into dense-indexed Interactions (file order kept, exact repeats dropped)."""
    _log_row_notes(raw)
    users, user_ids = _dense_codes(raw.users, FIRST_USER_INDEX)
    items, item_tokens = _dense_codes(raw.items, FIRST_ITEM_INDEX)
    if PAD_TOKEN in item_tokens:
        raise located(raw.path, f"item token {PAD_TOKEN!r} is reserved for padding")
    texts = None
    if item_text is not None:
        texts = [""] + [item_text.get(token, "") for token in item_tokens]
        missing = sum(1 for token in item_tokens if token not in item_text)
        if missing:
            log.warning("%s: %d item(s) have no metadata; their text is empty", raw.path, missing)
    log.info("%s: %d interactions, %d users, %d items", raw.path, len(raw.users),
             len(user_ids), len(item_tokens))
    return Interactions(
        users=users, items=items,
        timestamps=np.asarray(raw.timestamps, dtype=np.float64),
        user_ids=user_ids, item_ids=[PAD_TOKEN, *item_tokens],
        item_text=texts, source=source,
    )
