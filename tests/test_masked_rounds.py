"""Pairwise masking in the round protocol (``he.masking``): whole inline runs, drop-outs, a killed and resumed
run, what a key holder reads from one masked update, and the Grid transport's QUERY path to the ClientApp."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict

import shared_models.crypto.packing as packing
import simulations.simulate as simulate_mod
from client.app import answer_query
from client.round import DeviceContext, global_weights
from client.secure import device_keys
from client.store import DeviceStore
from server.grid_transport import GridTransport
from server.masks import MaskCoordinator
from shared_models.crypto import Aggregator, DecryptionError, decrypt_average, init_keys, load_server_keys
from shared_models.crypto.payload import parse_header
from shared_models.crypto import mask_wire as wire
from shared_models.datasets.population import population
from shared_models.messages import decode_instruction
from simulations.backends.inline import InlineTransport
from simulations.simulate import simulate
from tests.fed_helpers import synthetic_csv, tiny_config
from tests.hostile_grid import FakeMessage, HostileGrid

USERS = 20
MASKS = {"mask-neighbours": 7, "mask-threshold": 3}


def _cfg(tmp: Path, *, masking: bool, masks: dict | None = None, **federated):
    return tiny_config(synthetic_csv(tmp / "s.csv", users=USERS, items=40),
                       he={"enabled": True, "masking": masking, **(masks or MASKS)},
                       federated={"num-server-rounds": 2, "clients-per-round": USERS, "min-train-nodes": 5,
                                  "eval-every": 0, **federated},
                       privacy={"mode": "none"})


def _decoded(cfg, run: Path) -> dict[str, np.ndarray]:
    pop = population(cfg)
    d = pop.devices[0]
    ctx = DeviceContext(d, DeviceStore(run / "x"), pop.text, pop.max_interactions, str(Path(f"{run}.keys")))
    weights, _ = global_weights(cfg, (run / "global_sum.ckks").read_bytes(), ctx)
    return weights


class Dropping(InlineTransport):
    """Devices in ``drop`` complete the key exchange, then never send their update (round 1 only)."""

    drop: frozenset[int] = frozenset()
    seen: list = []

    def train(self, round_id, nodes, received):
        replies = super().train(round_id, [n for n in nodes if round_id != 1 or n not in self.drop], received)
        Dropping.seen.extend(r for r in replies if r.payload is not None and round_id == 1)
        return replies


def _run(tmp: Path, name: str, *, masking: bool, drop=frozenset(), monkeypatch=None):
    cfg = _cfg(tmp, masking=masking)
    monkeypatch.setattr(simulate_mod, "InlineTransport", type("T", (Dropping,), {"drop": frozenset(drop)}))
    result = simulate(cfg, tmp / name, progress=False, resume=False)
    return cfg, result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("masked")
    drop = frozenset(range(0, USERS, 3))  # 7 of 20 = 35 %, after the key exchange
    with pytest.MonkeyPatch.context() as mp:
        Dropping.seen = []
        cfg, plain = _run(tmp, "plain", masking=False, drop=drop, monkeypatch=mp)
        plain_updates, Dropping.seen = list(Dropping.seen), []
        _, masked = _run(tmp, "masked", masking=True, drop=drop, monkeypatch=mp)
        masked_updates = list(Dropping.seen)
    return cfg, tmp, plain, masked, (plain_updates, masked_updates), drop


def test_a_masked_run_releases_the_same_model_as_an_unmasked_one_despite_35_percent_dropouts(runs):
    cfg, tmp, plain, masked, _, drop = runs
    history = [json.loads(line) for line in (tmp / "masked" / "round_log.jsonl").read_text().splitlines()]
    assert history[0]["valid"] == USERS - len(drop) and history[0]["masking"] == {
        "sealed": USERS, "ready": USERS, "threshold": MASKS["mask-threshold"]}
    assert history[1]["valid"] == USERS
    a, b = _decoded(cfg, tmp / "plain"), _decoded(cfg, tmp / "masked")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-3)  # CKKS rounding only, over two rounds
    # CKKS rounding (1e-4) may flip one near-tie among 20 users: at most one user's rank moves
    assert masked["metrics"] == pytest.approx(plain["metrics"], abs=1 / USERS + 1e-9)
    summary = json.loads((tmp / "masked" / "metrics.json").read_text())["he"]["masking"]
    assert summary["enabled"] and summary["unmasked"] == 2 and summary["not_ready"] == 0


def test_a_key_holder_cannot_decode_one_masked_update(runs):
    cfg, tmp, _, _, (plain_updates, masked_updates), _ = runs
    holder = population(cfg).devices[1].device_id

    def read(run: str, payload: bytes):  # what a key holder gets from one update, as a one-summand sum
        keys = device_keys(str(Path(f"{tmp / run}.keys")), holder)
        agg = Aggregator(keys.context, expected_count=keys.he.n_ciphertexts(parse_header(payload).n_params),
                         cfg=keys.he)
        agg.add(payload)
        return decrypt_average(keys.context, agg.to_bytes(), cfg=keys.he)

    assert len(masked_updates) == len(plain_updates) == USERS - 7
    for rep in plain_updates[:3]:  # without masks the key holder reads another device's update
        average, total = read("plain", rep.payload)
        assert total >= 1 and 0 < np.abs(average).max() <= cfg.he.clip_range
    for rep in masked_updates[:3]:
        with pytest.raises(DecryptionError):  # uniform c0: far outside the encoding's range
            read("masked", rep.payload)


def test_a_run_killed_after_the_key_exchange_resumes_with_a_fresh_attempt(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, masking=True, **{"num-server-rounds": 3})
    calls = {"n": 0}

    class Killed(Exception):
        pass

    class DiesInRound2(InlineTransport):
        def train(self, round_id, nodes, received):
            calls["n"] += 1
            if round_id == 2 and calls["n"] == 2:
                raise Killed()  # every device holds round-2 mask secrets at this point
            return super().train(round_id, nodes, received)

    monkeypatch.setattr(simulate_mod, "InlineTransport", DiesInRound2)
    with pytest.raises(Killed):
        simulate(cfg, tmp_path / "run", progress=False, resume=False)
    result = simulate(cfg, tmp_path / "run", progress=False)  # resumes before round 2
    log = [json.loads(x) for x in (tmp_path / "run" / "round_log.jsonl").read_text().splitlines()]
    assert [r["round"] for r in log] == [1, 2, 3] and all(r["valid"] == USERS for r in log)
    assert result["he"]["masking"]["unmasked"] == 2  # this process: rounds 2 and 3


def test_too_few_devices_for_the_threshold_train_nobody_and_say_why(tmp_path):
    cfg = _cfg(tmp_path, masking=True)
    pop = population(cfg)
    init_keys(tmp_path / "keys", device_ids=[d.device_id for d in pop.devices], he=cfg.he.to_he_config())
    transport = InlineTransport(cfg, pop, tmp_path / "run", str(tmp_path / "keys"))
    coord = MaskCoordinator(transport.exchange, load_server_keys(tmp_path / "keys", n_threads=1), he=cfg.he,
                            run_id=transport.run_id)
    ready, failed = coord.prepare(1, [0, 1, 2])
    assert ready == [] and set(failed) == {0, 1, 2}
    assert all("need more than the threshold 3" in why for why in failed.values())


# ---- the Grid transport's QUERY path into the ClientApp -----------------------------------------------------

def client_app_answer(dst: int, msg: FakeMessage) -> RecordDict:
    """A QUERY answered by the real ClientApp handler (simulated partition dst - 1); node 8 sends junk."""
    if dst == 8:
        return RecordDict({"config": ConfigRecord({"x": 1})})  # no mask reply at all
    return answer_query(decode_instruction(msg), SimpleNamespace(node_config={"partition-id": dst - 1}))


def test_the_grid_transport_routes_every_mask_stage_through_the_client_app(tmp_path, monkeypatch):
    monkeypatch.setattr("server.grid_transport.Message", FakeMessage)
    monkeypatch.setattr("server.grid_transport.PULL_S", 0.0)
    cfg = _cfg(tmp_path, masking=True)
    pop = population(cfg)
    init_keys(tmp_path / "keys", device_ids=[d.device_id for d in pop.devices], he=cfg.he.to_he_config())
    grid = GridTransport(HostileGrid(8, train=client_app_answer, evaluate=client_app_answer), cfg, str(tmp_path / "run"), expected_nodes=8, timeout_s=5.0,
                         keys_dir=str(tmp_path / "keys"), run_id="run-x")
    coord = MaskCoordinator(grid.exchange, load_server_keys(tmp_path / "keys", n_threads=1), he=cfg.he,
                            run_id="run-x")
    ready, failed = coord.prepare(1, list(range(8)))
    assert ready == list(range(7)) and list(failed) == [7] and "no reply" in failed[7]
    replies = grid.exchange(1, wire.STAGE_UNMASK, {0: wire.UnmaskRequest(set(range(6)), {6}).encode()})
    shares = wire.SharesReply.decode(replies[0]).shares
    assert shares and set(shares) <= set(range(7))  # one share per owner it holds, nothing else


def _masked_run(tmp_path: Path, monkeypatch, transport: type, masks: dict | None = None) -> tuple[dict, list[dict]]:
    """A 2-round masked run over ``transport``: (result, round-log lines)."""
    monkeypatch.setattr(simulate_mod, "InlineTransport", transport)
    result = simulate(_cfg(tmp_path, masking=True, masks=masks), tmp_path / "run", progress=False, resume=False)
    return result, [json.loads(x) for x in (tmp_path / "run" / "round_log.jsonl").read_text().splitlines()]


class OneOutOfRange(InlineTransport):
    """Device 0 encrypts slots far outside the clip range in round 1 (a modified device: no range check)."""

    def train(self, round_id, nodes, received):
        if round_id != 1:
            return super().train(round_id, nodes, received)
        out = []
        for n in nodes:
            with contextlib.ExitStack() as stack:
                if n == 0:
                    stack.enter_context(mock.patch.object(packing, "check_values",
                                                          lambda x, cfg: np.asarray(x, np.float64).ravel() * 1e4))
                out += super().train(round_id, [n], received)
        return out


def test_an_out_of_range_update_under_masks_releases_nothing_that_round_and_excludes_nobody(tmp_path, monkeypatch):
    _, log = _masked_run(tmp_path, monkeypatch, OneOutOfRange)
    assert log[0]["contributors"] == [] and log[1]["valid"] == USERS and len(log[1]["contributors"]) == USERS
    assert [r["reason"] for r in log[0]["rejected"]] == [
        "the unmasked sum does not decrypt; under masks a sub-sum cannot be tested without unmasking single "
        "updates, so no update is excluded: previous sum kept"]


class LyingHolder(InlineTransport):
    """Device 3 answers every unmask request with wrong shares (the right lengths, random bytes)."""

    def exchange(self, round_id, stage, requests):
        replies = super().exchange(round_id, stage, requests)
        if stage == wire.STAGE_UNMASK and 3 in replies:
            shares = wire.SharesReply.decode(replies[3]).shares
            replies[3] = wire.SharesReply({o: s[:2] + os.urandom(len(s) - 2) for o, s in shares.items()}).encode()
        return replies


def test_a_holder_sending_wrong_shares_cannot_stop_the_round(tmp_path, monkeypatch):
    result, log = _masked_run(tmp_path, monkeypatch, LyingHolder)
    assert all(len(r["contributors"]) == USERS and not r["rejected"] for r in log)
    assert result["he"]["masking"]["unmasked"] == 2


class SilentAtUnmask(InlineTransport):
    """30% of the devices send their update, then never answer the unmask request."""

    def exchange(self, round_id, stage, requests):
        if stage == wire.STAGE_UNMASK:
            requests = {n: r for n, r in requests.items() if n % 10 >= 3}
        return super().exchange(round_id, stage, requests)


def test_devices_silent_after_sending_stay_in_the_sum(tmp_path, monkeypatch):
    # 13 holders per device, 6 silent at most: always >= 7 shares for a threshold of 3 (with 7 holders a random
    # graph leaves some device fewer than 3 live holders in some rounds: the binomial tail of threat-model §6)
    _, log = _masked_run(tmp_path, monkeypatch, SilentAtUnmask, masks={"mask-neighbours": 13, "mask-threshold": 3})
    assert all(len(r["contributors"]) == USERS and not r["rejected"] for r in log)  # 6 of 20 silent, all summed


class JunkTokens(InlineTransport):
    """In round 1, device 2 seals share pairs nobody can open, then uploads as usual."""

    def exchange(self, round_id, stage, requests):
        replies = super().exchange(round_id, stage, requests)
        if stage == wire.STAGE_SHARES and round_id == 1 and 2 in replies:
            tokens = wire.TokensMessage.decode(replies[2]).tokens
            replies[2] = wire.TokensMessage({v: os.urandom(len(t)) for v, t in tokens.items()}, {}).encode()
        return replies


def test_junk_share_pairs_cost_that_round_only(tmp_path, monkeypatch):
    _, log = _masked_run(tmp_path, monkeypatch, JunkTokens)
    assert log[0]["contributors"] == [] and "masks cannot be removed" in log[0]["rejected"][0]["reason"]
    assert len(log[1]["contributors"]) == USERS
