"""Broadcast by reference for in-process simulations: the round's global state is written once, named by its
SHA-256, and messages carry the name instead of the bytes.

In a Flower simulation every sampled device's message would otherwise carry its own copy of the global state
(the encrypted sum is 4.7 MB on ML-100K): the server thread copies it into each message, Ray pickles it and
ships it to an actor that unpickles it, 943 times a round, while the actor waits. Simulated devices share the
run directory, so the server publishes the state to ``RUN_DIR/broadcast/<sha256>.bin`` and each device reads
it (once per process and round) and checks the digest, as it would check a download from a CDN.
Deployed devices get the bytes in the message (no shared disk); nothing about the state itself changes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from pathlib import Path

import numpy as np

from shared_models.atomic_io import atomic_write_bytes

KEEP = 2  # published states kept (the current round's and the previous one)
SUFFIX = ".bin"


def encode_state(state: bytes | dict[str, np.ndarray]) -> bytes:
    """The encrypted sum as is; plaintext weights as an ``.npz`` (key order kept)."""
    if isinstance(state, (bytes, bytearray)):
        return bytes(state)
    buf = io.BytesIO()
    np.savez(buf, **state)
    return buf.getvalue()


def publish(directory: str | os.PathLike, blob: bytes) -> str:
    """Write ``blob`` as ``<sha256>.bin`` (atomic, once) and prune older states; return the digest."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(blob).hexdigest()
    path = root / f"{digest}{SUFFIX}"
    if not path.exists():
        atomic_write_bytes(path, blob)
    os.utime(path)  # newest = current, for pruning
    published = sorted(root.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in published[KEEP:]:
        if old != path:
            old.unlink(missing_ok=True)
    return digest


@functools.lru_cache(maxsize=KEEP)
def fetch(directory: str, digest: str) -> bytes:
    """The published bytes named ``digest`` (read once per process); ValueError when they do not match it."""
    path = Path(directory) / f"{digest}{SUFFIX}"
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: the server's broadcast state for this round is missing") from None
    if hashlib.sha256(blob).hexdigest() != digest:
        raise ValueError(f"{path}: content does not match its SHA-256 name (corrupted or replaced)")
    return blob


@functools.lru_cache(maxsize=KEEP)
def fetch_arrays(directory: str, digest: str) -> dict[str, np.ndarray]:
    """Plaintext weights of a published ``.npz``, read-only (shared by the devices of this process)."""
    with np.load(io.BytesIO(fetch(directory, digest))) as z:
        arrays = {k: z[k] for k in z.files}
    for a in arrays.values():
        a.setflags(write=False)
    return arrays
