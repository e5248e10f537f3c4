"""A fresh run into the same directory, in the same process, uses the fresh keys: nothing a process cached
about the previous run's key files (device keys, parsed contexts) outlives the wipe."""

from __future__ import annotations

import csv

from client.secure import device_keys
from shared_models.crypto import HEConfig, init_keys
from simulations.simulate import simulate
from tests.fed_helpers import synthetic_csv, tiny_config


def test_two_fresh_he_runs_into_one_directory_in_one_process_both_sum_every_update(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv", users=8), he={"enabled": True},
                      federated={"num-server-rounds": 2, "clients-per-round": 4})
    for _ in range(2):
        result = simulate(cfg, tmp_path / "run", progress=False, resume=False)
        rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
        assert [(int(r["valid"]), int(r["rejected"])) for r in rows] == [(4, 0), (4, 0)], rows
        assert result["he"]["rejected_updates"] == 0, result["he"]["rejections"]


def test_device_keys_follow_the_key_files_not_the_path(tmp_path):
    he = HEConfig(max_weight=64, max_summands=16, scale_bits=28)
    init_keys(tmp_path / "k", device_ids=["d0"], he=he)
    first = device_keys(str(tmp_path / "k"), "d0")
    assert device_keys(str(tmp_path / "k"), "d0") is first  # cached while the files are unchanged
    init_keys(tmp_path / "k", device_ids=["d0"], he=he, overwrite=True)
    second = device_keys(str(tmp_path / "k"), "d0")
    assert second is not first
    assert second.context_fingerprint != first.context_fingerprint
    pub = lambda k: k.signing_key.public_key().public_bytes_raw()  # noqa: E731
    assert pub(second) != pub(first)
