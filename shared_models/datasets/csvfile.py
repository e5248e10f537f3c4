"""Reader and writer for plain CSV interaction files (``user,item,timestamp[,rating]``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .cache import atomic_write_bytes
from .errors import located
from .rows import ENCODING, RawRows, column_positions, read_text, require_token, to_number
from .types import Interactions

USER_COL, ITEM_COL, TIME_COL, RATING_COL = "user", "item", "timestamp", "rating"
REQUIRED = (USER_COL, ITEM_COL, TIME_COL)
HEADER_LINE = 1


def _header(path: Path, header: list[str] | None) -> dict[str, int]:
    """Column name -> position (names stripped and lower-cased)."""
    if header is None or not any(cell.strip() for cell in header):
        raise located(path, f"empty file: expected a header {','.join(REQUIRED)}",
                      line=HEADER_LINE)
    return column_positions(path, [cell.strip().lower() for cell in header], REQUIRED, header_line=HEADER_LINE)


def read_csv(path: Path) -> RawRows:
    """Rows of a CSV interaction file; DatasetError names file, line and column."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    raw = RawRows(path)
    try:
        cols = _header(path, next(reader, None))
        width, rating = len(cols), cols.get(RATING_COL)
        for fields in reader:
            line_no = reader.line_num
            if not any(cell.strip() for cell in fields):
                raw.blank_lines += 1
                continue
            if len(fields) != width:
                raise located(path, f"expected {width} comma-separated fields as in the header, "
                              f"found {len(fields)}", line=line_no)
            if rating is not None:
                to_number(fields[rating], path, line_no, RATING_COL)
            raw.add(require_token(fields[cols[USER_COL]], path, line_no, USER_COL),
                    require_token(fields[cols[ITEM_COL]], path, line_no, ITEM_COL),
                    to_number(fields[cols[TIME_COL]], path, line_no, TIME_COL))
    except csv.Error as exc:
        raise located(path, f"malformed CSV: {exc}", line=reader.line_num) from None
    if not raw.users:
        raise located(path, "no interactions after the header", line=HEADER_LINE + 1)
    return raw


def write_csv(inter: Interactions, path: Path | str) -> Path:
    """Write ``user,item,timestamp`` rows (raw tokens, exact float repr), atomically.

    ``load_interactions`` reads the file back to the same events; item text is not kept.
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REQUIRED)
    user_ids, item_ids = inter.user_ids, inter.item_ids
    for user, item, stamp in zip(inter.users.tolist(), inter.items.tolist(),
                                 inter.timestamps.tolist()):
        writer.writerow((user_ids[user], item_ids[item], repr(stamp)))
    target = Path(path)
    atomic_write_bytes(target, buffer.getvalue().encode(ENCODING))
    return target
