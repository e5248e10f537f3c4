"""Parser behaviour: atomic/CSV formats, item text and errors naming file, line and column."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shared_models.datasets import DatasetError, load_interactions

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ITEM_FILE = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "2\tGoldenEye\t1995\tAction Adventure Thriller\n"
    "267\tunkonwn\tunkonwn\tunknown\n"
)


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_atomic_with_item_file_gives_item_text(tmp_path: Path) -> None:
    rows = "7\t2\t4\t100\n8\t1\t5\t50\n7\t1\t3\t90\n7\t267\t1\t95\n8\t99\t2\t10\n"
    path = _write(tmp_path, "toy.inter", INTER_HEADER + rows)
    _write(tmp_path, "toy.item", ITEM_FILE)
    inter = load_interactions(path)
    assert inter.item_ids == ["[PAD]", "2", "1", "267", "99"]
    assert inter.item_text == [
        "",
        "GoldenEye (1995) \u2014 Action, Adventure, Thriller",
        "Toy Story (1995) \u2014 Animation, Children's, Comedy",
        "Item 267 \u2014 unknown",
        "",  # item 99 has no metadata row
    ]
    assert inter.users.tolist() == [0, 1, 0, 0, 1]
    assert inter.timestamps.tolist() == [100.0, 50.0, 90.0, 95.0, 10.0]
    assert inter.source == str(path)


def test_atomic_columns_found_by_name_in_any_order(tmp_path: Path) -> None:
    text = "timestamp:float\titem_id:token\tuser_id:token\n3.5\ta\tx\n1\tb\ty\n"
    inter = load_interactions(_write(tmp_path, "reordered.inter", text))
    assert inter.user_ids == ["x", "y"] and inter.item_ids == ["[PAD]", "a", "b"]
    assert inter.timestamps.tolist() == [3.5, 1.0] and inter.item_text is None


def test_csv_with_rating_and_extra_columns(tmp_path: Path) -> None:
    text = "item,user,rating,timestamp,note\nm1,u1,4.5,10,hi\nm2,u1,3,11,\nm1,u2,1,12,x\n"
    inter = load_interactions(_write(tmp_path, "ratings.csv", text))
    assert inter.user_ids == ["u1", "u2"] and inter.item_ids == ["[PAD]", "m1", "m2"]
    assert inter.users.tolist() == [0, 0, 1] and inter.items.tolist() == [1, 2, 1]


def test_blank_lines_are_skipped_and_exact_repeated_rows_dropped_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = "user,item,timestamp\na,1,1\n\na,1,1\na,1,2\nb,2,2\n"
    with caplog.at_level(logging.WARNING):
        inter = load_interactions(_write(tmp_path, "dups.csv", text))
    assert inter.users.tolist() == [0, 0, 1] and inter.timestamps.tolist() == [1.0, 2.0, 2.0]
    assert "skipped 1 blank line(s)" in caplog.text
    assert "1 row(s) repeat an earlier (user, item, timestamp) row; dropped" in caplog.text


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("missing.inter", "user_id:token\ttimestamp:float\n1\t5\n",
         r"missing\.inter:1 \(column 'item_id'\): header lacks a required column"),
        ("badtime.inter", INTER_HEADER + "1\t2\t3\t100\n1\t3\t4\tyesterday\n",
         r"badtime\.inter:3 \(column 'timestamp'\): expected a number, got 'yesterday'"),
        ("nan.inter", INTER_HEADER + "1\t2\t3\tnan\n",
         r"nan\.inter:2 \(column 'timestamp'\): expected a finite number"),
        ("badrating.inter", INTER_HEADER + "1\t2\t3\t1\n1\t2\tfive\t1\n",
         r"badrating\.inter:3 \(column 'rating'\): expected a number"),
        ("fields.inter", INTER_HEADER + "1\t2\t3\t100\n1\t2\t100\n",
         r"fields\.inter:3: expected 4 tab-separated fields as in the header, found 3"),
        ("empty.inter", "", r"empty\.inter:1: empty file"),
        ("header.inter", INTER_HEADER, r"header\.inter:2: no interactions after the header"),
        ("nouser.inter", INTER_HEADER + "\t2\t3\t100\n",
         r"nouser\.inter:2 \(column 'user_id'\): empty value"),
        ("missing.csv", "user,timestamp\na,1\n",
         r"missing\.csv:1 \(column 'item'\): header lacks a required column"),
        ("badtime.csv", "user,item,timestamp\na,1,1\nb,2,3\nc,3,soon\n",
         r"badtime\.csv:4 \(column 'timestamp'\): expected a number, got 'soon'"),
        ("fields.csv", "user,item,timestamp\na,1,1\na,2\n",
         r"fields\.csv:3: expected 3 comma-separated fields as in the header, found 2"),
        ("empty.csv", "", r"empty\.csv:1: empty file"),
        ("header.csv", "user,item,timestamp\n", r"header\.csv:2: no interactions after the header"),
    ],
)
def test_parse_errors_name_file_line_and_column(tmp_path: Path, name: str, text: str,
                                                expected: str) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(DatasetError, match=expected) as caught:
        load_interactions(path)
    assert str(caught.value).startswith(str(path))
    assert isinstance(caught.value, ValueError)


def test_item_file_errors_name_the_item_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "meta.inter", INTER_HEADER + "1\t1\t3\t100\n")
    _write(tmp_path, "meta.item", ITEM_FILE + "1\tToy Story again\t1995\tComedy\n")
    with pytest.raises(DatasetError, match=r"meta\.item:5 \(column 'item_id'\): duplicate item "
                                           r"'1' \(first on line 2\)"):
        load_interactions(path)


def test_undecodable_bytes_report_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"user,item,timestamp\na,1,1\nb,Caf\xe9,2\n")
    with pytest.raises(DatasetError, match=r"latin\.csv:3: not valid utf-8 text"):
        load_interactions(path)


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    other = _write(tmp_path, "ratings.txt", "user,item,timestamp\na,1,1\n")
    with pytest.raises(DatasetError, match=r"ratings\.txt: unknown extension '\.txt'"):
        load_interactions(other)
    with pytest.raises(DatasetError, match=r"nowhere\.inter: file not found"):
        load_interactions(tmp_path / "nowhere.inter")
    with pytest.raises(DatasetError, match=r"ml-1m: unknown extension '\(none\)'"):
        load_interactions("ml-1m")


def test_padding_token_is_reserved(tmp_path: Path) -> None:
    path = _write(tmp_path, "pad.csv", "user,item,timestamp\na,[PAD],1\n")
    with pytest.raises(DatasetError, match=r"pad\.csv: item token '\[PAD\]' is reserved"):
        load_interactions(path)
