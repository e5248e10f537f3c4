"""Signatures bind the run: an encrypted update signed for one run is rejected by another run that uses the
same keys; the run id is a per-run-directory nonce the instructions carry and a resume keeps."""

from __future__ import annotations

import numpy as np
import pytest

from client.secure import device_keys, encode_update
from server.run_id import RUN_ID_FILE, run_identity
from server.secure import SecureAggregation
from shared_models.crypto import HEConfig, generate_signing_key, init_keys, load_server_keys, sign_update, verify_update
from shared_models.messages import TrainReply, config_to_json, decode_instruction, instruction_builder
from tests.fed_helpers import tiny_config
from tests.hostile_grid import FakeMessage

DIGEST = bytes(range(32))


def test_an_update_signature_names_its_run():
    sk = generate_signing_key()
    sig = sign_update(sk, round_id=3, device_id="d", payload_sha256=DIGEST, run_id="run-a")
    assert verify_update(sk.public_key(), sig, round_id=3, device_id="d", payload_sha256=DIGEST, run_id="run-a")
    assert not verify_update(sk.public_key(), sig, round_id=3, device_id="d", payload_sha256=DIGEST, run_id="run-b")
    assert not verify_update(sk.public_key(), sig, round_id=3, device_id="d", payload_sha256=DIGEST)


def test_another_run_with_the_same_keys_rejects_the_update(tmp_path):
    init_keys(tmp_path, device_ids=["d0", "d1"], he=HEConfig(max_weight=8, max_summands=4, scale_bits=28))
    n = 100
    payload, sig, _ = encode_update({"v": np.full(n, 0.1, np.float32)}, weight=1,
                                    keys=device_keys(str(tmp_path), "d0"), round_id=1, run_id="run-a")
    rep = TrainReply(node=0, device_id="d0", round_id=1, payload=payload, signature=sig)
    for run, expected in (("run-b", "bad signature"), ("run-a", "")):
        server = SecureAggregation(load_server_keys(str(tmp_path)), n_params=n, run_id=run)
        server.begin(1, [0])
        assert server.offer(rep) == expected


def test_the_instruction_carries_the_run_id(tmp_path):
    cfg = tiny_config(tmp_path / "u.csv")
    content = instruction_builder(config_to_json(cfg), {"w": np.zeros(2, np.float32)}, round_id=4, run_id="abc")()
    ins = decode_instruction(FakeMessage(content, 1, "train"))
    assert (ins.run_id, ins.round_id) == ("abc", 4)


def test_the_run_id_is_kept_by_a_resume_and_renewed_by_a_fresh_run(tmp_path):
    first = run_identity(tmp_path)
    assert run_identity(tmp_path) == first and len(first) == 32
    (tmp_path / RUN_ID_FILE).unlink()
    assert run_identity(tmp_path) != first
    (tmp_path / RUN_ID_FILE).write_text("../../etc\n")
    with pytest.raises(ValueError, match="not a run id"):
        run_identity(tmp_path)
