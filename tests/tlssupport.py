"""Test certificates, made by the tests (``cryptography``), and SSL contexts built from them.

A throw-away CA signs a certificate for ``localhost``/127.0.0.1/::1; a second CA signs nothing
the server uses (a client trusting only it fails verification). EC keys: fast to generate. The
files live in a per-process temporary directory, removed at exit. No key is ever committed.
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import os
import shutil
import ssl
import tempfile
import threading
from typing import Dict, Optional

_DIR: Optional[str] = None
_PATHS: Dict[str, str] = {}
_LOCK = threading.Lock()


def _make() -> Dict[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    global _DIR
    _DIR = tempfile.mkdtemp(prefix="netloop-tls-")
    atexit.register(shutil.rmtree, _DIR, True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def ca(cn: str):  # type: ignore[no-untyped-def]
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                             False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return key, cert

    ca_key, ca_cert = ca("netloop test CA")
    _, other_ca_cert = ca("netloop other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost"))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {
        "ca": ca_cert.public_bytes(serialization.Encoding.PEM),
        "other_ca": other_ca_cert.public_bytes(serialization.Encoding.PEM),
        "cert": cert.public_bytes(serialization.Encoding.PEM),
        "key": pem_key(key),
    }
    paths = {}
    for label, data in files.items():
        path = os.path.join(_DIR, label + ".pem")
        with open(path, "wb") as f:
            f.write(data)
        paths[label] = path
    return paths


def paths() -> Dict[str, str]:
    """``{"ca", "other_ca", "cert", "key"}``: PEM files of this process's test PKI."""
    with _LOCK:  # client threads may ask first
        if not _PATHS:
            _PATHS.update(_make())
    return _PATHS


def server_context() -> ssl.SSLContext:
    p = paths()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(p["cert"], p["key"])
    return ctx


def client_context(trust: str = "ca") -> ssl.SSLContext:
    """A verifying client context trusting the test CA (``trust="other_ca"``: the wrong one)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(paths()[trust])
    return ctx
