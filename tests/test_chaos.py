"""Chaos: a whole HE + DP run (inline, 40 devices, 4 rounds) with one hostile device of every kind the
boundary knows, killed after round 2 and resumed. It completes; the honest devices' result equals a clean run
in which the hostile devices' updates never arrive (same seed, same device noise secrets); the ledgers, the
signed round log and the audit agree; and edited copies of the run FAIL the audit."""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict

import server.loop as loop
import shared_models.crypto.packing as packing
import simulations.simulate as simulate_mod
from client.round import global_weights, DeviceContext
from client.secure import device_keys, encode_update
from client.store import DeviceStore
from shared_models.atomic_io import atomic_write_bytes
from shared_models.crypto import payload_sha256, sign_update
from shared_models.crypto.payload import parse_header
from shared_models.datasets.population import population
from shared_models.messages import (CONFIG, KEY_DEVICE_ID, KEY_SIGNATURE, KEY_SIGNED_ROUND, METRICS, TrainReply,
                                    decode_train_reply, encode_train_reply)
from shared_models.paths import run_keys_dir
from simulations.audit.run import audit_run
from simulations.backends.inline import InlineTransport
from simulations.simulate import simulate
from tests.fed_helpers import Killed, copy_run, sampling_that_dies_at, synthetic_csv, tiny_config
from tests.hostile_grid import FakeMessage

USERS, ROUNDS = 40, 4
HOSTILE = {1: "malformed metrics", 2: "non-finite count", 3: "wrong dtype", 4: "out-of-range slots",
           5: "replay", 6: "wrong run"}
REASON = {"malformed metrics": "no 'metrics' record", "non-finite count": "'num-examples' must be an integer",
          "wrong dtype": "'signature' must be bytes", "out-of-range slots": "group testing",
          "replay": "replayed/stale round id", "wrong run": "bad signature"}


@contextmanager
def _unchecked_encoding():
    """A modified device: encrypts whatever it likes (no clip-range check before encryption)."""
    with mock.patch.object(packing, "check_values", lambda x, cfg: np.asarray(x, np.float64).ravel()):
        yield


class ChaosTransport(InlineTransport):
    """Every device runs the real device round; the hostile ones then tamper with what they send, and every
    reply crosses the real Flower codec (encode, then the server's decode) as over a Grid."""

    drop_hostile = False  # the clean run: the hostile devices' replies never arrive

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: dict[int, RecordDict] = {}  # what each device sent last (the replayer's material)

    def train(self, round_id, nodes, received):
        out = []
        for rep in super().train(round_id, nodes, received):
            kind = HOSTILE.get(rep.node)
            if kind is not None and self.drop_hostile:
                out.append(TrainReply(node=rep.node, error="no reply (dropped or timed out)"))
                continue
            content = encode_train_reply(rep)
            if kind is not None and not rep.error and not rep.refused:
                content = self._tamper(kind, rep, content, round_id)
            self.sent[rep.node] = content
            out.append(decode_train_reply(rep.node, FakeMessage(content, rep.node, "train")))
        return out

    def _keys(self, rep):
        return device_keys(self.keys_dir, rep.device_id)

    def _tamper(self, kind: str, rep: TrainReply, content: RecordDict, round_id: int) -> RecordDict:
        if kind == "malformed metrics":
            return RecordDict({k: v for k, v in content.items() if k != METRICS})
        if kind == "non-finite count":
            return RecordDict({**content, METRICS: MetricRecord({"num-examples": float("inf")})})
        if kind == "wrong dtype":
            return RecordDict({**content, CONFIG: ConfigRecord({KEY_DEVICE_ID: rep.device_id, KEY_SIGNED_ROUND: round_id,
                                                                KEY_SIGNATURE: rep.signature.hex()})})
        if kind == "out-of-range slots":  # validly signed, far outside clip_range: the sum would not decrypt
            n_params = parse_header(rep.payload).n_params
            with _unchecked_encoding():
                payload, sig, _ = encode_update({"v": np.full(n_params, 1e4, np.float32)}, weight=1,
                                                keys=self._keys(rep), round_id=round_id, run_id=self.run_id)
            return encode_train_reply(TrainReply(node=rep.node, device_id=rep.device_id, round_id=round_id,
                                                 payload=payload, signature=sig))
        if kind == "replay":  # its reply of an earlier round again; before it has one, one signed for round - 1
            if rep.node in self.sent:
                return self.sent[rep.node]
            return self._resigned(rep, round_id=round_id - 1, run_id=self.run_id)
        if kind == "wrong run":
            return self._resigned(rep, round_id=round_id, run_id="another-run")
        raise AssertionError(kind)

    def _resigned(self, rep: TrainReply, *, round_id: int, run_id: str) -> RecordDict:
        sig = sign_update(self._keys(rep).signing_key, round_id=round_id, device_id=rep.device_id,
                          payload_sha256=payload_sha256(rep.payload), run_id=run_id)
        return encode_train_reply(TrainReply(node=rep.node, device_id=rep.device_id, round_id=round_id,
                                             payload=rep.payload, signature=sig))


def _fixed_noise_secrets(monkeypatch):
    """Each device's noise secret from its directory name, so the clean run draws the same DP noise (the run
    itself stays non-reproducible to outsiders: privacy.reproducible-noise is off, as the audit requires)."""
    real = DeviceStore.noise_seed

    def noise_seed(self, round_id):
        if not self.noise_secret_path.is_file():
            atomic_write_bytes(self.noise_secret_path, hashlib.sha256(b"chaos:" + self.root.name.encode()).digest(),
                               mode=0o600)
        return real(self, round_id)
    monkeypatch.setattr(DeviceStore, "noise_seed", noise_seed)


def _config(tmp_path):
    return tiny_config(synthetic_csv(tmp_path / "s.csv", users=USERS, items=60), he={"enabled": True},
                       federated={"num-server-rounds": ROUNDS, "clients-per-round": USERS, "min-train-nodes": 10,
                                  "eval-every": 2},
                       privacy={"reproducible-noise": False})


pytestmark = pytest.mark.slow  # ~60 s on 2 busy cores: two 4-round runs of 40 devices, one killed and resumed


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chaos")
    cfg = _config(tmp)
    with pytest.MonkeyPatch.context() as mp:
        _fixed_noise_secrets(mp)
        mp.setattr(simulate_mod, "InlineTransport", type("Clean", (ChaosTransport,), {"drop_hostile": True}))
        clean = simulate(cfg, tmp / "clean", progress=False, resume=False)
        mp.setattr(simulate_mod, "InlineTransport", ChaosTransport)
        real_sample = loop.sample_nodes
        mp.setattr(loop, "sample_nodes", sampling_that_dies_at(3))
        with pytest.raises(Killed):
            simulate(cfg, tmp / "chaos", progress=False, resume=False)
        assert not (tmp / "chaos" / "metrics.json").exists()
        assert len((tmp / "chaos" / "round_log.jsonl").read_text().splitlines()) == 2
        mp.setattr(loop, "sample_nodes", real_sample)
        hostile = simulate(cfg, tmp / "chaos", progress=False)  # resumes after round 2
    return cfg, tmp / "clean", clean, tmp / "chaos", hostile


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "round_log.jsonl").read_text().splitlines()]


def test_every_hostile_device_is_rejected_for_its_own_reason_in_every_round(runs):
    _, _, _, run, result = runs
    lines = _log(run)
    assert [line["round"] for line in lines] == list(range(1, ROUNDS + 1))
    for line in lines:
        assert line["sampled"] == USERS and line["valid"] == USERS - len(HOSTILE), line
        by_node = {r["node"]: r["reason"] for r in line["rejected"]}
        assert set(by_node) == set(HOSTILE), line["rejected"]
        for node, kind in HOSTILE.items():
            assert REASON[kind] in by_node[node], (kind, by_node[node])
    assert result["he"]["rejected_updates"] == ROUNDS * len(HOSTILE)
    assert "failure" not in result and result["evaluated_devices"] == USERS


def _decoded_global(cfg, run: Path) -> dict[str, np.ndarray]:
    pop = population(cfg)
    device = DeviceContext(pop.devices[0], DeviceStore(run / "probe"), pop.text, pop.max_interactions,
                           str(run_keys_dir(run)))
    weights, _ = global_weights(cfg, (run / "global_sum.ckks").read_bytes(), device)
    return weights


def test_the_honest_result_equals_a_clean_run_without_the_hostile_updates(runs):
    cfg, clean_dir, clean, run, hostile = runs
    assert [line["valid"] for line in _log(clean_dir)] == [line["valid"] for line in _log(run)]
    a, b = _decoded_global(cfg, run), _decoded_global(cfg, clean_dir)
    assert set(a) == set(b)
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert diff < 1e-3, diff  # only CKKS rounding differs (fresh encryption noise in each run)
    assert hostile["metrics"] == pytest.approx(clean["metrics"], abs=1e-9)
    assert hostile["privacy"]["epsilon"] == pytest.approx(clean["privacy"]["epsilon"])


def test_ledgers_log_and_audit_agree(runs):
    _, _, _, run, _ = runs
    audit = audit_run(run, verify_log=True)
    assert audit["verdict"] == "PASS", audit["reasons"]
    assert audit["log"]["verified"] and audit["log"]["rounds"] == ROUNDS and not audit["log"]["key_inside_run_dir"]
    assert audit["consistency"]["config_hash_matches"] is True
    charged = audit["consistency"]["ledger_rounds"]
    assert all(line["valid"] <= charged[str(line["round"])] <= line["sampled"] for line in _log(run))
    assert audit["consistency"]["uncharged_contributors"] == 0
    pop = population(runs[0])
    honest = sorted(d.device_id for i, d in enumerate(pop.devices) if i not in HOSTILE)
    assert all(line["contributors"] == honest for line in _log(run))


def _delete_a_ledger(run: Path) -> None:
    shutil.rmtree(sorted((run / "devices").glob("*/ledger.json"))[0].parent)
    doc = json.loads((run / "metrics.json").read_text())
    doc["privacy"]["devices_trained"] -= 1
    (run / "metrics.json").write_text(json.dumps(doc))


def _drop_a_log_line(run: Path) -> None:
    lines = (run / "round_log.jsonl").read_bytes().splitlines(keepends=True)
    (run / "round_log.jsonl").write_bytes(b"".join(lines[:1] + lines[2:]))


def _change_the_config_noise(run: Path) -> None:
    cfg = json.loads((run / "config.json").read_text())
    cfg["privacy"]["noise_multiplier"] = 4.0
    (run / "config.json").write_text(json.dumps(cfg, indent=2))


@pytest.mark.parametrize("edit, words", [(_delete_a_ledger, "have no ledger charging that round"), (_drop_a_log_line, "line 2"),
                                         (_change_the_config_noise, "config_hash")])
def test_edited_copies_fail_the_audit(runs, tmp_path, edit, words):
    copy = copy_run(runs[3], tmp_path / "run")
    edit(copy)
    audit = audit_run(copy, verify_log=True)
    assert audit["verdict"] == "FAIL" and any(words in r for r in audit["reasons"]), audit["reasons"]
