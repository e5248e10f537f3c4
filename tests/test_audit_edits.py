"""An operator who edits a finished run directory fails the audit, and the audit names what it found: the
device ledgers are checked against the signed round log's per-round counts, config.json against the logged
config hash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shared_models.privacy import PrivacyLedger
from simulations.audit.run import audit_run
from tests.fed_helpers import copy_run, server_key_path
from tests.test_audit_run import _run


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("dp-edits"), "example")


@pytest.fixture
def run(dp_run: Path, tmp_path: Path) -> Path:
    return copy_run(dp_run, tmp_path / "run")


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _set_metrics(run: Path, doc: dict) -> None:
    (run / "metrics.json").write_text(json.dumps(doc))


def _ledgers(run: Path) -> list[Path]:
    return sorted((run / "devices").glob("*/ledger.json"))


def _fails_with(run: Path, words: str) -> list[str]:
    audit = audit_run(run)
    assert audit["verdict"] == "FAIL" and any(words in r for r in audit["reasons"]), audit["reasons"]
    return audit["reasons"]


def test_the_untouched_run_passes_with_counts_that_agree(run):
    audit = audit_run(run)
    assert audit["verdict"] == "PASS", audit["reasons"]
    assert audit["consistency"]["config_hash_matches"] is True
    lines = [json.loads(x) for x in (run / "round_log.jsonl").read_text().splitlines()]
    charged = audit["consistency"]["ledger_rounds"]
    assert [line["valid"] <= charged[str(line["round"])] <= line["sampled"] for line in lines] == [True, True]
    assert sum(line["valid"] for line in lines) >= 8  # both rounds had real participants


def test_a_deleted_ledger_with_the_count_adjusted_fails(run):
    shutil.rmtree(_ledgers(run)[0].parent)
    doc = _metrics(run)
    doc["privacy"]["devices_trained"] -= 1
    _set_metrics(run, doc)
    _fails_with(run, "ledgers are missing rounds the signed round log counts")


def test_the_max_epsilon_device_deleted_and_the_claim_lowered_fails(run):
    worst = max(_ledgers(run), key=lambda p: json.loads(p.read_text())["rounds"][-1]["epsilon"])
    shutil.rmtree(worst.parent)
    doc = _metrics(run)
    doc["privacy"]["devices_trained"] -= 1
    doc["privacy"]["epsilon"] = max(json.loads(p.read_text())["rounds"][-1]["epsilon"] for p in _ledgers(run))
    _set_metrics(run, doc)
    _fails_with(run, "ledgers are missing rounds")


def test_a_ledger_rebuilt_without_its_last_round_fails(run, tmp_path):
    path = next(p for p in _ledgers(run) if json.loads(p.read_text())["rounds"][-1]["round"] == 2)
    doc = json.loads(path.read_text())
    rebuilt = PrivacyLedger.open(tmp_path / "l.json", accountant=doc["accountant"], delta=doc["delta"],
                                 unit=doc["unit"], target_epsilon=doc.get("target_epsilon"))
    for row in doc["rounds"][:-1]:
        rebuilt.record(round_id=row["round"], noise_multiplier=row["noise_multiplier"],
                       sample_rate=row["sample_rate"], num_steps=row["num_steps"])
    shutil.copy(tmp_path / "l.json", path)
    doc = _metrics(run)
    doc["privacy"]["devices_trained"] -= 1  # the count adjusted too
    _set_metrics(run, doc)
    _fails_with(run, "round 2: ")


def test_the_log_with_its_last_line_dropped_fails(run):
    log = run / "round_log.jsonl"
    log.write_bytes(log.read_bytes().split(b"\n")[0] + b"\n")
    doc = _metrics(run)
    doc["rounds"] = 1  # the count adjusted too: the log itself then verifies
    _set_metrics(run, doc)
    _fails_with(run, "that the signed round log does not hold")


def test_a_changed_noise_multiplier_in_config_json_fails(run):
    cfg = json.loads((run / "config.json").read_text())
    cfg["privacy"]["noise_multiplier"] = 3.0
    (run / "config.json").write_text(json.dumps(cfg, indent=2))
    _fails_with(run, "config.json does not hash to the config_hash the signed round log records")


def _resign_with_a_key_in_the_run_dir(run: Path) -> Path:
    """What whoever can edit the run directory can do: make a key pair, leave it in the run directory where
    runs used to keep theirs, and re-sign the (edited) log with it. Returns the planted public key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from server.round_log import RoundLog
    from shared_models.crypto import save_private_key, save_public_key

    lines = [json.loads(x) for x in (run / "round_log.jsonl").read_text().splitlines()]
    key = Ed25519PrivateKey.generate()
    server = run / "keys" / "server"
    server.mkdir(parents=True)
    save_private_key(key, server / "signing_ed25519.pem")
    save_public_key(key.public_key(), server / "signing_ed25519.pub.pem")
    (run / "round_log.jsonl").unlink()
    log = RoundLog(run / "round_log.jsonl", key)
    for line in lines:
        log.append({k: v for k, v in line.items() if k not in ("prev_hash", "signature")} | {"rejected": []})
    return server / "signing_ed25519.pub.pem"


def test_the_run_directory_holds_no_private_key_its_keys_directory_does(run):
    private = [p for p in run.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()[:4096]]
    assert private == []
    assert b"PRIVATE KEY" in server_key_path(run).read_bytes()
    assert not server_key_path(run).resolve().is_relative_to(run.resolve())


def test_a_log_re_signed_with_a_key_found_in_the_run_directory_fails(run):
    from typer.testing import CliRunner

    from simulations.cli.main import log_key_fingerprint
    from simulations.cli.audit import audit_app

    pinned = log_key_fingerprint(run, json.loads((run / "config.json").read_text()))
    assert len(pinned) == 64
    assert audit_run(run, key_fingerprint=pinned)["verdict"] == "PASS"
    planted = _resign_with_a_key_in_the_run_dir(run)
    default = audit_run(run)  # the key beside the run directory, not the planted one
    assert default["log"]["key_inside_run_dir"] is False
    _fails_with(run, "signature does not verify under the server key")
    inside = audit_run(run, verify_key=planted)  # pointed at the planted key: refused unless pinned
    assert inside["verdict"] == "FAIL" and inside["log"]["key_inside_run_dir"] is True
    assert any("inside the run directory" in r for r in inside["reasons"])
    pinned_inside = audit_run(run, verify_key=planted, key_fingerprint=pinned)
    assert pinned_inside["verdict"] == "FAIL" and any("not the pinned" in r for r in pinned_inside["reasons"])
    res = CliRunner().invoke(audit_app, [str(run), "--verify-key", str(planted), "--key-fingerprint", pinned])
    assert res.exit_code == 1 and "not the pinned" in res.output
    res = CliRunner().invoke(audit_app, [str(run)])
    assert res.exit_code == 1 and "signature does not verify" in res.output


def test_the_audit_never_takes_the_key_location_from_the_run_s_config(run):
    planted = _resign_with_a_key_in_the_run_dir(run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["he"]["keys_dir"] = str(planted.parent.parent)  # the edited config points at the planted key
    (run / "config.json").write_text(json.dumps(cfg, indent=2))
    _fails_with(run, "signature does not verify under the server key")


def test_the_auditor_names_the_keys_directory(run, tmp_path):
    moved = tmp_path / "elsewhere"
    server_key_path(run).parent.parent.rename(moved)
    _fails_with(run, "--keys-dir")
    assert audit_run(run, keys_dir=moved)["verdict"] == "PASS"
