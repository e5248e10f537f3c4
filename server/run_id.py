"""The run id: a random nonce made once per run directory (``RUN_DIR/server/run_id``), kept across resumes.

The server sends it in every instruction and every device signs it with its update, so an update signed for
one run never verifies in another run that uses the same keys (``shared_models/crypto/signing.py``). A fresh
run (``simulate --fresh`` removes ``server/``) gets a new one."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

RUN_ID_FILE = Path("server") / "run_id"
RUN_ID_BYTES = 16
_HEX = re.compile(r"[0-9a-f]{%d}" % (2 * RUN_ID_BYTES))


def run_identity(run_dir: Path | str) -> str:
    """This run directory's id (hex), made on first use; ValueError if the stored one is not a run id."""
    path = Path(run_dir) / RUN_ID_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(secrets.token_hex(RUN_ID_BYTES) + "\n")
        try:
            os.link(tmp, path)  # first writer wins: two processes of one run never hold different ids
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    value = path.read_text().strip()
    if not _HEX.fullmatch(value):
        raise ValueError(f"{path}: not a run id ({2 * RUN_ID_BYTES} hex digits expected)")
    return value
