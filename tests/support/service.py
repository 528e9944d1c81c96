"""Service fixtures (a pytest plugin, see tests/conftest.py): real `modelcache serve`
processes on 127.0.0.1 over volumes the project's own downloader filled from the loopback mirror."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from modelcache.fetch import run_fetch
from modelcache.progress import PlainReporter
from modelcache.settings import Settings
from tests.conftest import (
    ROOT,
    SENTENCE,  # noqa: F401  (re-exported for the tests)
    _cli_env,
)
from tests.support.fixtures import MirrorModels

ADMIN_KEY = "admin-key-for-tests"  # start_service turns model control on with it (see below)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    proc: subprocess.Popen
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def admin(self, path: str, **kwargs) -> httpx2.Response:
        """POST /admin/<path> with the admin key start_service gave it."""
        return httpx2.post(f"{self.url}/admin/{path}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_service(env: dict[str, str], log: Path, *, prefix: list[str] | None = None, timeout: float = 180) -> Service:
    """Start `modelcache serve`, wait until /health/ready answers 200 (or the process exits).
    Model control is on, with ADMIN_KEY, unless ``env`` names MODELCACHE_ADMIN_KEY_FILE itself."""
    port = free_port()
    if "MODELCACHE_ADMIN_KEY_FILE" not in env:
        admin_key = log.with_name(log.name + ".admin-key")
        admin_key.write_text(ADMIN_KEY + "\n")
        env = {**env, "MODELCACHE_ADMIN_KEY_FILE": str(admin_key)}
    env = _cli_env({**env, "MODELCACHE_HOST": "127.0.0.1", "MODELCACHE_PORT": str(port)})
    cmd = [*(prefix or []), sys.executable, "-m", "modelcache", "serve"]
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    service = Service(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}:\n{service.output()}")
        try:
            if httpx2.get(f"{service.url}/health/ready", timeout=2).status_code == 200:
                return service
        except httpx2.HTTPError:
            pass
        time.sleep(0.2)
    service.stop()
    raise RuntimeError(f"the service was not ready in {timeout}s:\n{service.output()}")


def counter(service: Service, name: str, **labels: str) -> float:
    """The sum of a Prometheus counter's samples on /metrics whose labels include ``labels``."""
    total = 0.0
    for line in httpx2.get(f"{service.url}/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_serve(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `modelcache serve` expecting it to exit (the fail-fast cases)."""
    return subprocess.run(
        [sys.executable, "-m", "modelcache", "serve"],
        env=_cli_env({**env, "MODELCACHE_HOST": "127.0.0.1", "MODELCACHE_PORT": str(free_port())}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def service_volume(_warm_template: Path, _mirror_models: MirrorModels) -> dict[str, str]:
    """The environment of the default plan's complete volume (openai-whisper engine)."""
    return _mirror_models.env(_warm_template)


@pytest.fixture(scope="session")
def faster_whisper_volume(tmp_path_factory: pytest.TempPathFactory, _mirror_models: MirrorModels) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fw") / "models"
    env = _mirror_models.env(
        root,
        MODELCACHE_ASR_ENGINE="faster-whisper",
        MODELCACHE_WHISPER_URL="",
        MODELCACHE_VISION="none",
        MODELCACHE_FACE="none",
        MODELCACHE_MLX="",
        MODELCACHE_TEXT_EMBEDDING="none",
    )
    run_fetch(Settings.from_env(env), reporter=PlainReporter())
    return env


@pytest.fixture(scope="session")
def server(service_volume: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_service(service_volume, tmp_path_factory.mktemp("logs") / "server.log")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def fw_server(faster_whisper_volume: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_service(faster_whisper_volume, tmp_path_factory.mktemp("logs") / "fw-server.log")
    yield service
    service.stop()


@pytest.fixture
def damaged(tmp_path: Path, _warm_template: Path, _mirror_models: MirrorModels) -> tuple[Path, dict[str, str]]:
    """A private copy of the complete volume (to damage) and its environment."""
    root = tmp_path / "models"
    subprocess.run(["cp", "-a", str(_warm_template), str(root)], check=True)
    return root, _mirror_models.env(root)


os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
