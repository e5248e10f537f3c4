"""A signed, hash-chained, append-only log of the server's rounds (``RUN_DIR/round_log.jsonl``).

One line per round: the caller's record (round, sampled and valid counts, rejected updates with reasons,
SHA-256 of the aggregate, noise parameters, config hash, code version) plus two fields added here:

* ``prev_hash``: hex SHA-256 of the previous line's exact bytes (without its newline); the first line
  carries :data:`GENESIS_HASH`.
* ``signature``: hex Ed25519 signature by the server over :data:`SIGNATURE_DOMAIN` followed by the
  canonical JSON (sorted keys, no whitespace, UTF-8, no NaN) of the line without ``signature``.

Every line is itself canonical JSON, flushed and fsynced before :meth:`RoundLog.append` returns.
:func:`verify_log` rejects an edited field, swapped, inserted or dropped lines (all break the chain or a
signature), a line signed by another key, and non-increasing rounds. Dropping the LAST lines leaves a
valid shorter chain: compare ``rounds`` with the number of rounds run (``expected_rounds``) or with a head
hash published elsewhere.

Usage (the server loop, once per round)::

    from server.round_log import RoundLog, aggregate_sha256, code_version, config_hash, verify_log
    log = RoundLog(run_dir / "round_log.jsonl", server_keys.signing_key)
    log.append({"round": r, "sampled": 6, "valid": 5,
                "rejected": [{"node": 3, "reason": "bad signature"}],
                "aggregate_sha256": aggregate_sha256(strategy.broadcast()),
                "noise": {"noise_multiplier": 1.0, "max_grad_norm": 1.0},
                "config_hash": config_hash(cfg.to_dict()), "code_version": code_version()})
    assert verify_log(run_dir / "round_log.jsonl", server_keys.signing_key.public_key()).ok
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_DOMAIN = b"fedinterest/round-log/v1\0"
GENESIS_HASH = hashlib.sha256(b"fedinterest/round-log/genesis/v1").hexdigest()
RESERVED_FIELDS = ("prev_hash", "signature")
REQUIRED_FIELDS = ("round", "sampled", "valid", "rejected", "aggregate_sha256", "noise", "config_hash",
                   "code_version")
PACKAGE = "fedinterest"
GIT_TIMEOUT_S = 2.0


def canonical_json(obj: Any) -> bytes:
    """Deterministic UTF-8 JSON: sorted keys, no whitespace, NaN/Infinity rejected."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def config_hash(config_dict: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of a config dict (tuples hash like lists)."""
    return hashlib.sha256(canonical_json(config_dict)).hexdigest()


def aggregate_sha256(aggregate: bytes | Mapping[str, np.ndarray] | None) -> str | None:
    """Hex SHA-256 of an encrypted aggregate (bytes) or of plaintext weights (name -> array); None if absent.

    Weights are hashed as, per name in sorted order: name, dtype, shape, then the C-order array bytes.
    """
    if aggregate is None:
        return None
    if isinstance(aggregate, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(aggregate)).hexdigest()
    digest = hashlib.sha256()
    for name in sorted(aggregate):
        arr = np.ascontiguousarray(np.asarray(aggregate[name]))
        digest.update(canonical_json([name, arr.dtype.str, list(arr.shape)]))
        digest.update(arr.tobytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``fedinterest <version>`` plus ``+git<commit>[-dirty]`` when a git checkout is found; never raises."""
    try:
        version = metadata.version(PACKAGE)
    except Exception:  # noqa: BLE001 - not installed, broken metadata: still report something
        version = "unknown"
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = _git(repo, "rev-parse", "HEAD")
        dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    except Exception:  # noqa: BLE001 - no git, not a checkout, timeout
        return f"{PACKAGE} {version}"
    return f"{PACKAGE} {version}+git{commit[:12]}{'-dirty' if dirty else ''}"


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                         timeout=GIT_TIMEOUT_S)
    return out.stdout.strip()


def _signed_bytes(line_without_signature: Mapping[str, Any]) -> bytes:
    return SIGNATURE_DOMAIN + canonical_json(line_without_signature)


def _check_record(record: Mapping[str, Any]) -> None:
    if not isinstance(record, Mapping):
        raise TypeError(f"a round record must be a dict, got {type(record).__name__}")
    clash = [k for k in RESERVED_FIELDS if k in record]
    if clash:
        raise ValueError(f"round record must not set {clash}: the log adds them")
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise ValueError(f"round record lacks required fields {missing}")
    rnd = record["round"]
    if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
        raise ValueError(f"round record field 'round' must be an int >= 0, got {rnd!r}")


class RoundLog:
    """Appends signed, chained lines to ``path``; reopening an existing log continues its chain.

    Single writer only. Opening an existing log re-verifies it under this key first and refuses a log
    that does not verify (or ends in a partial line), naming the file and the line.
    """

    def __init__(self, path: str | os.PathLike[str], signing_key: Ed25519PrivateKey) -> None:
        if not isinstance(signing_key, Ed25519PrivateKey):
            raise TypeError("signing_key must be an Ed25519PrivateKey")
        self.path = Path(path)
        self._key = signing_key
        self._prev_hash, self._last_round = GENESIS_HASH, -1
        if self.path.exists() and self.path.stat().st_size > 0:
            check = verify_log(self.path, signing_key.public_key())
            if not check.ok:
                raise ValueError(f"round log {self.path}: refusing to append: {check.reason}")
            last = self.path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
            self._prev_hash = hashlib.sha256(last).hexdigest()
            self._last_round = int(json.loads(last)["round"])

    @property
    def last_round(self) -> int:
        """Round of the last line (-1 for an empty log)."""
        return self._last_round

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Sign and durably append one round's ``record``; returns the full line written (as a dict)."""
        _check_record(record)
        if record["round"] <= self._last_round:
            raise ValueError(f"round log {self.path}: round {record['round']} is not after {self._last_round}")
        line: dict[str, Any] = {**record, "prev_hash": self._prev_hash}
        line["signature"] = self._key.sign(_signed_bytes(line)).hex()
        raw = canonical_json(line)
        new_file = not self.path.exists()
        with self.path.open("ab") as fh:
            fh.write(raw + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        if new_file:
            _fsync_dir(self.path.parent)
        self._prev_hash, self._last_round = hashlib.sha256(raw).hexdigest(), record["round"]
        return line


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # platforms without directory fds
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class LogVerification:
    """Outcome of :func:`verify_log`: ``ok``, the number of verified rounds, and why it failed."""

    ok: bool
    rounds: int
    reason: str = ""


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the raw 32-byte Ed25519 public key: what an auditor pins (``audit --key-fingerprint``)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()


def verify_log(path: str | os.PathLike[str], verify_key: Ed25519PublicKey, *,
               expected_rounds: int | None = None) -> LogVerification:
    """Check every line's signature, the hash chain and strictly increasing rounds.

    ``rounds`` counts the lines verified before the first failure. With ``expected_rounds`` the log must
    also hold exactly that many lines (catches a truncated tail).
    """
    log_path = Path(path)
    try:
        data = log_path.read_bytes()
    except OSError as exc:
        return LogVerification(False, 0, f"round log {log_path}: cannot read: {exc}")
    if data and not data.endswith(b"\n"):
        return LogVerification(False, 0, f"round log {log_path}: last line is incomplete (no newline)")
    prev_hash, last_round, count = GENESIS_HASH, -1, 0
    for number, raw in enumerate(data.split(b"\n")[:-1] if data else [], start=1):
        problem, line = _check_line(raw, verify_key, prev_hash, last_round)
        if problem:
            return LogVerification(False, count, f"round log {log_path}: line {number}: {problem}")
        prev_hash, last_round, count = hashlib.sha256(raw).hexdigest(), line["round"], count + 1
    if expected_rounds is not None and count != expected_rounds:
        return LogVerification(False, count, f"round log {log_path}: holds {count} rounds, expected "
                                             f"{expected_rounds} (truncated or extended)")
    return LogVerification(True, count, "")


def _check_line(raw: bytes, key: Ed25519PublicKey, prev_hash: str,
                last_round: int) -> tuple[str, dict[str, Any]]:
    """('', line) if ``raw`` is a valid next line, else (what is wrong, {})."""
    try:
        line = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"not valid JSON ({exc})", {}
    if not isinstance(line, dict) or not isinstance(line.get("signature"), str):
        return "not a signed round record", {}
    body = {k: v for k, v in line.items() if k != "signature"}
    if canonical_json(line) != raw:
        return "not in canonical form (edited?)", {}
    try:
        key.verify(bytes.fromhex(line["signature"]), _signed_bytes(body))
    except (InvalidSignature, ValueError):
        return "signature does not verify under the server key (edited, or signed by another key)", {}
    if line.get("prev_hash") != prev_hash:
        return "prev_hash does not match the previous line (lines reordered, inserted or dropped)", {}
    rnd = line.get("round")
    if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd <= last_round:
        return f"round {rnd!r} is not after the previous round {last_round}", {}
    return "", line
