"""A real OCI registry on 127.0.0.1 for the tests: CNCF distribution (Debian's `docker-registry`).

One registry per test session, storage in a temporary folder. Its access log (one
combined-format line per request) is how tests see which requests reached it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
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

    @property
    def env(self) -> dict[str, str]:
        return {"MODELCACHE_INSECURE_REGISTRIES": self.host}

    def ref(self, repo: str, tag: str = "v1") -> str:
        return f"oci://{self.host}/{repo}:{tag}"

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

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


def start_registry(workdir: Path) -> Registry:
    binary = shutil.which(BINARY)
    if binary is None:
        raise FileNotFoundError(BINARY)
    port = _free_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True)
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = workdir / "registry.log"
    out = open(log, "wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    registry = Registry(f"127.0.0.1:{port}", storage, log, process)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{BINARY} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(registry.url("/v2/"), timeout=1) as response:
                if response.status == 200:
                    return registry
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{BINARY} did not answer GET /v2/ within 20s: {log.read_text()[-2000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A running registry on 127.0.0.1 (skipped without the binary, unless MODELCACHE_REQUIRE_REGISTRY=1)."""
    if shutil.which(BINARY) is None:
        reason = f"`{BINARY}` (CNCF distribution) is not installed: apt-get install docker-registry"
        if os.environ.get("MODELCACHE_REQUIRE_REGISTRY") == "1":
            pytest.fail(reason + " (MODELCACHE_REQUIRE_REGISTRY=1)")
        pytest.skip(reason)
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        reg.process.terminate()
        try:
            reg.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            reg.process.kill()
            reg.process.wait()
