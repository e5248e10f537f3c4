"""Key material of one deployment: :func:`init_keys` and its loaders.

Layout written by ``init_keys(out_dir, device_ids=[...], he=cfg)``::

    out_dir/
      manifest.json                       public: format version, device ids,
                                          HEConfig, CKKS context fingerprint (hex)
      server/                             0700
        ckks_public.tenseal               CKKS context WITHOUT secret key
                                          (ts.context_from(...).is_private() is False)
        signing_ed25519.pem               server Ed25519 private key, 0600
        signing_ed25519.pub.pem
        devices/<id>.signing_ed25519.pub.pem   device verification keys
      clients/                            0700
        ckks_secret.tenseal               CKKS context WITH secret key, 0600
                                          (shared by all devices; distribution copy)
        server_signing_ed25519.pub.pem    server verification key
        <id>/                             0700, one per device
          ckks_secret.sealed              the secret context sealed to this
                                          device's X25519 key (AAD "ckks-secret:<id>")
          signing_ed25519.pem 0600 / signing_ed25519.pub.pem
          x25519.pem 0600 / x25519.pub.pem

Private files are 0600 and private directories 0700.  A device needs only
``clients/<id>/`` plus the server's public key; ``load_device_keys`` opens the
sealed copy of the context, never the shared plain copy.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from pathlib import Path

import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import keys
from .context import (context_fingerprint, load_context, make_secret_context,
                      public_context_bytes, secret_context_bytes)
from .he_config import HEConfig

LAYOUT_VERSION = 1
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class KeyLayout:
    """Paths of the files written by :func:`init_keys`."""

    root: Path
    device_ids: tuple[str, ...]

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    @property
    def clients_dir(self) -> Path:
        return self.root / "clients"

    @property
    def server_public_context(self) -> Path:
        return self.server_dir / "ckks_public.tenseal"

    @property
    def clients_secret_context(self) -> Path:
        return self.clients_dir / "ckks_secret.tenseal"

    def device_dir(self, device_id: str) -> Path:
        return self.clients_dir / _path_safe(device_id)

    def device_verify_key(self, device_id: str) -> Path:
        return self.server_dir / "devices" / f"{_path_safe(device_id)}.signing_ed25519.pub.pem"


@dataclasses.dataclass
class ServerKeys:
    context: ts.Context                      # public: no secret key
    signing_key: Ed25519PrivateKey
    device_verify_keys: dict[str, Ed25519PublicKey]
    he: HEConfig
    context_fingerprint: bytes


@dataclasses.dataclass
class DeviceKeys:
    device_id: str
    context: ts.Context                      # private: holds the CKKS secret key
    signing_key: Ed25519PrivateKey
    x25519_key: X25519PrivateKey
    server_verify_key: Ed25519PublicKey
    he: HEConfig
    context_fingerprint: bytes


def _path_safe(device_id: str) -> str:
    """A device id that may name a file (an edited manifest must not lead outside the key folder)."""
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
        raise ValueError(f"invalid device id {device_id!r} (use [A-Za-z0-9_.-], max 64 chars)")
    return device_id


def _check_device_ids(device_ids: list[str]) -> tuple[str, ...]:
    ids = tuple(device_ids)
    if not ids:
        raise ValueError("device_ids must not be empty")
    for dev in ids:
        if not isinstance(dev, str) or not _DEVICE_ID.fullmatch(dev):
            raise ValueError(f"device_ids: invalid id {dev!r} (use [A-Za-z0-9_.-], max 64 chars)")
    if len(set(ids)) != len(ids):
        raise ValueError("device_ids contains duplicates")
    return ids


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _sealed_aad(device_id: str) -> bytes:
    return b"ckks-secret:" + device_id.encode()


def init_keys(out_dir: str | os.PathLike, *, device_ids: list[str], he: HEConfig,
              overwrite: bool = False) -> KeyLayout:
    """Create all key material; refuses to overwrite an existing key set."""
    layout = KeyLayout(Path(out_dir), _check_device_ids(device_ids))
    if layout.manifest.exists() and not overwrite:
        raise FileExistsError(f"{layout.manifest} exists; pass overwrite=True to replace the keys")
    ctx = make_secret_context(he)
    secret_blob = secret_context_bytes(ctx)
    for d in (layout.server_dir, layout.server_dir / "devices", layout.clients_dir):
        _private_dir(d)
    keys.write_public_file(layout.server_public_context, public_context_bytes(ctx))
    keys.write_private_file(layout.clients_secret_context, secret_blob)
    server_sk = keys.generate_signing_key()
    keys.save_private_key(server_sk, layout.server_dir / "signing_ed25519.pem")
    keys.save_public_key(server_sk.public_key(), layout.server_dir / "signing_ed25519.pub.pem")
    keys.save_public_key(server_sk.public_key(), layout.clients_dir / "server_signing_ed25519.pub.pem")
    for dev in layout.device_ids:
        ddir = layout.device_dir(dev)
        _private_dir(ddir)
        sign_sk, box_sk = keys.generate_signing_key(), keys.generate_x25519_key()
        keys.save_private_key(sign_sk, ddir / "signing_ed25519.pem")
        keys.save_public_key(sign_sk.public_key(), ddir / "signing_ed25519.pub.pem")
        keys.save_public_key(sign_sk.public_key(), layout.device_verify_key(dev))
        keys.save_private_key(box_sk, ddir / "x25519.pem")
        keys.save_public_key(box_sk.public_key(), ddir / "x25519.pub.pem")
        sealed = keys.seal_secret(secret_blob, box_sk.public_key(), associated_data=_sealed_aad(dev))
        keys.write_private_file(ddir / "ckks_secret.sealed", sealed)
    manifest = {"version": LAYOUT_VERSION, "device_ids": list(layout.device_ids),
                "he": he.to_dict(), "context_fingerprint": context_fingerprint(ctx).hex()}
    keys.write_public_file(layout.manifest, json.dumps(manifest, indent=2).encode())
    return layout


def _read_manifest(root: Path) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    if manifest.get("version") != LAYOUT_VERSION:
        raise ValueError(f"unsupported key layout version {manifest.get('version')!r}")
    return manifest


def load_server_keys(out_dir: str | os.PathLike, *, n_threads: int | None = None) -> ServerKeys:
    """Server view: public CKKS context, server signing key, device verify keys."""
    root = Path(out_dir)
    manifest = _read_manifest(root)
    layout = KeyLayout(root, tuple(manifest["device_ids"]))
    ctx = load_context(layout.server_public_context.read_bytes(), n_threads=n_threads)
    if ctx.is_private():
        raise ValueError("server CKKS context must not hold the secret key")
    fingerprint = context_fingerprint(ctx)
    if fingerprint.hex() != manifest["context_fingerprint"]:
        raise ValueError("server CKKS context does not match the manifest fingerprint")
    verify = {dev: keys.load_public_key(layout.device_verify_key(dev), Ed25519PublicKey)
              for dev in layout.device_ids}
    sk = keys.load_private_key(layout.server_dir / "signing_ed25519.pem", Ed25519PrivateKey)
    return ServerKeys(ctx, sk, verify, HEConfig.from_mapping(manifest["he"]), fingerprint)


@functools.lru_cache(maxsize=2)
def _parsed_context(blob: bytes, n_threads: int | None) -> tuple[ts.Context, bytes]:
    """(context, fingerprint) of an unsealed secret-context blob, parsed once per process.

    Every device of a key set unseals its own copy (so a device without its X25519 key still gets nothing),
    but the copies are the same bytes; a simulation process hosting many devices parses them once instead
    of once per device (SEAL deserialisation + fingerprint: ~5 ms). The context is only read afterwards."""
    ctx = load_context(blob, n_threads=n_threads)
    return ctx, context_fingerprint(ctx)


def device_key_digest(out_dir: str | os.PathLike, device_id: str) -> str:
    """Hex SHA-256 naming one device's key files as they are now: the manifest (whose context fingerprint is
    new with every key set) and the device's private key files. A cache of loaded keys keyed on it follows a
    key set replaced under the same path (a fresh run's new keys) instead of serving the old one."""
    root = Path(out_dir)
    ddir = root / "clients" / _path_safe(device_id)
    digest = hashlib.sha256()
    for path in (root / "manifest.json", ddir / "signing_ed25519.pem", ddir / "x25519.pem"):
        try:
            digest.update(path.read_bytes())
        except FileNotFoundError:
            digest.update(b"\0missing:" + path.name.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def load_device_keys(out_dir: str | os.PathLike, device_id: str, *,
                     n_threads: int | None = None) -> DeviceKeys:
    """Device view: opens its sealed secret context with its X25519 key."""
    root = Path(out_dir)
    manifest = _read_manifest(root)
    if device_id not in manifest["device_ids"]:
        raise KeyError(f"unknown device_id {device_id!r}")
    ddir = KeyLayout(root, tuple(manifest["device_ids"])).device_dir(device_id)
    box_sk = keys.load_private_key(ddir / "x25519.pem", X25519PrivateKey)
    blob = keys.open_sealed((ddir / "ckks_secret.sealed").read_bytes(), box_sk,
                            associated_data=_sealed_aad(device_id))
    ctx, fingerprint = _parsed_context(blob, n_threads)
    if not ctx.is_private() or fingerprint.hex() != manifest["context_fingerprint"]:
        raise ValueError("device CKKS context is not the private context of this key set")
    return DeviceKeys(device_id, ctx, keys.load_private_key(ddir / "signing_ed25519.pem", Ed25519PrivateKey),
                      box_sk, keys.load_public_key(root / "clients" / "server_signing_ed25519.pub.pem",
                                                   Ed25519PublicKey),
                      HEConfig.from_mapping(manifest["he"]), fingerprint)
