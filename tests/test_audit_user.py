"""`fedinterest audit` on user-level runs (privacy.mode = user | example+user): PASS, and every way it must FAIL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from fed_helpers import copy_run, server_key_path, synthetic_csv, tiny_config
from server.round_log import RoundLog
from shared_models.crypto import load_private_key
from shared_models.privacy import epsilon_from_history
from simulations.audit.run import audit_run
from simulations.audit.crosscheck import pld_epsilon, rdp_epsilon
from simulations.audit.empirical_user import empirical_user_audit
from simulations.audit.user import initial_aggregate_sha
from simulations.cli.audit import audit_app
from simulations.simulate import simulate

Q, Z, CLIP, ROUNDS, MTN = 10 / 30, 1.0, 0.5, 2, 2
USER_EPS = 4.47372  # RDP: Poisson q = 1/3, z = 1, 2 rounds, delta 1e-5


def _run(root: Path, mode: str) -> Path:
    csv = synthetic_csv(root / "s.csv", users=30)
    cfg = tiny_config(csv, privacy={"mode": mode, "user-noise-multiplier": Z, "user-clip": CLIP,
                                    "user-target-epsilon": 50, "reproducible-noise": False},
                      federated={"clients-per-round": 10, "num-server-rounds": ROUNDS, "min-train-nodes": MTN})
    secret = root / "run" / "server" / "sampler_secret.bin"  # a fixed sampler secret: the same devices every run
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(bytes(range(32)))
    simulate(cfg, root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("user"), "user")


@pytest.fixture(scope="module")
def both_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("both"), "example+user")


@pytest.fixture
def run(user_run: Path, tmp_path: Path) -> Path:
    return copy_run(user_run, tmp_path / "run")


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _resign_log(run: Path, edit: Callable[[dict[str, Any]], None], source: bytes | None = None) -> None:
    """Rewrite the run's round log (or ``source``) with ``edit`` applied to every record, signed by the
    server's own key."""
    path = run / "round_log.jsonl"
    records = [json.loads(raw) for raw in (source or path.read_bytes()).splitlines() if raw.strip()]
    key = load_private_key(server_key_path(run), Ed25519PrivateKey)
    path.unlink()
    log = RoundLog(path, key)
    for rec in records:
        rec = {k: v for k, v in rec.items() if k not in ("prev_hash", "signature")}
        edit(rec)
        log.append(rec)


def test_user_run_passes_and_dp_accounting_agrees(run: Path) -> None:
    audit = audit_run(run, verify_log=True)
    assert audit["verdict"] == "PASS", audit["reasons"]
    c = audit["claimed"]
    assert (c["unit"], c["mode"], c["noise_multiplier"], c["clip"], c["steps"], c["min_train_nodes"]) == \
        ("user", "user", Z, CLIP, ROUNDS, MTN)
    assert c["sample_rate"] == pytest.approx(Q) and c["epsilon"] == pytest.approx(USER_EPS, abs=1e-4)
    assert "Poisson-subsampled Gaussian" in c["mechanism"] and c["example"] is None
    history = ((Z, Q, ROUNDS),)
    xc = audit["cross_check"]
    assert xc["epsilon"] == pytest.approx(c["epsilon"], rel=1e-4)
    assert xc["rdp_library_orders_epsilon"] == pytest.approx(rdp_epsilon(history, delta=1e-5))
    assert xc["pld_epsilon"] == pytest.approx(pld_epsilon(history, delta=1e-5)) and xc["pld_epsilon"] < c["epsilon"]
    assert audit["user_ledger"]["epsilon"] == pytest.approx(c["epsilon"])
    assert audit["user_ledger"]["round_ids"] == [1, 2]
    assert audit["log"]["verified"] is True and audit["log"]["rounds"] == ROUNDS
    assert audit["user_log"] == {**audit["user_log"], "checked": True, "noise_mismatches": 0, "released_below_min": []}
    assert audit["budget_violations"] == 0 and audit["devices"]["count"] == 0
    md = (run / "audit.md").read_text()
    assert "**Verdict: PASS**" in md and "unit of one whole device" in md and "min_train_nodes = 2" in md
    assert CliRunner().invoke(audit_app, [str(run), "--verify-log"]).exit_code == 0


def test_server_ledger_tampering_fails(run: Path) -> None:
    path = run / "server" / "user_ledger.json"
    lower = epsilon_from_history([(2.0, Q, 1)] * ROUNDS, delta=1e-5)

    def quieter(doc: dict[str, Any]) -> None:  # a self-consistent edit: z = 2 on every row, lower epsilon
        doc["accountant_state"]["history"] = [[2.0, Q, ROUNDS]]
        for row in doc["rounds"]:
            row["noise_multiplier"] = 2.0
        doc["rounds"][-1]["epsilon"] = lower
        doc["rounds"][0]["epsilon"] = epsilon_from_history([(2.0, Q, 1)], delta=1e-5)

    _edit_json(path, quieter)
    reasons = audit_run(run)["reasons"]
    assert lower < USER_EPS / 2
    assert any("row 1 records (z=2" in r for r in reasons)
    assert any(f"server's ledger gives {lower:.4g}" in r for r in reasons)
    _edit_json(path, lambda doc: doc["rounds"][-1].update(epsilon=1.0))  # doctored epsilon only
    assert any("(edited?)" in r for r in audit_run(run)["reasons"])
    path.unlink()
    audit = audit_run(run)
    assert audit["verdict"] == "FAIL" and any("user-level ledger is missing" in r for r in audit["reasons"])


def test_spending_past_the_user_target_is_a_budget_violation(run: Path) -> None:
    eps = epsilon_from_history([(0.2, Q, ROUNDS)], delta=1e-5)
    assert eps > 50

    def noisier(doc: dict[str, Any]) -> None:
        doc["accountant_state"]["history"] = [[0.2, Q, ROUNDS]]
        for i, row in enumerate(doc["rounds"], start=1):
            row.update(noise_multiplier=0.2, epsilon=epsilon_from_history([(0.2, Q, i)], delta=1e-5))

    _edit_json(run / "server" / "user_ledger.json", noisier)
    audit = audit_run(run)
    assert audit["verdict"] == "FAIL" and audit["budget_violations"] == 1
    assert any(f"user-level epsilon {eps:.4g} exceeds the target 50" in r for r in audit["reasons"])
    assert any("claims user-level epsilon 4.474 but the server's ledger spends" in r for r in audit["reasons"])


def test_metrics_claim_tampering_fails(run: Path) -> None:
    _edit_json(run / "metrics.json", lambda m: m["privacy"].update(epsilon=2.0))
    audit = audit_run(run)
    assert audit["verdict"] == "FAIL" and audit["cross_check"]["epsilon"] == pytest.approx(USER_EPS, abs=1e-3)
    assert any("claims user-level epsilon 2 but the server's ledger spends 4.474" in r for r in audit["reasons"])
    assert any("claimed user-level epsilon 2 differs from the dp_accounting" in r and "RDP epsilon 4.474 by 55.3%"
               in r for r in audit["reasons"])
    assert any("claimed user-level epsilon 2 is below the dp_accounting" in r and "PLD upper bound 3.926" in r
               for r in audit["reasons"])
    _edit_json(run / "metrics.json", lambda m: m["privacy"].update(epsilon=USER_EPS, steps=1, sample_rate=0.1))
    reasons = audit_run(run)["reasons"]
    assert any("2 rounds recorded but metrics.json claims 1 steps" in r for r in reasons)
    assert any("row 1 records (z=1, q=0.333333" in r for r in reasons)


def test_round_log_noise_record_must_match_the_claim(run: Path) -> None:
    path = run / "round_log.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"user_noise_multiplier":1.0', b'"user_noise_multiplier":0.5', 1))
    audit = audit_run(run)  # edited without the key: the signature breaks
    assert audit["verdict"] == "FAIL" and audit["log"]["verified"] is False
    assert any("line 1" in r and "signature" in r for r in audit["reasons"])
    _resign_log(run, lambda rec: rec["noise"].update(user_noise_multiplier=0.5, min_train_nodes=1))
    audit = audit_run(run)  # signed by the server, yet it says the devices were told less noise
    assert audit["log"]["verified"] is True and audit["user_log"]["noise_mismatches"] == ROUNDS
    assert audit["verdict"] == "FAIL"
    assert any("round 1: noise record differs" in r and "user_noise_multiplier=0.5 (claim 1.0)" in r
               and "min_train_nodes=1 (claim 2)" in r for r in audit["reasons"])


def test_no_release_from_fewer_than_min_train_nodes(run: Path) -> None:
    original = (run / "round_log.jsonl").read_bytes()
    lines = [json.loads(raw) for raw in original.splitlines()]
    first_sha, second_sha = lines[0]["aggregate_sha256"], lines[1]["aggregate_sha256"]

    def few_in_round_2(rec: dict[str, Any], keep: bool) -> None:
        if rec["round"] == 2:  # keep: the server kept the previous model, nothing released
            rec.update(valid=1, aggregate_sha256=first_sha if keep else second_sha)

    _resign_log(run, lambda rec: few_in_round_2(rec, keep=True), original)
    assert audit_run(run)["verdict"] == "PASS"
    _resign_log(run, lambda rec: few_in_round_2(rec, keep=False), original)
    audit = audit_run(run)
    assert audit["verdict"] == "FAIL" and audit["user_log"]["released_below_min"] == [2]
    assert any("round 2: a new aggregate was released from 1 valid updates, fewer than min_train_nodes=2" in r
               for r in audit["reasons"])
    config = json.loads((run / "config.json").read_text())
    initial = initial_aggregate_sha(config)  # plaintext: the initial model the server broadcast in round 1
    assert isinstance(initial, str) and len(initial) == 64 and initial != first_sha

    def few_in_round_1(rec: dict[str, Any]) -> None:
        if rec["round"] == 1:
            rec.update(valid=1, aggregate_sha256=initial)

    _resign_log(run, few_in_round_1, original)
    audit = audit_run(run)
    assert audit["verdict"] == "PASS" and audit["user_log"]["first_round_checked"] is True
    _resign_log(run, lambda rec: rec.update(valid=1, aggregate_sha256=first_sha) if rec["round"] == 1 else None,
                original)
    assert audit_run(run)["user_log"]["released_below_min"] == [1]


def test_empirical_canary_clients_stay_below_the_claim(run: Path) -> None:
    audit = audit_run(run, empirical=True)
    emp = audit["empirical"]
    assert audit["verdict"] == "PASS", audit["reasons"]
    assert (emp["unit"], emp["design"], emp["canaries"], emp["guesses"], emp["dimension"]) == \
        ("user", "worst-case", 1000, 500, 50_000)
    assert emp["max_clipped_norm"] == pytest.approx(CLIP)  # every canary (norm 2 x clip) was clipped
    assert emp["mechanism_epsilon"] == pytest.approx(epsilon_from_history([(Z, 1.0, 1)], delta=1e-5))
    assert 0.0 < emp["epsilon_lower"] < emp["mechanism_epsilon"] and emp["epsilon_lower"] < 2.0
    assert emp["wall_s"] < 60
    assert "canary-client audit" in (run / "audit.md").read_text()


def test_empirical_bound_is_far_higher_without_noise(monkeypatch: pytest.MonkeyPatch, run: Path) -> None:
    tiny = empirical_user_audit(noise_multiplier=0.01, clip=CLIP, min_train_nodes=MTN, delta=1e-5, confidence=0.95)
    assert tiny.correct == tiny.guesses == 500 and tiny.epsilon_lower > 4.5  # z = 1 gives < 2 (test above)
    import simulations.audit.empirical_user as emp
    from shared_models.privacy.user_level import privatize_delta

    def noiseless(delta, *, clip, noise_multiplier, min_contributors, rng):  # claims z, adds nothing
        return privatize_delta(delta, clip=clip, noise_multiplier=0.0, min_contributors=min_contributors, rng=rng)

    monkeypatch.setattr(emp, "privatize_delta", noiseless)
    audit = audit_run(run, empirical=True)
    block = audit["empirical"]
    assert block["epsilon_lower"] > block["mechanism_epsilon"] == pytest.approx(4.7527, abs=1e-3)
    assert audit["verdict"] == "FAIL" and any("empirical lower bound" in r for r in audit["reasons"])


def test_example_plus_user_also_checks_the_device_ledgers(both_run: Path, tmp_path: Path) -> None:
    run = copy_run(both_run, tmp_path / "run")
    audit = audit_run(run, verify_log=True)
    assert audit["verdict"] == "PASS", audit["reasons"]
    c, xc = audit["claimed"], audit["cross_check"]
    assert c["unit"] == "user" and c["epsilon"] == pytest.approx(USER_EPS, abs=1e-4)
    assert c["example"]["unit"] == "window" and c["example"]["epsilon"] == pytest.approx(7.08786, abs=1e-4)
    assert xc["example"]["epsilon"] == pytest.approx(c["example"]["epsilon"], rel=1e-3)
    metrics = json.loads((run / "metrics.json").read_text())["privacy"]["example"]
    assert audit["devices"]["count"] == audit["devices"]["trained"] == metrics["devices_trained"] > 0
    assert "Per-device window-level epsilon" in (run / "audit.md").read_text()
    path = sorted((run / "devices").glob("*/ledger.json"))[0]
    _edit_json(path, lambda doc: doc["rounds"][0].update(epsilon=0.1))
    reasons = audit_run(run)["reasons"]
    assert any(r.startswith("window-level (device ledgers):") and "(edited?)" in r and str(path) in r
               for r in reasons)
    assert not any("user-level" in r for r in reasons)  # the server's claim itself is intact
    np.testing.assert_allclose(audit["user_ledger"]["history"], [[Z, Q, 1]] * ROUNDS)


def test_he_run_passes_and_round_one_below_min_must_release_nothing(tmp_path: Path) -> None:
    csv = synthetic_csv(tmp_path / "s.csv", users=30)
    cfg = tiny_config(csv, privacy={"mode": "user", "user-noise-multiplier": Z, "user-clip": CLIP,
                                    "user-target-epsilon": 50, "reproducible-noise": False},
                      federated={"clients-per-round": 10, "num-server-rounds": ROUNDS, "min-train-nodes": MTN},
                      he={"enabled": True, "max-summands": 128, "max-weight": 1, "clip-range": 4.0})
    simulate(cfg, tmp_path / "run", progress=False, resume=False)
    run = tmp_path / "run"
    audit = audit_run(run, verify_log=True)
    assert audit["verdict"] == "PASS", audit["reasons"]
    assert audit["claimed"]["epsilon"] == pytest.approx(USER_EPS, abs=1e-4) and audit["log"]["rounds"] == ROUNDS
    original = (run / "round_log.jsonl").read_bytes()
    _resign_log(run, lambda rec: rec.update(valid=1, aggregate_sha256=None) if rec["round"] == 1 else None, original)
    assert audit_run(run)["verdict"] == "PASS"  # under HE there is no sum before round 1: None = nothing released
    _resign_log(run, lambda rec: rec.update(valid=1) if rec["round"] == 1 else None, original)
    assert audit_run(run)["user_log"]["released_below_min"] == [1]
