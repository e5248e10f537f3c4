"""Reader for RecBole atomic files (``.inter`` and the optional sibling ``.item``)."""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import located
from .rows import RawRows, column_positions, read_text, require_token, to_number

SEP = "\t"
TYPE_SEP = ":"
HEADER_LINE = 1
USER_COL, ITEM_COL, TIME_COL, RATING_COL = "user_id", "item_id", "timestamp", "rating"
TITLE_COLS = ("movie_title", "title")
YEAR_COLS = ("release_year", "year")
GENRE_COLS = ("class", "genre", "genres")
#: Values RecBole uses for an unknown title or year (its own spelling included).
MISSING_VALUES = frozenset({"", "unkonwn", "unknown"})
TEXT_DASH = " \u2014 "

log = logging.getLogger(__name__)


def _lines(path: Path) -> list[str]:
    text = read_text(path)
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise located(path, "empty file: expected a header line", line=HEADER_LINE)
    return lines


def parse_header(path: Path, header: str, required: tuple[str, ...]) -> dict[str, int]:
    """Map column name (the part before ``:type``) -> position; check required columns."""
    names = [cell.split(TYPE_SEP, 1)[0].strip() for cell in header.split(SEP)]
    return column_positions(path, names, required, header_line=HEADER_LINE)


def _fields(path: Path, line_no: int, line: str, width: int) -> list[str]:
    fields = line.split(SEP)
    if len(fields) != width:
        raise located(path, f"expected {width} tab-separated fields as in the header, "
                      f"found {len(fields)}", line=line_no)
    return fields


def read_atomic_inter(path: Path) -> RawRows:
    """Rows of a ``.inter`` file (columns found by header name)."""
    lines = _lines(path)
    cols = parse_header(path, lines[0], (USER_COL, ITEM_COL, TIME_COL))
    width, rating = len(lines[0].split(SEP)), cols.get(RATING_COL)
    user, item, time = cols[USER_COL], cols[ITEM_COL], cols[TIME_COL]
    raw = RawRows(path)
    for line_no, line in enumerate(lines[1:], start=HEADER_LINE + 1):
        if not line.strip():
            raw.blank_lines += 1
            continue
        fields = _fields(path, line_no, line, width)
        if rating is not None:
            to_number(fields[rating], path, line_no, RATING_COL)
        raw.add(require_token(fields[user], path, line_no, USER_COL),
                require_token(fields[item], path, line_no, ITEM_COL),
                to_number(fields[time], path, line_no, TIME_COL))
    if not raw.users:
        raise located(path, "no interactions after the header", line=HEADER_LINE + 1)
    return raw


def _first_present(cols: dict[str, int], names: tuple[str, ...]) -> int | None:
    return next((cols[name] for name in names if name in cols), None)


def item_text_of(title: str, year: str, genres: str, token: str) -> str:
    """``"Title (year) — genre1, genre2"``; unknown parts are left out."""
    title, year = title.strip(), year.strip()
    text = f"Item {token}" if title.lower() in MISSING_VALUES else title
    if year.lower() not in MISSING_VALUES:
        text += f" ({year})"
    names = genres.split()
    return text + (TEXT_DASH + ", ".join(names) if names else "")


def read_atomic_items(path: Path) -> dict[str, str]:
    """``item token -> text`` from a ``.item`` file (title, year and genre columns)."""
    lines = _lines(path)
    cols = parse_header(path, lines[0], (ITEM_COL,))
    width, item = len(lines[0].split(SEP)), cols[ITEM_COL]
    title, year = _first_present(cols, TITLE_COLS), _first_present(cols, YEAR_COLS)
    genre = _first_present(cols, GENRE_COLS)
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    blank = 0
    for line_no, line in enumerate(lines[1:], start=HEADER_LINE + 1):
        if not line.strip():
            blank += 1
            continue
        fields = _fields(path, line_no, line, width)
        token = require_token(fields[item], path, line_no, ITEM_COL)
        if token in first_line:
            raise located(path, f"duplicate item {token!r} (first on line {first_line[token]})",
                          line=line_no, column=ITEM_COL)
        first_line[token] = line_no
        texts[token] = item_text_of(
            fields[title] if title is not None else "", fields[year] if year is not None else "",
            fields[genre] if genre is not None else "", token)
    if blank:
        log.warning("%s: skipped %d blank line(s)", path, blank)
    return texts
