"""Deployment keys: the CA and SuperLink certificate work for a real TLS handshake; SuperNode keys are
OpenSSH EC keys on a NIST curve that Flower can parse; private files are 0600."""

from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from shared_models.crypto.tls import init_deploy_keys


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return init_deploy_keys(tmp_path_factory.mktemp("deploy"), device_ids=["u0", "u1"],
                            hosts=["fed.example.org", "10.1.2.3"])


def test_server_certificate_is_signed_by_the_ca_with_the_right_sans(layout):
    ca = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    srv = x509.load_pem_x509_certificate(layout.server_cert.read_bytes())
    srv.verify_directly_issued_by(ca)
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "fed.example.org"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.1.2.3"}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_supernode_keys_are_openssh_p384_pairs(layout):
    for dev in ("u0", "u1"):
        private = load_ssh_private_key(layout.supernode_key(dev).read_bytes(), None)
        public = load_ssh_public_key(layout.supernode_pub(dev).read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        assert public.public_numbers() == private.public_key().public_numbers()
        assert layout.supernode_pub(dev).read_text().startswith("ecdsa-sha2-nistp384 ")
    a, b = (load_ssh_public_key(layout.supernode_pub(d).read_bytes()).public_numbers() for d in ("u0", "u1"))
    assert a != b


def test_private_files_are_owner_only_and_overwrite_is_refused(layout):
    for path in (layout.ca_key, layout.server_key, layout.supernode_key("u0")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((layout.root / "supernodes").stat().st_mode) == 0o700
    with pytest.raises(FileExistsError, match="overwrite"):
        init_deploy_keys(layout.root, device_ids=["u0"])
    with pytest.raises(ValueError, match="invalid id"):
        init_deploy_keys(layout.root / "x", device_ids=["../evil"])


def _handshake(layout, hostname: str) -> bytes:
    """Serve one TLS connection with the SuperLink certificate; connect verifying against the CA."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(layout.server_cert, layout.server_key)
    client_ctx = ssl.create_default_context(cafile=str(layout.ca_cert))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass  # the client refused us

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    client_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                return tls.recv(2)
        finally:
            t.join(timeout=10)


@pytest.mark.parametrize("hostname", ["127.0.0.1", "localhost", "fed.example.org"])
def test_tls_handshake_verifies_against_the_ca(layout, hostname):
    assert _handshake(layout, hostname) == b"ok"


def test_a_hostname_outside_the_certificate_is_rejected(layout):
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(layout, "evil.example.org")
