"""init_keys layout, file privacy and loaders (server context must stay public)."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import tenseal as ts

from shared_models.crypto import (
    HEConfig, PayloadError, decrypt_average, encrypt_update, init_keys, load_device_keys, load_server_keys,
    payload_sha256, sign_update, sum_ciphertexts, verify_update)

CFG = HEConfig(max_summands=4, scale_bits=HEConfig(max_summands=4).max_scale_bits)
DEVICES = ["dev-a", "dev-b"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return init_keys(tmp_path_factory.mktemp("keys"), device_ids=DEVICES, he=CFG)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_layout_files_exist_with_the_right_privacy(layout) -> None:
    root = layout.root
    assert ts.context_from(layout.server_public_context.read_bytes()).is_private() is False
    assert ts.context_from(layout.clients_secret_context.read_bytes()).is_private() is True
    assert _mode(layout.clients_secret_context) == 0o600
    assert _mode(root / "server" / "signing_ed25519.pem") == 0o600
    assert _mode(layout.server_dir) == 0o700 and _mode(layout.clients_dir) == 0o700
    for dev in DEVICES:
        ddir = layout.device_dir(dev)
        assert _mode(ddir) == 0o700
        for name in ("signing_ed25519.pem", "x25519.pem", "ckks_secret.sealed"):
            assert _mode(ddir / name) == 0o600, name
        for name in ("signing_ed25519.pub.pem", "x25519.pub.pem"):
            assert (ddir / name).exists()
        assert layout.device_verify_key(dev).exists()
    manifest = json.loads(layout.manifest.read_text())
    assert manifest["device_ids"] == DEVICES and HEConfig.from_mapping(manifest["he"]) == CFG


def test_sealed_context_is_not_plaintext(layout) -> None:
    sealed = (layout.device_dir("dev-a") / "ckks_secret.sealed").read_bytes()
    assert layout.clients_secret_context.read_bytes()[:64] not in sealed


def test_refuses_to_overwrite(layout) -> None:
    with pytest.raises(FileExistsError):
        init_keys(layout.root, device_ids=DEVICES, he=CFG)


@pytest.mark.parametrize("ids", [[], ["a", "a"], ["../x"], ["a/b"], [""]])
def test_rejects_bad_device_ids(tmp_path, ids) -> None:
    with pytest.raises(ValueError, match="device_ids"):
        init_keys(tmp_path, device_ids=ids, he=CFG)


def test_loaders_round_trip(layout) -> None:
    server = load_server_keys(layout.root, n_threads=1)
    assert not server.context.is_private() and server.he == CFG
    assert set(server.device_verify_keys) == set(DEVICES)
    devices = [load_device_keys(layout.root, dev, n_threads=1) for dev in DEVICES]
    assert all(d.context.is_private() for d in devices)
    assert {d.context_fingerprint for d in devices} == {server.context_fingerprint}
    payloads = []
    for i, dev in enumerate(devices):
        payload = encrypt_update(dev.context, np.full(10, float(i)), weight=100 * (1 + i), cfg=dev.he)
        sig = sign_update(dev.signing_key, round_id=1, device_id=dev.device_id,
                          payload_sha256=payload_sha256(payload))
        assert verify_update(server.device_verify_keys[dev.device_id], sig, round_id=1,
                             device_id=dev.device_id, payload_sha256=payload_sha256(payload))
        payloads.append(payload)
    summed = sum_ciphertexts(server.context, payloads, expected_count=1, cfg=server.he)
    avg, total = decrypt_average(devices[0].context, summed, cfg=CFG)
    np.testing.assert_allclose(avg, np.full(10, 2 / 3), atol=1e-6)
    assert abs(total - 300) < 1e-4
    with pytest.raises(KeyError):
        load_device_keys(layout.root, "nobody")


def test_devices_of_one_key_set_share_one_parsed_context_but_each_must_unseal_its_own(layout) -> None:
    a, b = load_device_keys(layout.root, "dev-a"), load_device_keys(layout.root, "dev-b")
    assert a.context is b.context and a.context_fingerprint == b.context_fingerprint  # parsed once per process
    assert a.signing_key.public_key().public_bytes_raw() != b.signing_key.public_key().public_bytes_raw()
    sealed = layout.device_dir("dev-b") / "ckks_secret.sealed"
    original = sealed.read_bytes()
    try:  # the cache never stands in for unsealing: a device whose sealed copy is broken gets no context
        sealed.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(Exception):
            load_device_keys(layout.root, "dev-b")
    finally:
        sealed.write_bytes(original)


def test_devices_of_a_process_decrypt_one_global_sum_once_and_other_key_sets_never_reuse_it(
        layout, tmp_path, monkeypatch) -> None:
    from client import secure

    monkeypatch.setattr(secure, "_decrypted", type(secure._decrypted)())
    calls = []
    real = secure.decrypt_average
    monkeypatch.setattr(secure, "decrypt_average", lambda *a, **k: calls.append(1) or real(*a, **k))
    a, b = load_device_keys(layout.root, "dev-a"), load_device_keys(layout.root, "dev-b")
    server = load_server_keys(layout.root, n_threads=1)
    payloads = [encrypt_update(d.context, np.arange(7.0) / (i + 1), weight=i + 1, cfg=CFG) for i, d in enumerate((a, b))]
    summed = sum_ciphertexts(server.context, payloads, expected_count=1, cfg=CFG)
    avg_a, total_a, secs_a = secure.decrypt_shared(summed, a)
    avg_b, total_b, secs_b = secure.decrypt_shared(summed, b)
    assert len(calls) == 1 and avg_b is avg_a and (total_b, secs_b) == (total_a, secs_a) and secs_a > 0
    np.testing.assert_allclose(avg_a, np.arange(7.0) * 2 / 3, atol=1e-5)  # (1*x + 2*x/2) / 3
    assert not avg_a.flags.writeable  # shared by the devices of the process: nobody may change it
    other = init_keys(tmp_path / "other", device_ids=["dev-c"], he=CFG)  # another key set: must decrypt itself
    c = load_device_keys(other.root, "dev-c")
    with pytest.raises(PayloadError, match="different CKKS key set"):  # it fails as it would alone
        secure.decrypt_shared(summed, c)
    assert len(calls) == 2
