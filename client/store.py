"""A device's persistent state directory: personal parameters and the privacy ledger.

Layout (one directory per device; in simulation ``RUN_DIR/devices/<device-id>/``):
- ``personal.pt``  the personal parameters (short-term encoder, fusion gate), written atomically
- ``ledger.json``  the privacy ledger (``shared_models.privacy.PrivacyLedger``), written atomically
- ``contributions.json``  rounds this device sent a user-level noisy delta for (user-level DP)
- ``replay.json`` + ``personal_before.pt``  the last round trained: its number, the SHA-256 of the update
  that left the device, and the personal weights it started from, so a resumed run that asks for that round
  again gets the identical update (retrained from the same start with the same seeds, checked against the
  digest), never a second, different one
Everything here stays on the device; nothing in this directory is ever sent to the server.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch

from shared_models.atomic_io import atomic_write_bytes
from shared_models.config import PrivacyConfig
from shared_models.privacy import PrivacyLedger
from shared_models.privacy.units import DEVICE_LEDGER_UNIT

NOISE_SECRET_BYTES = 32


class DeviceStore:
    """Atomic, crash-safe storage for one device's personal state."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def personal_path(self) -> Path:
        return self.root / "personal.pt"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.json"

    @property
    def noise_secret_path(self) -> Path:
        return self.root / "noise_secret.bin"

    @property
    def contributions_path(self) -> Path:
        return self.root / "contributions.json"

    @property
    def replay_path(self) -> Path:
        return self.root / "replay.json"

    @property
    def personal_before_path(self) -> Path:
        return self.root / "personal_before.pt"

    def begin_round(self, round_id: int) -> None:
        """Keep the personal weights this round starts from (before training changes them)."""
        if self.personal_path.is_file():
            atomic_write_bytes(self.personal_before_path, self.personal_path.read_bytes())
        else:
            self.personal_before_path.unlink(missing_ok=True)
        atomic_write_bytes(self.replay_path, json.dumps({"round": round_id, "digest": ""}).encode())

    def sent_update(self, round_id: int, digest: str) -> None:
        """Record the digest of the update this round sends (before it leaves the device)."""
        atomic_write_bytes(self.replay_path, json.dumps({"round": round_id, "digest": digest}).encode())

    def replay(self, round_id: int) -> tuple[str, dict[str, torch.Tensor]] | None:
        """(digest, personal weights it started from) of ``round_id`` when it was the last round sent; None
        otherwise (or when anything is unreadable: the device then refuses, as without a record)."""
        try:
            doc = json.loads(self.replay_path.read_text())
            if doc.get("round") != round_id or not doc.get("digest"):
                return None
            before = (torch.load(self.personal_before_path, map_location="cpu", weights_only=True)
                      if self.personal_before_path.is_file() else {})  # {}: the round started from none
            return str(doc["digest"]), before
        except Exception:  # noqa: BLE001 - a missing or corrupt record only means: no replay
            return None

    def contributed_rounds(self) -> set[int]:
        """Rounds this device already sent a user-level noisy delta for (never send a second one)."""
        if not self.contributions_path.is_file():
            return set()
        try:
            return {int(r) for r in json.loads(self.contributions_path.read_text())["rounds"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"{self.contributions_path}: unreadable contribution record ({exc})") from exc

    def record_contribution(self, round_id: int) -> None:
        rounds = sorted(self.contributed_rounds() | {round_id})
        atomic_write_bytes(self.contributions_path, json.dumps({"rounds": rounds}).encode())

    def noise_seed(self, round_id: int) -> int:
        """A per-round seed for DP noise and Poisson sampling derived from a secret that never leaves the
        device (32 bytes from os.urandom, made on first use): nobody else can regenerate the noise."""
        if not self.noise_secret_path.is_file():
            atomic_write_bytes(self.noise_secret_path, os.urandom(NOISE_SECRET_BYTES), mode=0o600)
        secret = self.noise_secret_path.read_bytes()
        digest = hashlib.sha256(secret + round_id.to_bytes(8, "little", signed=True)).digest()
        return int.from_bytes(digest[:8], "little") >> 1  # a non-negative int64 for torch.Generator

    def load_personal(self) -> dict[str, torch.Tensor] | None:
        if not self.personal_path.is_file():
            return None
        try:
            return torch.load(self.personal_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt files
            raise RuntimeError(f"{self.personal_path}: cannot read personal state ({exc})") from exc

    def save_personal(self, state: dict[str, torch.Tensor]) -> None:
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, buf)
        atomic_write_bytes(self.personal_path, buf.getvalue())

    def ledger(self, privacy: PrivacyConfig, *, delta: float) -> PrivacyLedger:
        """Open (or create) the ledger; a mismatched stored delta/unit/accountant is an error."""
        return PrivacyLedger.open(self.ledger_path, accountant=privacy.accountant, delta=delta,
                                  unit=DEVICE_LEDGER_UNIT, target_epsilon=privacy.target_epsilon)
