"""One typed config: defaults run; unknown or ill-typed keys are errors naming the key."""

import pytest

from shared_models.config import Config, ConfigError, build_config, load_config, parse_overrides


def test_defaults_validate():
    cfg = build_config()
    assert isinstance(cfg, Config) and cfg.model.max_len == 50 and cfg.model.short_len == 10


def test_kebab_keys_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[model]\nkind = "long"\nmax-len = 20\n[train]\nlr = 0.01\n')
    cfg = load_config(p, ["train.batch-size=7", "model.text-embeddings=true"])
    assert (cfg.model.kind, cfg.model.max_len, cfg.train.lr) == ("long", 20, 0.01)
    assert cfg.train.batch_size == 7 and cfg.model.text_embeddings is True


@pytest.mark.parametrize("override, key", [
    ("model.nope=1", "model.nope"),
    ("train.lr=abc", "train.lr"),
    ("train.epochs=1.5", "train.epochs"),
    ("model.kind=gru", "model.kind"),
    ("model.short-len=99", "model.short_len"),
    ("bogus.x=1", "bogus"),
    ("model=3", "model"),
    ("model.item-ids=false", "model.item_ids"),
    ("privacy.mode=user-level", "privacy.mode"),
])
def test_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config(overrides=[override])


def test_bad_toml_names_the_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[model\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_parse_overrides_types():
    assert parse_overrides(["a.b=1", "a.c=[60, 40]", "d=x-y"]) == {"a": {"b": 1, "c": [60, 40]}, "d": "x-y"}
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])
