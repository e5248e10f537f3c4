"""A user id never becomes a raw path component: hostile dataset ids stay inside RUN_DIR/devices, `device init
--user-id ../server` is refused, and --fresh deletes only in a folder a fedinterest run marked."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from client.runtime import DeviceStateError, init_device, install_device_keys
from shared_models.crypto import HEConfig, init_keys
from shared_models.paths import check_device_id, device_dir_name, device_state_dir, mark_keys_dir, run_keys_dir
from simulations.cli.main import app
from simulations.simulate import RUN_MARKER, fresh_start, simulate
from tests.fed_helpers import synthetic_csv, tiny_config

HOSTILE_IDS = ["../../x", "/tmp/abs", "..", ".", "a/b", "_x", "é", "a\n", ""]


def test_every_device_dir_is_one_component_inside_devices_and_distinct(tmp_path):
    names = {device_dir_name(u) for u in HOSTILE_IDS + ["u1", "U1", "x_y.z-1"]}
    assert len(names) == len(HOSTILE_IDS) + 3  # collision-free
    for u in HOSTILE_IDS:
        d = device_state_dir(tmp_path, u)
        assert d.parent == tmp_path / "devices" and d.name.startswith("_") and "/" not in d.name
        assert d.resolve().is_relative_to((tmp_path / "devices").resolve())
    assert device_state_dir(tmp_path, "u1") == tmp_path / "devices" / "u1"  # safe ids keep their name
    for u in HOSTILE_IDS:
        with pytest.raises(ValueError, match="not allowed"):
            check_device_id(u)


def _hostile_csv(path: Path) -> Path:
    src = synthetic_csv(path.with_name("clean.csv"))
    rows = list(csv.reader(src.open()))
    rename = {"u0": "../../escape", "u1": str(path.parent / "abs-escape"), "u2": ".."}
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([rows[0]] + [[rename.get(r[0], r[0]), *r[1:]] for r in rows[1:]])
    return path


def test_hostile_dataset_user_ids_write_device_state_only_inside_the_run_dir(tmp_path):
    cfg = tiny_config(_hostile_csv(tmp_path / "data" / "hostile.csv"),
                      federated={"num-server-rounds": 1, "clients-per-round": 12})
    run = tmp_path / "data" / "runs" / "run"
    simulate(cfg, run, progress=False)
    assert not (tmp_path / "data" / "escape").exists() and not (tmp_path / "data" / "abs-escape").exists()
    assert not (run.parent / "escape").exists() and not (tmp_path / "data" / "runs" / "devices").exists()
    dirs = sorted(p.name for p in (run / "devices").iterdir())
    assert len(dirs) == 12 and sum(d.startswith("_") for d in dirs) == 3
    assert all((run / "devices" / d / "ledger.json").is_file() for d in dirs)


def test_device_init_refuses_a_path_as_user_id(tmp_path):
    keys = tmp_path / "keys"
    init_keys(keys, device_ids=["u0"], he=HEConfig(max_weight=8, max_summands=4, scale_bits=28))
    for bad in ("../server", "..", "a/b", "/etc"):
        with pytest.raises(DeviceStateError, match="not allowed"):
            init_device(tmp_path / "state", user_id=bad, catalogue_csv=tmp_path / "none.csv", keys=keys)
        with pytest.raises(DeviceStateError, match="not allowed"):
            install_device_keys(tmp_path / "state", keys, bad)
    assert not (tmp_path / "state").exists()
    res = CliRunner().invoke(app, ["device", "init", "--state", str(tmp_path / "s2"), "--user-id", "../server",
                                   "--catalogue", str(tmp_path / "none.csv"), "--keys", str(keys)])
    assert res.exit_code != 0 and "not allowed" in res.output
    assert not (tmp_path / "s2" / "keys" / "server").exists()


def test_fresh_refuses_a_folder_no_run_marked_and_deletes_nothing(tmp_path):
    cfg = tiny_config(tmp_path / "unused.csv")
    for name in ("server", "keys"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "precious").write_text("mine")
    with pytest.raises(ValueError, match="not a fedinterest run directory"):
        fresh_start(tmp_path, cfg)
    assert (tmp_path / "server" / "precious").is_file() and (tmp_path / "keys" / "precious").is_file()
    (tmp_path / RUN_MARKER).write_text("{}")
    fresh_start(tmp_path, cfg)
    assert not (tmp_path / "server").exists() and not (tmp_path / "keys").exists()


def test_fresh_removes_a_link_without_following_it(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_MARKER).write_text("{}")
    (run / "server").symlink_to(outside, target_is_directory=True)
    fresh_start(run, tiny_config(tmp_path / "unused.csv"))
    assert (outside / "keep").is_file() and not (run / "server").exists()


def test_a_run_marks_its_folder_and_cli_fresh_in_a_foreign_folder_exits_2(tmp_path):
    cfg = tiny_config(synthetic_csv(tmp_path / "s.csv"), federated={"num-server-rounds": 1})
    simulate(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / RUN_MARKER).is_file()
    simulate(cfg, tmp_path / "run", progress=False, resume=False)  # a marked folder may be started afresh
    foreign = tmp_path / "foreign"
    (foreign / "server").mkdir(parents=True)
    toml = tmp_path / "c.toml"
    toml.write_text(f'[data]\ndataset = "{tmp_path / "s.csv"}"\n[he]\nenabled = false\n')
    res = CliRunner().invoke(app, ["simulate", "--config", str(toml), "--out", str(foreign), "--fresh", "--quiet"])
    assert res.exit_code == 2 and "not a fedinterest run directory" in res.output
    assert (foreign / "server").is_dir()


def test_fresh_deletes_the_keys_beside_the_run_only_when_the_harness_made_them(tmp_path):
    cfg = tiny_config(tmp_path / "unused.csv")
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_MARKER).write_text("{}")
    keys = run_keys_dir(run)
    assert keys == tmp_path / "run.keys"
    keys.mkdir()
    (keys / "precious").write_text("mine")
    with pytest.raises(ValueError, match="no .fedinterest-keys marker"):
        fresh_start(run, cfg)
    assert (keys / "precious").is_file()
    mark_keys_dir(keys)
    fresh_start(run, cfg)
    assert not keys.exists() and run.is_dir()
