"""Dataset fixtures: an isolated cache seeded from the shared ML-100K copy, no network."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from shared_models.datasets import Interactions, grouplens, load_interactions, recbole_wheel
from shared_models.datasets.cache import CACHE_ENV, ML100K_DIR, ML100K_SHA256

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ML100K = REPO_ROOT.parent / "shared" / "data" / "ml-100k"


def _offline(*_args: object, **_kwargs: object) -> dict[str, bytes]:
    raise OSError("network access is disabled in the dataset tests")


@pytest.fixture(scope="session")
def shared_ml100k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Verified ML-100K atomic files: the read-only copy next to the repository (``../shared``, as in CI),
    else fetched once per session by the project's own loader (PyPI's recbole wheel); skip if neither."""
    missing = [name for name in ML100K_SHA256 if not (SHARED_ML100K / name).is_file()]
    if not missing:
        return SHARED_ML100K
    from shared_models.datasets import fetch_ml100k

    try:
        return fetch_ml100k(tmp_path_factory.mktemp("ml100k-cache"))
    except Exception as exc:  # no ../shared and no network: these tests cannot run here
        pytest.skip(f"{SHARED_ML100K} lacks {missing} and fetching failed ({exc})")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make both ML-100K download sources fail immediately."""
    monkeypatch.setattr(grouplens, "download_grouplens", _offline)
    monkeypatch.setattr(recbole_wheel, "download_recbole_wheel", _offline)


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> Path:
    """An empty cache root in ``tmp_path`` exported as ``$FEDINTEREST_CACHE``."""
    root = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


def seed_ml100k(root: Path, shared: Path) -> Path:
    """Copy the shared ML-100K files into ``<root>/ml-100k`` and return that directory."""
    target = root / ML100K_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name in ML100K_SHA256:
        shutil.copyfile(shared / name, target / name)
    return target


@pytest.fixture
def ml100k_seeder(shared_ml100k: Path) -> Callable[[Path], Path]:
    """``seed(root)`` copies the shared ML-100K files into ``<root>/ml-100k``."""
    return lambda root: seed_ml100k(root, shared_ml100k)


@pytest.fixture
def ml100k_cache(cache_root: Path, shared_ml100k: Path) -> Path:
    """A cache root whose ``ml-100k/`` holds verified copies of the shared files."""
    seed_ml100k(cache_root, shared_ml100k)
    return cache_root


@pytest.fixture(scope="session")
def ml100k(tmp_path_factory: pytest.TempPathFactory, shared_ml100k: Path) -> Interactions:
    """ML-100K loaded once via ``load_interactions("ml-100k")`` from a seeded cache."""
    root = tmp_path_factory.mktemp("ml100k-cache")
    seed_ml100k(root, shared_ml100k)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(root))
        patch.setattr(grouplens, "download_grouplens", _offline)
        patch.setattr(recbole_wheel, "download_recbole_wheel", _offline)
        return load_interactions("ml-100k")  # the patches end here, not at session end
