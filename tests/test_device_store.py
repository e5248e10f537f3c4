"""The on-device interaction store: ordering, CSV import rules, all-or-nothing imports, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from client.interactions import InteractionError, InteractionStore

REPO = Path(__file__).resolve().parents[1]


def _store(tmp_path: Path) -> InteractionStore:
    return InteractionStore(tmp_path / "i.sqlite", create=True)


def test_history_is_chronological_and_stable_for_ties(tmp_path):
    with _store(tmp_path) as db:
        for item, ts in [("b", 20.0), ("a", 10.0), ("c", 20.0), ("d", 5.0), ("e", 20.0)]:
            db.add(item, ts)
        assert db.history() == ["d", "a", "b", "c", "e"]
    with InteractionStore(tmp_path / "i.sqlite") as again:  # durable across reopen
        assert again.history() == ["d", "a", "b", "c", "e"] and len(again) == 5


def test_store_uses_wal_and_full_sync(tmp_path):
    with _store(tmp_path) as db:
        assert db._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="device init"):
        InteractionStore(tmp_path / "nope.sqlite")


def test_import_both_headers_and_filters_by_user(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("item,timestamp\nx,3\ny,1\n\n")
    b = tmp_path / "b.csv"
    b.write_text("user,item,timestamp\nme,z,2\nother,w,0\nme,x,9\n")
    with _store(tmp_path) as db:
        assert db.import_csv(a) == 2
        assert db.import_csv(b, user_id="me") == 2
        assert db.history() == ["y", "z", "x", "x"]


@pytest.mark.parametrize("body, message", [
    ("item,timestamp\nx,1\ny,notanumber\n", r"b\.csv:3: field 'timestamp'"),
    ("item,timestamp\nx,1\n,2\n", r"b\.csv:3: field 'item' is empty"),
    ("item,timestamp\nx,1,7\n", r"b\.csv:2: expected 2 fields"),
    ("item,time\nx,1\n", r"b\.csv:1: header"),
    ("item,timestamp\nx,1\nunknown,2\n", r"b\.csv:3: field 'item': 'unknown' is not in the device catalogue"),
])
def test_bad_row_names_file_and_line_and_commits_nothing(tmp_path, body, message):
    bad = tmp_path / "b.csv"
    bad.write_text(body)
    with _store(tmp_path) as db:
        db.add("old", 0.0)
        with pytest.raises(InteractionError, match=message):
            db.import_csv(bad, known=lambda t: t != "unknown")
        assert db.history() == ["old"]


def test_user_column_without_user_id_is_refused(tmp_path):
    f = tmp_path / "u.csv"
    f.write_text("user,item,timestamp\nme,x,1\n")
    with _store(tmp_path) as db, pytest.raises(InteractionError, match="user id"):
        db.import_csv(f)


def test_failure_inside_the_transaction_rolls_back(tmp_path):
    with _store(tmp_path) as db:
        db.add("keep", 1.0)

        def boom(n: int) -> None:
            raise RuntimeError("disk full")

        with pytest.raises(RuntimeError):
            db.add_many(((f"i{n}", float(n)) for n in range(25_000)), progress=boom)
        assert db.history() == ["keep"]


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from client.interactions import InteractionStore
    def progress(n):
        if n == 20000:
            print("MID", flush=True)
            time.sleep(60)  # the test kills us here, half-way through the transaction
    with InteractionStore(sys.argv[1]) as db:
        db.import_csv(sys.argv[2], progress=progress)
    print("DONE", flush=True)
""")


def test_kill_mid_import_keeps_everything_acknowledged_and_nothing_of_the_import(tmp_path):
    db_path = tmp_path / "i.sqlite"
    with InteractionStore(db_path, create=True) as db:
        db.add("first", 1.0)
        db.add("second", 2.0)
    big = tmp_path / "big.csv"
    big.write_text("item,timestamp\n" + "".join(f"it{n},{100 + n}\n" for n in range(50_000)))
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(db_path), str(big)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "MID"
        # the uncommitted half of the import is in the WAL (or the page cache), not in the database
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with InteractionStore(db_path) as db:
        assert db.history() == ["first", "second"]
        assert db._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.import_csv(big) == 50_000  # the same import, re-run, then lands completely
        assert len(db) == 50_002


def test_concurrent_reader_sees_only_committed_imports(tmp_path):
    db_path = tmp_path / "i.sqlite"
    with InteractionStore(db_path, create=True) as writer, InteractionStore(db_path) as reader:
        seen: list[int] = []
        writer.add_many(((f"i{n}", float(n)) for n in range(30_000)), progress=lambda n: seen.append(len(reader)))
        assert seen and set(seen) == {0}
        assert len(reader) == 30_000
