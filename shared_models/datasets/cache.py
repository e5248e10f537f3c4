"""Local cache of downloaded datasets: location, SHA-256 checks and atomic writes."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from shared_models.atomic_io import atomic_write_bytes  # noqa: F401  (re-exported)
from shared_models.paths import APP_DIR, CACHE_ENV, XDG_ENV, cache_root  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

ML100K_DIR = "ml-100k"

#: SHA-256 of the RecBole atomic files (identical to the copy in recbole==1.2.1).
ML100K_SHA256: dict[str, str] = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
#: Files whose content must always match the pinned sum, whatever the source.
STRICT_FILES = frozenset({"ml-100k.inter"})
#: Records the sums of files that were accepted with a warning (converted by us).
MANIFEST_NAME = "accepted-sha256.json"


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    return sha256_bytes(path.read_bytes())


def read_manifest(directory: Path) -> dict[str, str]:
    """Sums accepted with a warning for this cache directory ({} if none or unreadable)."""
    path = directory / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if k not in STRICT_FILES}


def write_manifest(directory: Path, accepted: dict[str, str]) -> None:
    """Record (or clear) the sums that were accepted although they differ from the pin."""
    path = directory / MANIFEST_NAME
    if not accepted:
        path.unlink(missing_ok=True)
        return
    atomic_write_bytes(path, json.dumps(accepted, indent=1, sort_keys=True).encode("utf-8"))


def cache_problems(directory: Path, pinned: dict[str, str]) -> list[str]:
    """Why ``directory`` is not a valid cached copy; an empty list means it verifies.

    A file verifies when its SHA-256 equals the pinned sum, or (for non-strict
    files only) the sum recorded in the manifest when it was converted locally.
    """
    accepted = read_manifest(directory)
    problems = []
    for name, expected in pinned.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        actual = sha256_file(path)
        if actual != expected and accepted.get(name) != actual:
            problems.append(f"{path}: SHA-256 {actual} does not match the pinned {expected}")
    return problems
