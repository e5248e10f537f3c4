"""The one exception type raised for bad or unavailable dataset files."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A dataset file is missing, malformed or fails verification.

    The message always names the file, and the line and column where known.
    """


def located(path: Path | str, message: str, *, line: int | None = None,
            column: str | None = None) -> DatasetError:
    """Build a DatasetError whose message starts with ``file:line`` (and the column)."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    if column is not None:
        where += f" (column {column!r})"
    return DatasetError(f"{where}: {message}")
