"""PrivacyLedger: persistence, atomic writes, validation, replay protection."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from shared_models.privacy import (
    DuplicateRoundError,
    LedgerCorruptError,
    LedgerMismatchError,
    PrivacyLedger,
    RDPAccountant,
    epsilon_from_history,
)

DELTA = 1e-5
SIGMA, RATE, STEPS = 1.1, 0.01, 120


def _open(path: Path, **overrides) -> PrivacyLedger:
    kwargs = {"delta": DELTA, "unit": "example", "target_epsilon": 8.0, **overrides}
    return PrivacyLedger.open(path, **kwargs)


def _record(ledger: PrivacyLedger, round_id: int, steps: int = STEPS) -> bool:
    return ledger.record(round_id=round_id, noise_multiplier=SIGMA, sample_rate=RATE, num_steps=steps)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "device" / "privacy_ledger.json"


def test_new_ledger_is_created_empty(path: Path) -> None:
    ledger = _open(path)
    assert path.exists() and ledger.epsilon() == 0.0 and ledger.rounds == () and ledger.total_steps == 0
    assert ledger.to_summary()["noise_multiplier"] is None


def test_two_rounds_compose(path: Path) -> None:
    ledger = _open(path)
    assert _record(ledger, 1)
    one_round = ledger.epsilon()
    assert _record(ledger, 2)
    acc = RDPAccountant()
    acc.step(noise_multiplier=SIGMA, sample_rate=RATE, num_steps=2 * STEPS)
    assert ledger.epsilon() == pytest.approx(acc.get_epsilon(delta=DELTA), rel=1e-12)
    assert ledger.epsilon() > one_round > 0
    assert ledger.total_steps == 2 * STEPS
    assert [entry.round_id for entry in ledger.rounds] == [1, 2]
    assert ledger.rounds[0].epsilon == pytest.approx(one_round, rel=1e-12)
    assert ledger.rounds[1].epsilon == pytest.approx(ledger.epsilon(), rel=1e-12)


def test_reopen_gives_identical_epsilon(path: Path) -> None:
    ledger = _open(path)
    _record(ledger, 1)
    ledger.record(round_id=2, noise_multiplier=0.9, sample_rate=0.02, num_steps=50)
    reopened = _open(path)
    assert reopened.epsilon() == ledger.epsilon()
    assert reopened.rounds == ledger.rounds
    assert reopened.to_summary() == ledger.to_summary()


def test_file_is_strict_json(path: Path) -> None:
    ledger = _open(path)
    _record(ledger, 1)

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    document = json.loads(path.read_text(), parse_constant=reject)
    assert document["rounds"][0]["num_steps"] == STEPS and document["delta"] == DELTA


def test_would_exceed(path: Path) -> None:
    eps_one_round = epsilon_from_history([(SIGMA, RATE, STEPS)], delta=DELTA)
    tight = _open(path, target_epsilon=eps_one_round * 0.99)
    assert tight.would_exceed(noise_multiplier=SIGMA, sample_rate=RATE, num_steps=STEPS)
    loose = _open(path, target_epsilon=eps_one_round * 1.01)
    assert not loose.would_exceed(noise_multiplier=SIGMA, sample_rate=RATE, num_steps=STEPS)
    _record(loose, 1)
    assert loose.would_exceed(noise_multiplier=SIGMA, sample_rate=RATE, num_steps=STEPS)
    unlimited = _open(path, target_epsilon=None)
    assert not unlimited.would_exceed(noise_multiplier=0.1, sample_rate=1.0, num_steps=10**6)


def test_target_epsilon_change_is_persisted(path: Path) -> None:
    _open(path, target_epsilon=8.0)
    _open(path, target_epsilon=4.0)
    assert json.loads(path.read_text())["target_epsilon"] == 4.0


def test_crash_during_replace_keeps_old_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = _open(path)
    _record(ledger, 1)
    before_bytes, before_eps = path.read_bytes(), ledger.epsilon()

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash during os.replace")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        _record(ledger, 2)
    monkeypatch.undo()
    assert path.read_bytes() == before_bytes
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # temp file cleaned up
    assert ledger.epsilon() == before_eps and len(ledger.rounds) == 1  # memory unchanged too
    assert _open(path).epsilon() == before_eps
    assert _record(ledger, 2)  # a retry after the failure succeeds
    assert _open(path).total_steps == 2 * STEPS


def test_stray_temp_file_from_killed_writer_is_ignored(path: Path) -> None:
    ledger = _open(path)
    _record(ledger, 1)
    (path.parent / f".{path.name}.abc123.tmp").write_text('{"torn": ')
    assert _open(path).epsilon() == ledger.epsilon()


@pytest.mark.parametrize("content", ['{"format": "fedinterest-privacy-ledger", "vers', "[1, 2]", "", "\udcff"])
def test_corrupt_file_error_names_path(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(LedgerCorruptError) as err:
        _open(path)
    assert str(path) in str(err.value)


def _tamper(path: Path, edit) -> None:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def test_rows_inconsistent_with_accountant_are_rejected(path: Path) -> None:
    _record(_open(path), 1)
    _tamper(path, lambda doc: doc["rounds"][0].update(num_steps=1))
    with pytest.raises(LedgerCorruptError, match="disagree") as err:
        _open(path)
    assert str(path) in str(err.value)


def test_malformed_round_row_is_corrupt(path: Path) -> None:
    _record(_open(path), 1)
    _tamper(path, lambda doc: doc["rounds"][0].pop("sample_rate"))
    with pytest.raises(LedgerCorruptError, match="'rounds'"):
        _open(path)


@pytest.mark.parametrize(
    ("field", "overrides"),
    [("delta", {"delta": 1e-6}), ("unit", {"unit": "user"})],
)
def test_config_mismatch_names_field_and_path(path: Path, field: str, overrides: dict) -> None:
    _open(path)
    with pytest.raises(LedgerMismatchError) as err:
        _open(path, **overrides)
    assert f"'{field}'" in str(err.value) and str(path) in str(err.value)


def test_accountant_mismatch_names_field(path: Path) -> None:
    _open(path)
    _tamper(path, lambda doc: doc.update(accountant="prv"))
    with pytest.raises(LedgerMismatchError, match="'accountant'"):
        _open(path)
    with pytest.raises(ValueError, match="valid accountants"):
        _open(path, accountant="prv")


def test_duplicate_round_semantics(path: Path) -> None:
    ledger = _open(path)
    assert _record(ledger, 7)
    snapshot = path.read_bytes()
    assert _record(ledger, 7) is False  # identical replay: no-op
    assert path.read_bytes() == snapshot and ledger.total_steps == STEPS
    with pytest.raises(DuplicateRoundError, match="round 7"):
        _record(ledger, 7, steps=STEPS + 1)
    assert path.read_bytes() == snapshot and len(ledger.rounds) == 1
    assert _open(path).record(round_id=7, noise_multiplier=SIGMA, sample_rate=RATE, num_steps=STEPS) is False


def test_noiseless_round_is_infinite_and_persisted(path: Path) -> None:
    ledger = _open(path, target_epsilon=None)
    ledger.record(round_id=1, noise_multiplier=0.0, sample_rate=0.1, num_steps=1)
    assert ledger.epsilon() == math.inf
    assert json.loads(path.read_text())["rounds"][0]["epsilon"] is None
    assert _open(path, target_epsilon=None).rounds[0].epsilon == math.inf


def test_summary(path: Path) -> None:
    ledger = _open(path, target_epsilon=5.0)
    _record(ledger, 1)
    ledger.record(round_id=2, noise_multiplier=1.3, sample_rate=0.02, num_steps=30)
    assert ledger.to_summary() == {
        "epsilon": ledger.epsilon(),
        "delta": DELTA,
        "unit": "example",
        "accountant": "rdp",
        "steps": STEPS + 30,
        "rounds": 2,
        "noise_multiplier": 1.3,
        "sample_rate": 0.02,
        "target_epsilon": 5.0,
    }


def test_bad_arguments(path: Path) -> None:
    with pytest.raises(ValueError):
        _open(path, delta=0.0)
    with pytest.raises(ValueError):
        _open(path, unit="")
    with pytest.raises(ValueError):
        _open(path, target_epsilon=-1.0)
    ledger = _open(path)
    with pytest.raises(ValueError):
        ledger.record(round_id=-1, noise_multiplier=1.0, sample_rate=0.1, num_steps=1)
    with pytest.raises(TypeError):
        ledger.record(1, 1.0, 0.1, 1)  # type: ignore[misc]
