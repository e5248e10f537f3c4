"""Signed round log: append/verify, and every kind of tampering fails naming the line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from server.round_log import (
    GENESIS_HASH, RoundLog, aggregate_sha256, canonical_json, code_version, config_hash, verify_log)
from shared_models.crypto import generate_signing_key


def _record(r: int) -> dict:
    return {"round": r, "sampled": 6, "valid": 5, "rejected": [{"node": 3, "reason": "bad signature"}],
            "aggregate_sha256": aggregate_sha256(bytes([r]) * 32),
            "noise": {"noise_multiplier": 1.0, "max_grad_norm": 1.0},
            "config_hash": config_hash({"a": 1}), "code_version": "fedinterest test"}


@pytest.fixture
def key():
    return generate_signing_key()


@pytest.fixture
def log3(tmp_path: Path, key) -> Path:
    path = tmp_path / "round_log.jsonl"
    log = RoundLog(path, key)
    for r in (1, 2, 3):
        log.append(_record(r))
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_three_rounds_verify_and_chain_from_genesis(log3: Path, key) -> None:
    check = verify_log(log3, key.public_key())
    assert (check.ok, check.rounds, check.reason) == (True, 3, "")
    first = json.loads(_lines(log3)[0])
    assert first["prev_hash"] == GENESIS_HASH and first["rejected"][0]["reason"] == "bad signature"
    assert verify_log(log3, key.public_key(), expected_rounds=3).ok


def test_reopen_continues_the_chain(log3: Path, key) -> None:
    log = RoundLog(log3, key)
    assert log.last_round == 3
    log.append(_record(4))
    assert verify_log(log3, key.public_key()).rounds == 4
    with pytest.raises(ValueError, match="not after"):
        log.append(_record(4))


def test_tampered_field_fails_at_that_line(log3: Path, key) -> None:
    lines = _lines(log3)
    row = json.loads(lines[1])
    row["valid"] = 6
    lines[1] = canonical_json(row)
    _write(log3, lines)
    check = verify_log(log3, key.public_key())
    assert not check.ok and check.rounds == 1
    assert "line 2" in check.reason and "signature" in check.reason


def test_swapped_lines_fail(log3: Path, key) -> None:
    lines = _lines(log3)
    lines[1], lines[2] = lines[2], lines[1]
    _write(log3, lines)
    check = verify_log(log3, key.public_key())
    assert not check.ok and "line 2" in check.reason and "prev_hash" in check.reason


def test_dropped_middle_line_fails(log3: Path, key) -> None:
    lines = _lines(log3)
    _write(log3, [lines[0], lines[2]])
    check = verify_log(log3, key.public_key())
    assert not check.ok and "line 2" in check.reason and "prev_hash" in check.reason


def test_resigned_with_another_key_fails(log3: Path, key, tmp_path: Path) -> None:
    forged = tmp_path / "forged.jsonl"
    other = RoundLog(forged, generate_signing_key())
    for r in (1, 2, 3):
        other.append(_record(r))
    check = verify_log(forged, key.public_key())
    assert not check.ok and check.rounds == 0 and "line 1" in check.reason and "another key" in check.reason
    with pytest.raises(ValueError, match="refusing to append"):
        RoundLog(forged, key)


def test_truncated_tail_needs_expected_rounds_and_partial_line_fails(log3: Path, key) -> None:
    lines = _lines(log3)
    _write(log3, lines[:2])
    assert verify_log(log3, key.public_key()).ok  # a chain prefix is still a valid chain...
    check = verify_log(log3, key.public_key(), expected_rounds=3)
    assert not check.ok and "expected 3" in check.reason  # ...unless the round count is known
    log3.write_bytes(lines[0] + b"\n" + lines[1][:40])
    assert "incomplete" in verify_log(log3, key.public_key()).reason


def test_records_are_validated(tmp_path: Path, key) -> None:
    log = RoundLog(tmp_path / "l.jsonl", key)
    with pytest.raises(ValueError, match="lacks required"):
        log.append({"round": 1})
    with pytest.raises(ValueError, match="must not set"):
        log.append({**_record(1), "signature": "00"})
    with pytest.raises(ValueError):
        log.append({**_record(1), "noise": {"noise_multiplier": float("nan")}})


def test_hash_helpers_are_deterministic() -> None:
    assert config_hash({"b": [1, 2], "a": 1}) == config_hash({"a": 1, "b": (1, 2)})
    w = {"x": np.arange(4, dtype=np.float32), "a": np.ones((2, 2))}
    assert aggregate_sha256(w) == aggregate_sha256(dict(reversed(list(w.items()))))
    assert aggregate_sha256(w) != aggregate_sha256({**w, "x": np.arange(4, dtype=np.float64)})
    assert aggregate_sha256(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert aggregate_sha256(None) is None
    assert code_version().startswith("fedinterest ")
