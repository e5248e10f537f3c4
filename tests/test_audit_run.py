"""`fedinterest audit` on real (tiny, inline) run directories: PASS, and every way it must FAIL."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from server.round_log import RoundLog, aggregate_sha256, code_version, config_hash
from shared_models.config import build_config
from shared_models.crypto import load_private_key
from shared_models.train.dp_training import train_local
from shared_models.privacy import epsilon_from_history
from simulations.audit.run import audit_run
from simulations.cli.audit import audit_app
from shared_models.datasets import make_synthetic, write_csv
from simulations.simulate import simulate
from tests.fed_helpers import copy_run, server_key_path

ROUNDS = 2


def _run(root: Path, privacy_mode: str) -> Path:
    csv = write_csv(make_synthetic(num_users=12, num_items=30, seed=0), root / "s.csv")
    cfg = build_config(None, [
        f"data.dataset={csv}", "data.max-users=0", "model.max-len=12", "model.hidden=16", "model.inner=32",
        "federated.backend=inline", f"federated.num-server-rounds={ROUNDS}", "federated.clients-per-round=6",
        "federated.local-epochs=2", "federated.lr=0.003", "federated.eval-every=0", f"privacy.mode={privacy_mode}",
        "privacy.target-epsilon=8.0"])
    simulate(cfg, root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("dp"), "example")


@pytest.fixture(scope="module")
def nodp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("nodp"), "none")


@pytest.fixture
def dp_copy(dp_run: Path, tmp_path: Path) -> Path:
    return copy_run(dp_run, tmp_path / "run")


def _server_key(run: Path) -> Ed25519PrivateKey:
    return load_private_key(server_key_path(run), Ed25519PrivateKey)


def _write_log(run: Path, key: Ed25519PrivateKey) -> Path:
    """Replace the run's own log with a hand-written one (so tests can tamper with known content)."""
    own = run / "round_log.jsonl"  # the counts stay the run's own (the audit checks them against the ledgers)
    counts = {r: (6, 6) for r in range(1, ROUNDS + 1)}
    if own.exists():
        counts.update({(d := json.loads(x))["round"]: (d["sampled"], d["valid"]) for x in own.read_text().splitlines()})
    own.unlink(missing_ok=True)
    log = RoundLog(run / "round_log.jsonl", key)
    cfg = json.loads((run / "config.json").read_text())
    for r in range(1, ROUNDS + 1):
        log.append({"round": r, "sampled": counts[r][0], "valid": counts[r][1], "rejected": [],
                    "aggregate_sha256": aggregate_sha256((run / "global_sum.ckks").read_bytes()),
                    "noise": {"noise_multiplier": 1.0, "max_grad_norm": 1.0}, "config_hash": config_hash(cfg),
                    "code_version": code_version()})
    return log.path


def test_dp_run_passes_and_writes_the_contract(dp_copy: Path) -> None:
    audit = audit_run(dp_copy)
    assert audit["verdict"] == "PASS", audit["reasons"]
    metrics = json.loads((dp_copy / "metrics.json").read_text())["privacy"]
    assert audit["claimed"] == {**audit["claimed"], "epsilon": metrics["epsilon"], "delta": 1e-5, "unit": "window"}
    assert audit["claimed"]["epsilon"] == pytest.approx(7.08786, abs=1e-4)  # sigma 1, q 1, 2 steps
    assert audit["cross_check"]["epsilon"] == pytest.approx(audit["claimed"]["epsilon"], rel=1e-3)
    assert audit["cross_check"]["pld_epsilon"] < audit["claimed"]["epsilon"]
    assert audit["log"] == {**audit["log"], "verified": True, "rounds": ROUNDS}  # the server's own signed log
    assert audit["empirical"] is None and audit["budget_violations"] == 0
    on_disk = json.loads((dp_copy / "audit.json").read_text())
    assert on_disk["verdict"] == "PASS" and set(on_disk) >= {"reasons", "claimed", "cross_check", "empirical", "log"}
    md = (dp_copy / "audit.md").read_text()
    assert "**Verdict: PASS**" in md and "unit of one training window (added or removed)" in md and "threat-model.md" in md
    link = md.split("[threat model](", 1)[1].split(")", 1)[0]  # relative to the run dir, or a file:// URI
    target = Path(link[len("file://"):]) if link.startswith("file://") else (dp_copy / link).resolve()
    assert target.is_file(), f"audit.md links to a missing threat model: {link}"


def test_no_dp_run_fails(nodp_run: Path) -> None:
    audit = audit_run(nodp_run)
    assert audit["verdict"] == "FAIL" and audit["claimed"]["epsilon"] is None
    assert any("privacy.mode is 'none'" in r for r in audit["reasons"])
    assert "No differential-privacy guarantee" in (nodp_run / "audit.md").read_text()


def test_ledger_edited_past_the_budget_fails(dp_copy: Path) -> None:
    path = sorted((dp_copy / "devices").glob("*/ledger.json"))[0]
    doc = json.loads(path.read_text())
    doc["accountant_state"]["history"] = [[0.5, 1.0, 2]]  # a consistent edit: noise halved
    doc["rounds"][0].update(noise_multiplier=0.5, epsilon=epsilon_from_history([(0.5, 1.0, 2)], delta=1e-5))
    path.write_text(json.dumps(doc))
    audit = audit_run(dp_copy)
    assert audit["verdict"] == "FAIL" and audit["budget_violations"] == 1
    assert any("exceeds the target 8" in r and path.parent.name in r for r in audit["reasons"])
    assert any("metrics.json claims epsilon" in r for r in audit["reasons"])


def test_ledger_with_a_doctored_epsilon_or_broken_json_fails(dp_copy: Path) -> None:
    first, second = sorted((dp_copy / "devices").glob("*/ledger.json"))[:2]
    doc = json.loads(first.read_text())
    doc["rounds"][0]["epsilon"] = 1.0
    first.write_text(json.dumps(doc))
    second.write_text("{not json")
    reasons = audit_run(dp_copy)["reasons"]
    assert any("(edited?)" in r and str(first) in r for r in reasons)
    assert any("unreadable ledger" in r and str(second) in r for r in reasons)


def test_signed_log_verifies_then_tampering_fails(dp_copy: Path) -> None:
    path = _write_log(dp_copy, _server_key(dp_copy))
    audit = audit_run(dp_copy, verify_log=True)
    assert audit["verdict"] == "PASS" and audit["log"]["verified"] is True and audit["log"]["rounds"] == ROUNDS
    lines = path.read_bytes().split(b"\n")
    assert b'"valid":6' in lines[0]
    path.write_bytes(b"\n".join([lines[0].replace(b'"valid":6', b'"valid":5'), *lines[1:]]))
    audit = audit_run(dp_copy)  # an existing log is always checked
    assert audit["verdict"] == "FAIL" and audit["log"]["verified"] is False
    assert any("line 1" in r and "signature" in r for r in audit["reasons"])


def test_missing_or_truncated_log(dp_copy: Path) -> None:
    (dp_copy / "round_log.jsonl").unlink()
    assert "does not exist" in audit_run(dp_copy, verify_log=True)["reasons"][0]
    path = _write_log(dp_copy, _server_key(dp_copy))
    path.write_bytes(path.read_bytes().split(b"\n")[0] + b"\n")  # drop the last round
    assert any("expected 2" in r for r in audit_run(dp_copy)["reasons"])


def test_cli_exit_codes(dp_copy: Path, nodp_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(audit_app, [str(dp_copy)]).exit_code == 0
    (dp_copy / "round_log.jsonl").unlink()
    result = runner.invoke(audit_app, [str(dp_copy), "--verify-log"])
    assert result.exit_code == 1 and "does not exist" in result.output
    assert runner.invoke(audit_app, [str(nodp_run)]).exit_code == 1  # no DP
    assert runner.invoke(audit_app, [str(tmp_path)]).exit_code == 2  # not a run directory


def test_empirical_audit_flags_no_dp_and_stays_below_the_dp_claim(dp_copy: Path, nodp_run: Path) -> None:
    dp = audit_run(dp_copy, empirical=True)
    emp = dp["empirical"]
    assert dp["verdict"] == "PASS", dp["reasons"]
    assert emp["confidence"] == 0.95 and emp["canaries"] == 200 and emp["guesses"] == 100
    assert emp["epsilon_lower"] < 1.0 < emp["mechanism_epsilon"]
    nodp = audit_run(nodp_run, empirical=True)["empirical"]
    assert nodp["epsilon_lower"] > 2.5 and nodp["mechanism_epsilon"] is None  # no noise: infinite
    assert nodp["correct"] >= 90
    # the Gaussian-fit estimate is not capped by the canary count: far above the DP run's claim without noise
    assert nodp["epsilon_estimate"] > 2 * dp["claimed"]["epsilon"] > 0
    assert emp["epsilon_estimate"] < dp["claimed"]["epsilon"]


def test_empirical_audit_catches_dp_sgd_that_adds_no_noise(dp_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 'DP' trainer that reports sigma 3 but trains without clipping or noise: the bound exceeds its claim."""
    import simulations.audit.empirical as emp

    def noiseless(model, windows, *, noise_multiplier, max_grad_norm, **kw):
        result = train_local(model, windows, **kw)
        q = min(1.0, kw["batch_size"] / len(windows))
        return dataclasses.replace(result, noise_multiplier=noise_multiplier, sample_rate=q,
                                   max_grad_norm=max_grad_norm)

    cfg = json.loads((dp_copy / "config.json").read_text())
    cfg["privacy"]["noise_multiplier"] = 3.0
    (dp_copy / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(emp, "train_local_dp", noiseless)
    audit = audit_run(dp_copy, empirical=True)
    block = audit["empirical"]
    assert block["epsilon_lower"] > 2.5 > block["mechanism_epsilon"]
    assert audit["verdict"] == "FAIL" and any("empirical lower bound" in r for r in audit["reasons"])
