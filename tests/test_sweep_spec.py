"""The [sweep] table: validation with errors naming the key, grid expansion, collapse, slugs, the CLI."""

import pytest
import typer
from typer.testing import CliRunner

from shared_models.config import ConfigError, parse_overrides
from simulations.cli.sweep import sweep_app
from simulations.sweep.run import reference_config
from simulations.sweep.grid import expand_grid, make_slug, toml_literal
from simulations.sweep.spec import load_sweep, parse_sweep
from tests.fed_helpers import TINY_MODEL

NOISE = "privacy.noise-multiplier"


def doc(**sweep) -> dict:
    return {"data": {"dataset": "unused.csv"}, "model": dict(TINY_MODEL),
            "federated": {"backend": "inline", "num-server-rounds": 1}, "he": {"enabled": False},
            "sweep": sweep}


@pytest.mark.parametrize("sweep, named", [
    ({"grids": {}}, "sweep.grids"),
    ({"grid": {"privacy.noise": [1.0]}}, "privacy.noise"),
    ({"grid": {"privacy": [1.0]}}, "privacy"),
    ({"grid": {NOISE: 1.0}}, NOISE),
    ({"grid": {NOISE: []}}, NOISE),
    ({"grid": {NOISE: [1.0, 1.0]}}, NOISE),
    ({"grid": {NOISE: [{"a": 1}]}}, NOISE),
    ({"references": ["central", "federated"]}, "sweep.references"),
    ({"references": "pop"}, "sweep.references"),
    ({"central": {"epoch": 3}}, "sweep.central.epoch"),
    ({"central": {"epochs": "many"}}, "train.epochs"),
])
def test_bad_sweep_tables_are_errors_naming_the_key(sweep, named):
    with pytest.raises(ConfigError, match=f"'{named}'"):
        parse_sweep(doc(**sweep))


def test_ill_typed_grid_value_is_caught_when_expanding_and_names_the_key():
    spec = parse_sweep(doc(grid={NOISE: [1.0, "loud"]}))
    with pytest.raises(ConfigError, match=f"sweep point .*'{NOISE}': expected float"):
        expand_grid(spec)


def test_missing_sweep_table_and_file_errors_name_them(tmp_path):
    with pytest.raises(ConfigError, match=r"\[sweep\]"):
        parse_sweep({"data": {}})
    with pytest.raises(ConfigError, match="nope.toml"):
        load_sweep(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[sweep]\ngrid = { federated.rounds = [1] }\n")
    with pytest.raises(ConfigError, match="bad.toml.*federated.rounds"):
        load_sweep(bad)


def test_non_private_points_collapse_the_noise_levels():
    spec = parse_sweep(doc(grid={NOISE: [0.5, 1.0, 2.0], "privacy.mode": ["none", "example"],
                                 "he.enabled": [False]}))
    points = expand_grid(spec)
    assert [p.slug for p in points] == [
        "privacy.mode-none__he.enabled-false",
        "privacy.noise-multiplier-0.5__privacy.mode-example__he.enabled-false",
        "privacy.noise-multiplier-1.0__privacy.mode-example__he.enabled-false",
        "privacy.noise-multiplier-2.0__privacy.mode-example__he.enabled-false"]
    assert [p.config.privacy.noise_multiplier for p in points[1:]] == [0.5, 1.0, 2.0]
    assert points[0].config.privacy.mode == "none" and NOISE not in points[0].settings


def test_sweep_overrides_edit_the_grid_and_references_base_overrides_edit_the_base():
    spec = parse_sweep(doc(grid={"privacy": {"noise_multiplier": [0.5]}}, references=["pop"]),
                       [f"sweep.grid.{NOISE}=[1.0, 3.0]", "sweep.references=[]", "privacy.delta=1e-6",
                        "sweep.central.epochs=2"])
    assert spec.grid == {NOISE: (1.0, 3.0)} and spec.references == () and spec.central == {"epochs": 2}
    assert [p.config.privacy.delta for p in expand_grid(spec)] == [1e-6, 1e-6]
    assert reference_config(spec, "pop").model.kind == "pop"
    assert reference_config(spec, "central").train.epochs == 2
    with pytest.raises(ConfigError, match=f"--set sweep.grid.{NOISE}"):
        parse_sweep(doc(grid={NOISE: [1.0]}), [f"{NOISE}=2"])


@pytest.mark.parametrize("value", [True, 3, 0.5, 1e-05, "long-short", 'a "quoted"/path', [44, 20]])
def test_toml_literal_round_trips_through_parse_overrides(value):
    assert parse_overrides([f"k={toml_literal(value)}"])["k"] == value


def test_slugs_are_stable_and_filesystem_safe():
    settings = {"data.dataset": "/tmp/a b.csv", "he.coeff-mod-bit-sizes": [44, 20]}
    slug = make_slug(settings)
    assert slug == make_slug(dict(settings)) == "data.dataset-_tmp_a_b.csv__he.coeff-mod-bit-sizes-44-20"
    assert make_slug({}) == "base"
    long = make_slug({f"model.k{i}": "x" * 40 for i in range(10)})
    assert len(long) <= 180 and long != make_slug({f"model.k{i}": "y" * 40 for i in range(10)})


def test_cli_dry_run_lists_the_plan_and_bad_configs_exit_2(tmp_path):
    app = typer.Typer()
    app.add_typer(sweep_app, name="sweep")
    cfg = tmp_path / "s.toml"
    cfg.write_text('[federated]\nbackend = "inline"\n[sweep]\ngrid = { "privacy.noise-multiplier" = [1.0, 2.0] }\n'
                   'references = ["pop"]\n')
    result = CliRunner().invoke(app, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "o"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "privacy.noise-multiplier-2.0" in result.output and "to run" in result.output
    bad = CliRunner().invoke(app, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "o"),
                                   "--set", "sweep.grid.model.hiden=[1]"])
    assert bad.exit_code == 2 and "model.hiden" in bad.output
