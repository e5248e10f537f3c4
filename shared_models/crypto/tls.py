"""Deployment transport keys: a TLS CA, the SuperLink's certificate, and SuperNode authentication keys.

Written by :func:`init_deploy_keys` (all with ``cryptography``; no openssl/ssh-keygen needed)::

    out_dir/
      tls/                       0700
        ca.crt                   self-signed CA (EC P-384); give it to every SuperNode and `flwr` client
        ca.key                   0600, stays with whoever issues certificates
        server.pem               SuperLink certificate signed by the CA; SAN = localhost, 127.0.0.1, hosts
        server.key               0600, stays on the SuperLink
      supernodes/                0700
        <id>.key                 0600, OpenSSH EC P-384 private key: `flower-supernode --auth-supernode-private-key`
        <id>.pub                 OpenSSH public key: `flwr supernode register supernodes/<id>.pub <connection>`

These keys authenticate the transport (who may connect); the CKKS/Ed25519 keys of ``keystore.py`` protect the
model updates themselves. Both are needed in a deployment.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import keys

CURVE = ec.SECP384R1  # a NIST curve, as Flower's SuperNode authentication requires
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class DeployLayout:
    """Paths written by :func:`init_deploy_keys`."""

    root: Path
    device_ids: tuple[str, ...]

    @property
    def ca_cert(self) -> Path:
        return self.root / "tls" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "tls" / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "tls" / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "tls" / "server.key"

    def supernode_key(self, device_id: str) -> Path:
        return self.root / "supernodes" / f"{device_id}.key"

    def supernode_pub(self, device_id: str) -> Path:
        return self.root / "supernodes" / f"{device_id}.pub"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedinterest"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(*, days: int = 3650, common_name: str = "fedinterest deployment CA"
            ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA certificate (may sign, path length 0)."""
    key = ec.generate_private_key(CURVE())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))
    return key, cert


def san_entries(hosts: list[str] | tuple[str, ...]) -> list[x509.GeneralName]:
    """localhost, 127.0.0.1 and every host: IP addresses as IPAddress, names as DNSName (deduplicated)."""
    out: list[x509.GeneralName] = []
    for host in dict.fromkeys([*DEFAULT_HOSTS, *hosts]):
        host = host.strip()
        if not host:
            raise ValueError("hosts: empty host name")
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def make_server_cert(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, hosts: list[str] | tuple[str, ...],
                     *, days: int = 825) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The SuperLink's TLS server certificate, signed by the CA, valid for ``hosts``."""
    key = ec.generate_private_key(CURVE())
    now = dt.datetime.now(dt.timezone.utc)
    sans = san_entries(hosts)
    cert = (x509.CertificateBuilder().subject_name(_name(str(hosts[0]) if hosts else "localhost"))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    return key, cert


def make_supernode_key() -> tuple[bytes, bytes]:
    """(OpenSSH private key, OpenSSH public key line) of a fresh EC P-384 SuperNode authentication key."""
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b"\n"


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _check_ids(device_ids: list[str]) -> tuple[str, ...]:
    bad = [d for d in device_ids if not isinstance(d, str) or not _ID.match(d)]
    if bad:
        raise ValueError(f"device_ids: invalid id {bad[0]!r} (use [A-Za-z0-9_.-], max 64 chars)")
    if len(set(device_ids)) != len(device_ids):
        raise ValueError("device_ids contains duplicates")
    return tuple(device_ids)


def init_deploy_keys(out_dir: str | os.PathLike, *, device_ids: list[str], hosts: list[str] | tuple[str, ...] = (),
                     overwrite: bool = False) -> DeployLayout:
    """Write the CA, the SuperLink certificate (SAN: localhost, 127.0.0.1, ``hosts``) and one SuperNode
    key pair per device; refuses to replace an existing CA unless ``overwrite``."""
    layout = DeployLayout(Path(out_dir), _check_ids(list(device_ids)))
    if layout.ca_cert.exists() and not overwrite:
        raise FileExistsError(f"{layout.ca_cert} exists; pass overwrite=True to replace the deployment keys")
    for d in (layout.root, layout.root / "tls", layout.root / "supernodes"):
        _private_dir(d)
    ca_key, ca_cert = make_ca()
    server_key, server_cert = make_server_cert(ca_key, ca_cert, list(hosts))
    keys.write_private_file(layout.ca_key, _pem_key(ca_key))
    keys.write_public_file(layout.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    keys.write_private_file(layout.server_key, _pem_key(server_key))
    keys.write_public_file(layout.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    for dev in layout.device_ids:
        private, public = make_supernode_key()
        keys.write_private_file(layout.supernode_key(dev), private)
        keys.write_public_file(layout.supernode_pub(dev), public)
    return layout
