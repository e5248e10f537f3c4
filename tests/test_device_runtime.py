"""Device state directories: init from a dataset, add/import against the catalogue, and the CLI commands."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from client.cli_device import device_app, export_cmd, recommend_cmd
from client.interactions import InteractionError
from client.runtime import (CATALOGUE_FILE, Catalogue, DeviceState, DeviceStateError, add_interaction,
                            import_interactions, init_device)
from shared_models.datasets import load_interactions
from tests.test_device_helpers import make_device


def _cli() -> typer.Typer:
    """Mounted the way the main CLI mounts them (fedinterest device ..., recommend, export)."""
    app = typer.Typer()
    app.add_typer(device_app, name="device")
    app.command("recommend")(recommend_cmd)
    app.command("export")(export_cmd)
    return app


def test_init_writes_catalogue_config_and_the_users_history(tmp_path):
    state = make_device(tmp_path, user="u3")
    inter = load_interactions(tmp_path / "synth.csv")
    dev = DeviceState(state)
    cat = dev.catalogue()
    assert dev.user_id == "u3" and cat.item_ids == inter.item_ids and cat.num_items == inter.num_items
    assert cat.popularity is not None and cat.popularity[0] == 0 and sum(cat.popularity) == len(inter)
    u = inter.user_ids.index("u3")
    expected = [inter.item_ids[i] for i, uu in zip(inter.items, inter.users) if uu == u]
    with dev.interactions() as db:
        assert sorted(db.history()) == sorted(expected) and len(db) == len(expected)
    assert dev.config().model.hidden == 16  # from the TOML
    assert dev.store().load_personal() == {}
    assert not (state / "ledger.json").exists()  # created lazily at the first DP round


def test_init_refuses_an_existing_device_and_needs_a_catalogue(tmp_path):
    state = make_device(tmp_path)
    with pytest.raises(DeviceStateError, match="already initialised"):
        init_device(state, user_id="u0", dataset=str(tmp_path / "synth.csv"))
    with pytest.raises(DeviceStateError, match="exactly one of --dataset or --catalogue"):
        init_device(tmp_path / "x", user_id="u0")


def test_catalogue_csv_init_then_add_and_import(tmp_path):
    cat_csv = tmp_path / "cat.csv"
    cat_csv.write_text("item,title\na,Alpha\nb,Beta\nc,Gamma\n")
    init_device(tmp_path / "d", user_id="me", catalogue_csv=cat_csv)
    cat = Catalogue.load(tmp_path / "d" / CATALOGUE_FILE)
    assert cat.item_ids == ["[PAD]", "a", "b", "c"] and cat.title(2) == "Beta" and cat.popularity is None
    assert add_interaction(tmp_path / "d", "b", 5.0) == 1
    with pytest.raises(InteractionError, match="'zz' is not in the device catalogue"):
        add_interaction(tmp_path / "d", "zz", 6.0)
    f = tmp_path / "h.csv"
    f.write_text("user,item,timestamp\nme,c,1\nyou,a,2\nme,a,9\n")
    assert import_interactions(tmp_path / "d", f) == 2
    assert list(DeviceState(tmp_path / "d").history_indices()) == [3, 2, 1]


def test_unknown_state_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DeviceStateError, match="not a device state directory"):
        DeviceState(tmp_path / "missing")
    with pytest.raises(DeviceStateError, match="device init"):
        add_interaction(tmp_path / "missing", "1")


def test_cli_init_add_import_recommend(tmp_path):
    runner, app = CliRunner(), _cli()
    make_device(tmp_path, name="seed")  # writes synth.csv and tiny.toml
    state = tmp_path / "cli-dev"
    res = runner.invoke(app, ["device", "init", "--state", str(state), "--user-id", "u1", "--dataset",
                              str(tmp_path / "synth.csv"), "--config", str(tmp_path / "tiny.toml")])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["device", "add", "5", "--state", str(state), "--timestamp", "9e9"]).exit_code == 0
    res = runner.invoke(app, ["device", "add", "nope", "--state", str(state)])
    assert res.exit_code == 2 and "'nope' is not in the device catalogue" in res.output
    bad = tmp_path / "bad.csv"
    bad.write_text("item,timestamp\n5,1\n6,x\n")
    res = runner.invoke(app, ["device", "import", str(bad), "--state", str(state)])
    assert res.exit_code == 2 and "bad.csv:3: field 'timestamp'" in res.output
    res = runner.invoke(app, ["recommend", "--state", str(state), "-k", "4", "--json", "--explain"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["items"]) == 4 and "5" not in [r["item"] for r in out["items"]]
    assert 0.0 <= out["explanation"]["long_share"] <= 1.0
    res = runner.invoke(app, ["recommend", "--state", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "not a device state directory" in res.output
