"""Real deployment on 127.0.0.1: a TLS SuperLink with SuperNode authentication, three authenticated
SuperNodes each serving one device state directory, `flwr run` with DP-SGD + server-blind CKKS aggregation
for two rounds; plus an unregistered SuperNode and a plaintext one that must both be kept out.

Every process is started in its own session and killed by process group in ``finally``.
Run with: ``pytest -m deploy tests/test_deploy_e2e.py``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from client.recommend import Recommender
from client.runtime import DeviceState, init_device
from shared_models.crypto import init_keys
from shared_models.crypto.tls import init_deploy_keys
from shared_models.config import config_from_run_config
from tests.fed_helpers import TINY_MODEL, synthetic_csv

pytestmark = pytest.mark.deploy
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEVICES = ("u0", "u1", "u2")
CONN = "e2e"
RUN_TIMEOUT_S = 420  # every message starts a flwr-clientapp process (~4 s on 2 busy cores); 2 masked rounds


class Processes:
    """Background processes in their own sessions; ``stop_all`` kills each process group."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env, self.procs = logs, env, []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
                                env={**self.env, **env})
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # also reaps flwr-clientapp/serverapp children
            proc.wait(timeout=10)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _run_overrides(tmp: Path, data: Path, keys: Path) -> dict:
    model = {f"model.{k}": v for k, v in TINY_MODEL.items()}
    return {"run-dir": str(tmp / "run"), "data.dataset": str(data), "data.max-users": 0, **model,
            "federated.num-server-rounds": 2, "federated.clients-per-round": 3, "federated.min-train-nodes": 3,
            "federated.local-epochs": 1, "federated.batch-size": 4, "federated.lr": 0.01, "federated.eval-every": 0,
            "privacy.mode": "example", "privacy.target-epsilon": 50.0, "privacy.delta": 1e-5,
            "he.enabled": True, "he.keys-dir": str(keys),
            # pairwise masks over real QUERY messages: 3 devices, each masks with the other 2 (threshold 2)
            "he.masking": True, "he.mask-neighbours": 3, "he.mask-threshold": 2}


def _run_config_arg(overrides: dict) -> str:
    def toml(v) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else json.dumps(v) if isinstance(v, str) else repr(v)

    return " ".join(f"{k}={toml(v)}" for k, v in overrides.items())


def _run_cfg(overrides: dict):
    """The Config the ServerApp will build: pyproject's flattened app config + the overrides."""
    app_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    flat: dict = {}

    def walk(prefix: str, node: dict) -> None:
        for k, v in node.items():
            walk(f"{prefix}{k}.", v) if isinstance(v, dict) else flat.__setitem__(f"{prefix}{k}", v)

    walk("", app_cfg)
    return config_from_run_config({**flat, **overrides})


def _prepare(tmp: Path) -> dict:
    """Dataset, key authority (CKKS + signing), deployment keys (TLS + SuperNode auth), device state dirs."""
    data = synthetic_csv(tmp / "synth.csv", users=len(DEVICES), items=30)
    overrides = _run_overrides(tmp, data, tmp / "keys")
    cfg = _run_cfg(overrides)
    init_keys(tmp / "keys", device_ids=list(DEVICES), he=cfg.he.to_he_config())
    deploy = init_deploy_keys(tmp / "deploy", device_ids=[*DEVICES, "rogue", "plain"])
    states = {}
    for dev in (*DEVICES, "rogue", "plain"):
        states[dev] = tmp / "devices" / dev
        init_device(states[dev], user_id=dev if dev in DEVICES else "u0", dataset=str(data),
                    keys=tmp / "keys" if dev in DEVICES else None)
    home = tmp / "flwr_home"
    home.mkdir()
    return {"data": data, "overrides": overrides, "deploy": deploy, "states": states, "home": home}


def _write_connection(home: Path, port: int, ca: Path) -> None:
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{CONN}"\n\n[superlink.{CONN}]\n'
                                      f'address = "127.0.0.1:{port}"\nroot-certificates = "{ca}"\n')


def _start_superlink(procs: Processes, deploy, port: int) -> None:
    procs.start("superlink", [str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(deploy.ca_cert),
                              "--ssl-certfile", str(deploy.server_cert), "--ssl-keyfile", str(deploy.server_key),
                              "--enable-supernode-auth", "--host", "127.0.0.1", "--port", str(port)])
    _wait_for(lambda: "Uvicorn running on https" in procs.log("superlink"), 60, "the SuperLink to listen")


def _start_supernode(procs: Processes, name: str, port: int, key: Path | None, state: Path, *,
                     tls: Path | None, extra: tuple[str, ...] = ()) -> None:
    """TLS + auth key (a device), or ``tls=None, key=None``: a plaintext SuperNode (Flower itself refuses an
    auth key without TLS, so a plaintext node can only come without one)."""
    security = ["--root-certificates", str(tls)] if tls else ["--insecure"]
    auth = ["--auth-supernode-private-key", str(key)] if key else []
    procs.start(name, [str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{port}", *security, *auth,
                       "--port", str(_free_port()), *extra,
                       "--node-config", f"state-dir='{state}'"], FLWR_HOME=str(state.parent / f".home-{name}"))


def test_tls_authenticated_deployment_runs_dp_he_rounds_and_keeps_strangers_out(tmp_path):
    prep = _prepare(tmp_path)
    deploy, states, home = prep["deploy"], prep["states"], prep["home"]
    # the SuperLink starts `flower-superexec` (and SuperNodes `flwr-clientapp`) by name: the venv's bin must be
    # on PATH even when pytest runs as `.venv/bin/python -m pytest` without an activated venv
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "FLWR_TELEMETRY_ENABLED": "0", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    port = _free_port()
    _write_connection(home, port, deploy.ca_cert)
    procs = Processes(tmp_path / "logs", env)
    try:
        _start_superlink(procs, deploy, port)
        for dev in DEVICES:
            reg = subprocess.run([str(BIN / "flwr"), "supernode", "register", str(deploy.supernode_pub(dev)), CONN],
                                 env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert reg.returncode == 0, reg.stdout + reg.stderr
        for dev in DEVICES:
            _start_supernode(procs, dev, port, deploy.supernode_key(dev), states[dev], tls=deploy.ca_cert)
        give_up = ("--max-retries", "2", "--max-wait-time", "15")
        _start_supernode(procs, "rogue", port, deploy.supernode_key("rogue"), states["rogue"], tls=deploy.ca_cert,
                         extra=give_up)
        _start_supernode(procs, "plain", port, None, states["plain"], tls=None, extra=give_up)
        _check_plaintext_refused(port, env, tmp_path)
        run = subprocess.run([str(BIN / "flwr"), "run", str(REPO), CONN, "--run-config",
                              _run_config_arg(prep["overrides"]), "--stream"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        (tmp_path / "logs" / "flwr-run.log").write_text(run.stdout + run.stderr)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        _wait_for(lambda: (tmp_path / "run" / "metrics.json").exists(), 30, "metrics.json")
        _check_outcome(tmp_path, states, procs)
    finally:
        procs.stop_all()
        if os.environ.get("FEDINTEREST_KEEP_DEPLOY_LOGS"):
            shutil.copytree(tmp_path / "logs", os.environ["FEDINTEREST_KEEP_DEPLOY_LOGS"], dirs_exist_ok=True)
    assert all(p.poll() is not None for p in procs.procs)


def _check_plaintext_refused(port: int, env: dict, tmp: Path) -> None:
    """Plain HTTP to the SuperLink port gets no HTTP answer, and an `insecure = true` flwr connection fails."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("POST", "/v1/control/list-nodes", body=b"{}")
        conn.getresponse().read()
    conn.close()
    home = Path(env["FLWR_HOME"])
    text = (home / "config.toml").read_text()
    (home / "config.toml").write_text(text + f'\n[superlink.plain]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    ls = subprocess.run([str(BIN / "flwr"), "ls", "plain"], env=env, cwd=tmp, capture_output=True, text=True,
                        timeout=60)
    (tmp / "logs" / "flwr-ls-plain.log").write_text(ls.stdout + ls.stderr)
    assert ls.returncode != 0 and "Using SuperLink: plain" in ls.stdout, ls.stdout + ls.stderr


def _check_outcome(tmp: Path, states: dict, procs: Processes) -> None:
    metrics = json.loads((tmp / "run" / "metrics.json").read_text())
    assert metrics["rounds"] == 2 and metrics["evaluated_devices"] == len(DEVICES)
    assert metrics["he"]["enabled"] and metrics["he"]["rejected_updates"] == 0
    assert metrics["he"]["sum_checks"] == 2  # each round's sum confirmed by a deployed device (QUERY)
    masking = metrics["he"]["masking"]
    assert masking["enabled"] and masking["unmasked"] == 2 and masking["not_ready"] == 0
    assert 0.0 <= metrics["metrics"]["recall@10"] <= 1.0
    rows = list(csv.DictReader((tmp / "run" / "history.csv").open()))
    assert [int(r["round"]) for r in rows] == [1, 2] and all(int(r["valid"]) == len(DEVICES) for r in rows)
    assert not (tmp / "run" / "global_shared.npz").exists() and (tmp / "run" / "global_sum.ckks").exists()
    for dev in DEVICES:
        state = DeviceState(states[dev])
        ledger = state.store().ledger(state.config().privacy, delta=1e-5)
        assert len(ledger.rounds) == 2 and 0 < ledger.epsilon() < 50
        assert state.store().load_personal()
        assert (states[dev] / "global_sum.ckks").read_bytes() == (tmp / "run" / "global_sum.ckks").read_bytes()
        with Recommender(states[dev]) as rec:
            assert rec.source == "global_sum.ckks" and len(rec.recommend(5).items) == 5
    link = procs.log("superlink")
    assert "No SuperNode found with the given public key" in link  # the unregistered key was refused
    assert link.count("[Fleet.ActivateNode] Activated node_id") == len(DEVICES)  # nobody else got in
    for stranger in ("rogue", "plain"):
        assert not (states[stranger] / "ledger.json").exists()
        assert not (states[stranger] / "global_sum.ckks").exists()
