"""Interaction CSVs from outside: a UTF-8 BOM is no part of the header (simulate and `device import`),
non-UTF-8 bytes are an error naming the file and line, and both paths drop exact duplicate rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.interactions import InteractionError, InteractionStore
from shared_models.datasets import DatasetError, load_interactions

BODY = "user,item,timestamp\nme,x,1\nother,y,2\nme,z,3\nme,x,1\n"


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_bom_is_not_part_of_the_header_on_device_import(tmp_path):
    path = _file(tmp_path, "bom.csv", b"\xef\xbb\xbf" + BODY.encode())
    with InteractionStore(tmp_path / "i.sqlite", create=True) as db:
        assert db.import_csv(path, user_id="me") == 2  # only this user's rows, the repeat of (x, 1) dropped
        assert db.history() == ["x", "z"]


def test_a_bom_is_not_part_of_the_header_in_a_simulation_dataset(tmp_path):
    inter = load_interactions(_file(tmp_path, "bom.csv", b"\xef\xbb\xbf" + BODY.encode()))
    assert inter.user_ids == ["me", "other"] and len(inter.users) == 3


def test_latin1_bytes_name_the_file_and_line(tmp_path):
    data = "user,item,timestamp\nme,x,1\nme,caf\xe9,2\n".encode("latin-1")
    path = _file(tmp_path, "latin.csv", data)
    with InteractionStore(tmp_path / "i.sqlite", create=True) as db, \
            pytest.raises(InteractionError, match=r"latin\.csv:3: not valid UTF-8"):
        db.import_csv(path, user_id="me")
    with pytest.raises(DatasetError, match=r"latin\.csv:3"):
        load_interactions(path)


def test_one_duplicate_policy_for_device_import_and_simulation(tmp_path):
    path = _file(tmp_path, "dups.csv", BODY.encode())
    inter = load_interactions(path)
    in_dataset = int((inter.users == inter.user_ids.index("me")).sum())
    with InteractionStore(tmp_path / "i.sqlite", create=True) as db:
        assert db.import_csv(path, user_id="me") == in_dataset == 2
        assert db.import_csv(path, user_id="me") == 0  # re-importing the same file adds nothing
        assert len(db) == 2
