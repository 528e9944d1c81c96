"""A real OCI registry on 127.0.0.1 for the tests: CNCF distribution (Debian's `docker-registry`).

One registry per test session, storage in a temporary folder. Its access log (one
combined-format line per request) is how tests see which requests reached it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BINARY = "docker-registry"
_ACCESS = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3}) (\d+|-)')


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int
    bytes: int


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    storage: Path
    log: Path
    process: subprocess.Popen
    ca: Path | None = None  # the CA that signed its certificate, when it speaks TLS

    @property
    def env(self) -> dict[str, str]:
        if self.ca is not None:
            return {"MODELCACHE_CA_BUNDLE": str(self.ca)}
        return {"MODELCACHE_INSECURE_REGISTRIES": self.host}

    def ref(self, repo: str, tag: str = "v1") -> str:
        return f"oci://{self.host}/{repo}:{tag}"

    def url(self, path: str) -> str:
        return f"{'https' if self.ca else 'http'}://{self.host}{path}"

    def mark(self) -> int:
        """Where the access log ends now: requests() after this mark are the new ones."""
        time.sleep(0.2)  # the registry writes a line after the response went out
        return self.log.stat().st_size

    def requests(self, since: int = 0) -> list[Request]:
        time.sleep(0.2)
        with open(self.log, "rb") as fh:
            fh.seek(since)
            text = fh.read().decode("utf-8", "replace")
        return [
            Request(m[1], m[2], int(m[3]), 0 if m[4] == "-" else int(m[4]))
            for line in text.splitlines()
            if (m := _ACCESS.search(line))
        ]

    def blob_data(self, digest: str) -> Path:
        hexa = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexa[:2] / hexa / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ca_and_certificate(workdir: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelcache test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (workdir / "ca.pem", workdir / "server.pem", workdir / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class TokenServer:
    """A token service for the registry's bearer auth (Docker's token protocol), on 127.0.0.1:
    grants what is asked, with tokens that expire ``lifetime`` seconds after they are issued."""

    def __init__(self, workdir: Path, lifetime: float) -> None:
        import datetime
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelcache test token issuer")])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = workdir / "token-issuer.pem"
        self.bundle.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self.lifetime = lifetime
        self.issued = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlsplit

                query = parse_qs(urlsplit(self.path).query)
                body = json.dumps({"token": server.token(query.get("scope", [""])[0])}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/token"

    def token(self, scope: str) -> str:
        import base64
        import uuid

        import jwt
        from cryptography.hazmat.primitives import serialization

        access = []
        if scope.startswith("repository:"):
            _, name, actions = scope.split(":", 2)
            access.append({"type": "repository", "name": name, "actions": actions.split(",")})
        # distribution accepts a token up to 60 s past its exp: exp is set so that it lapses
        # ``lifetime`` seconds from now
        now = int(time.time())
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": "ci-bot",
            "aud": TOKEN_SERVICE,
            "iat": now - 1,
            "nbf": now - 1,
            "exp": now - 60 + int(self.lifetime),
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        self.issued += 1
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"x5c": [base64.b64encode(der).decode()]})

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


TOKEN_ISSUER = "modelcache-test-issuer"
TOKEN_SERVICE = "modelcache-test-registry"


def start_registry(
    workdir: Path, *, tls: bool = False, users: dict[str, str] | None = None, tokens: TokenServer | None = None
) -> Registry:
    """``tls``: https with a certificate from a private CA; ``users``: htpasswd (basic) auth;
    ``tokens``: bearer auth with tokens from that token server."""
    binary = shutil.which(BINARY)
    if binary is None:
        raise FileNotFoundError(BINARY)
    port = _free_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True)
    config = workdir / "config.yml"
    text = (
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    ca = None
    if tls:
        ca, certificate, key = make_ca_and_certificate(workdir)
        text += f"  tls:\n    certificate: {certificate}\n    key: {key}\n"
    if users:
        import bcrypt

        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(
            "".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode()}\n" for u, p in users.items())
        )
        text += f"auth:\n  htpasswd:\n    realm: modelcache-test\n    path: {htpasswd}\n"
    if tokens is not None:
        text += (
            f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {TOKEN_SERVICE}\n"
            f"    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {tokens.bundle}\n"
        )
    config.write_text(text)
    log = workdir / "registry.log"
    out = open(log, "wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    registry = Registry(f"127.0.0.1:{port}", storage, log, process, ca)
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{BINARY} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(registry.url("/v2/"), timeout=1, context=context) as response:
                if response.status == 200:
                    return registry
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and (users or tokens):  # up, and asking for credentials
                return registry
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{BINARY} did not answer GET /v2/ within 20s: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def require_binary() -> None:
    if shutil.which(BINARY) is None:
        reason = f"`{BINARY}` (CNCF distribution) is not installed: apt-get install docker-registry"
        if os.environ.get("MODELCACHE_REQUIRE_REGISTRY") == "1":
            pytest.fail(reason + " (MODELCACHE_REQUIRE_REGISTRY=1)")
        pytest.skip(reason)


def _stop(reg: Registry) -> None:
    reg.process.terminate()
    try:
        reg.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        reg.process.kill()
        reg.process.wait()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A running registry on 127.0.0.1 (skipped without the binary, unless MODELCACHE_REQUIRE_REGISTRY=1)."""
    require_binary()
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        _stop(reg)


USERS = {"ci-bot": "s3cret-pa55word"}


@pytest.fixture(scope="session")
def secure_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry as sites run them: https with a private CA's certificate, htpasswd accounts (USERS)."""
    require_binary()
    reg = start_registry(tmp_path_factory.mktemp("secure-registry"), tls=True, users=USERS)
    try:
        yield reg
    finally:
        _stop(reg)
