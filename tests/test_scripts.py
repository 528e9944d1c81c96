"""The bash scripts in scripts/: their --help, their option errors, and verify-volume on a real engine.

`--help` must print the script's own usage and run nothing: the tests put stand-ins for
docker, curl and mmdebstrap first on PATH that record any call. The verify-volume tests
need a Docker engine (marker `docker`): skipped without one, unless
MODELCACHE_REQUIRE_DOCKER=1, where that is a failure (as in tests/stack/).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.docker import docker_unavailable

SCRIPTS = ROOT / "scripts"
BASH_SCRIPTS = sorted(p.name for p in SCRIPTS.iterdir() if p.is_file() and "bash" in p.read_text().split("\n", 1)[0])
# scripts/test forwards every other argument to pytest, so it has no "unknown option"
WITH_OPTION_ERRORS = [name for name in BASH_SCRIPTS if name != "test"]
DOWNLOADER_IMAGE = "modelcache-downloader:0.1.0"
NO_MODELS = {
    "MODELCACHE_WHISPER": "none",
    "MODELCACHE_TEXT_EMBEDDING": "none",
    "MODELCACHE_VISION": "none",
    "MODELCACHE_FACE": "none",
    "MODELCACHE_MLX": "",
}


def test_the_bash_scripts_are_the_expected_ones() -> None:
    # a new script should get a --help too (and a row here)
    expected = [
        "build-base-image",
        "build-fleet-images",
        "build-images",
        "lint",
        "reset-models-volume",
        "smoke-check",
        "test",
        "verify-volume",
    ]
    assert expected == BASH_SCRIPTS


@pytest.fixture
def stubs(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose docker, curl and mmdebstrap only record their calls (and fail)."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("docker", "curl", "mmdebstrap"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexit 99\n')
        stub.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, log


def run(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPTS / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else dict(os.environ),
    )


def calls(log: Path) -> str:
    return log.read_text() if log.exists() else ""


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize(
    # scripts/test --help also runs pytest --help: seconds
    "name",
    [pytest.param(name, marks=pytest.mark.slow) if name == "test" else name for name in BASH_SCRIPTS],
)
def test_help_prints_the_usage_and_runs_nothing(name: str, flag: str, stubs: tuple[dict[str, str], Path]) -> None:
    env, log = stubs
    result = run(name, flag, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"Usage: scripts/{name} "), result.stdout[:200]
    usage = result.stdout.split("\n--- pytest", 1)[0]  # scripts/test appends pytest's own options
    assert "Exit codes" in usage and "nvironment" in usage
    assert calls(log) == ""  # no docker, curl or mmdebstrap
    if name != "test":
        assert result.stderr == ""


# --help among the script's own arguments still only prints the usage
HELP_AMONG = {
    "build-base-image": ["some/tag:1", "--help"],
    "build-fleet-images": ["extra", "--help"],
    "build-images": ["--offline", "--help"],
    "lint": ["--fix", "--help"],
    "reset-models-volume": ["--yes", "--help", "--", "-f", "docker-compose.yml"],
    "smoke-check": ["http://127.0.0.1:9", "-h"],
    "verify-volume": ["-h", "--", "-f", "docker-compose.yml"],
}


@pytest.mark.parametrize("name", WITH_OPTION_ERRORS)
def test_help_among_other_arguments(name: str, stubs: tuple[dict[str, str], Path]) -> None:
    env, log = stubs
    result = run(name, *HELP_AMONG[name], env=env)
    assert result.returncode == 0 and result.stdout.startswith(f"Usage: scripts/{name} "), result.stderr
    assert calls(log) == ""


@pytest.mark.parametrize("name", WITH_OPTION_ERRORS)
def test_an_unknown_option_is_a_usage_error(name: str, stubs: tuple[dict[str, str], Path]) -> None:
    env, log = stubs
    result = run(name, "--no-such-option", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "--no-such-option" in lines[0] and "--help" in lines[0], result.stderr
    assert calls(log) == ""


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("build-base-image", ["one/tag:1", "two/tag:2"]),
        ("smoke-check", ["http://127.0.0.1:9", "http://127.0.0.1:10"]),
        ("verify-volume", ["-f", "docker-compose.yml"]),  # compose options only after --
    ],
)
def test_extra_arguments_are_a_usage_error(name: str, args: list[str], stubs: tuple[dict[str, str], Path]) -> None:
    env, log = stubs
    result = run(name, *args, env=env)
    assert result.returncode == 2 and "--help" in result.stderr, result.stdout + result.stderr
    assert calls(log) == ""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args", [["--help"], ["URL", "--help"], ["-h", "URL"]])
def test_smoke_check_help_sends_no_request(args: list[str]) -> None:
    port = _closed_port()  # a request would fail: exit 1
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MODELCACHE_HOST_PORT": str(port)}
    result = run("smoke-check", *[url if a == "URL" else a for a in args], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Usage: scripts/smoke-check")
    assert result.stdout == run("smoke-check", "--help").stdout  # the usage and nothing else
    # and against a port that listens: no connection arrives at all
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        listening = f"http://127.0.0.1:{server.getsockname()[1]}"
        result = run(
            "smoke-check",
            *[listening if a == "URL" else a for a in args],
            env={**env, "MODELCACHE_HOST_PORT": str(server.getsockname()[1])},
        )
        assert result.returncode == 0
        with pytest.raises(BlockingIOError):
            server.accept()


def test_test_script_help_names_its_variables_and_makes_no_venv(tmp_path: Path) -> None:
    venv = tmp_path / "no-venv-here"
    result = run("test", "--help", env={**os.environ, "MODELCACHE_VENV": str(venv)})
    assert result.returncode == 0, result.stderr
    for word in ("MODELCACHE_VENV", "PYTHON", "MODELCACHE_REQUIRE_DOCKER", "pytest", "-m venv"):
        assert word in result.stdout
    assert not venv.exists()


@pytest.mark.slow  # runs pytest --help
def test_test_script_help_shows_pytest_options_when_the_venv_exists() -> None:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv")
    result = run("test", "-h", env={k: v for k, v in os.environ.items() if k != "MODELCACHE_VENV"})
    assert result.returncode == 0
    usage, _, pytest_help = result.stdout.partition("\n--- pytest --help ---\n")
    assert "Usage: scripts/test" in usage and "-p no:cacheprovider" in usage
    assert "--collect-only" in pytest_help


# --- verify-volume on a real engine ---------------------------------------------------------


def _require(reason: str | None) -> None:
    if reason:
        if os.environ.get("MODELCACHE_REQUIRE_DOCKER") == "1":
            pytest.fail(f"required here but cannot run: {reason}")
        pytest.skip(reason)


def _names(kind: str) -> set[str]:
    out = subprocess.run(["docker", kind, "ls", "--format", "{{.Name}}"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def _project_objects(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    found = {}
    for kind, cmd in (("networks", ["network", "ls"]), ("containers", ["ps", "-a"]), ("volumes", ["volume", "ls"])):
        out = subprocess.run(["docker", *cmd, "-q", "--filter", label], capture_output=True, text=True, check=True)
        found[kind] = out.stdout.split()
    return found


@pytest.fixture
def project() -> Iterator[tuple[str, str, dict[str, str]]]:
    """A unique compose project and volume name, and the environment that selects them."""
    _require(docker_unavailable())
    name = f"mcscripts{uuid.uuid4().hex[:8]}"
    volume = f"{name}-models"
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": name,
        "MODELCACHE_VOLUME": volume,
        "MODELCACHE_DOWNLOADER_IMAGE": DOWNLOADER_IMAGE,
    }
    try:
        yield name, volume, env
    finally:  # only what carries this test's unique name
        objects = _project_objects(name)
        if objects["containers"]:
            subprocess.run(["docker", "rm", "-f", *objects["containers"]], capture_output=True)
        if objects["networks"]:
            subprocess.run(["docker", "network", "rm", *objects["networks"]], capture_output=True)
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)


def test_verify_volume_without_an_engine_is_not_a_missing_volume(tmp_path: Path) -> None:
    compose = shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True)
    if not compose or compose.returncode != 0:
        pytest.skip("no docker CLI with the compose plugin")
    volume = "mcscripts-unreachable"
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "MODELCACHE_VOLUME": volume}
    result = run("verify-volume", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot inspect the volume '{volume}'" in result.stderr and "does not exist" not in result.stderr


@pytest.mark.docker
@pytest.mark.slow  # Docker containers
def test_verify_volume_creates_nothing_when_the_volume_is_missing(project: tuple[str, str, dict[str, str]]) -> None:
    name, volume, env = project
    volumes_before, networks_before = _names("volume"), _names("network")
    result = run("verify-volume", env=env, timeout=120)
    assert result.returncode == 4, result.stdout + result.stderr
    message = result.stdout + result.stderr
    assert f"'{volume}' does not exist" in message
    assert "docker compose up --wait" in message and "docker compose run --rm model-downloader" in message
    assert volume not in _names("volume") - volumes_before
    assert subprocess.run(["docker", "volume", "inspect", volume], capture_output=True).returncode != 0
    new_networks = _names("network") - networks_before  # other projects may come and go meanwhile
    assert not [n for n in new_networks if n.startswith(name)], new_networks
    assert _project_objects(name) == {"networks": [], "containers": [], "volumes": []}


@pytest.mark.docker
@pytest.mark.slow  # Docker containers
def test_verify_volume_checks_a_filled_volume(project: tuple[str, str, dict[str, str]], tmp_path: Path) -> None:
    name, volume, env = project
    if subprocess.run(["docker", "image", "inspect", DOWNLOADER_IMAGE], capture_output=True).returncode != 0:
        _require(f"image {DOWNLOADER_IMAGE} is not built (scripts/build-images)")
    # a volume with nothing configured: the downloader writes an empty lock, offline
    subprocess.run(["docker", "volume", "create", volume], capture_output=True, check=True)
    fill = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            f"{volume}:/models",
            *[a for k, v in NO_MODELS.items() for a in ("-e", f"{k}={v}")],
            DOWNLOADER_IMAGE,
            "fetch",
            "--plain",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fill.returncode == 0 and "lock written" in fill.stdout + fill.stderr, fill.stdout + fill.stderr
    networks_before = _names("network")

    # the downloader's environment comes from the compose configuration, overrides included
    def override(extra: dict[str, str]) -> Path:
        path = tmp_path / f"override-{len(extra)}.yml"
        path.write_text(json.dumps({"services": {"model-downloader": {"environment": {**NO_MODELS, **extra}}}}))
        return path

    nothing = override({})
    ok = run("verify-volume", "--", "-f", "docker-compose.yml", "-f", str(nothing), env=env, timeout=180)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().endswith("OK") and "deep (sha256)" in ok.stdout

    with_face = override({"MODELCACHE_FACE": "yunet"})  # configured, but not in the volume: drift
    drift = run("verify-volume", "--", "-f", "docker-compose.yml", "-f", str(with_face), env=env, timeout=180)
    assert drift.returncode == 4, drift.stdout + drift.stderr
    assert "PROBLEM" in drift.stdout and "face_detection_yunet" in drift.stdout and "drift" in drift.stdout

    new_networks = _names("network") - networks_before
    assert not [n for n in new_networks if n.startswith(name)], new_networks
    assert _project_objects(name)["networks"] == [] and _project_objects(name)["containers"] == []


def test_registry_credentials_and_trust_reach_only_the_downloader(tmp_path: Path) -> None:
    """The compose file's registry variant: the Docker config, the registry's CA and the trust
    key are secrets of the downloader; the service sees none of them."""
    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode
    ):
        _require("no docker compose v2")
    auth = tmp_path / "config.json"
    auth.write_text('{"auths": {"registry.lan:5000": {"auth": "dXNlcjpwYXNz"}}}')
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(auth), "COMPOSE_PROFILES": "cpu"}
    out = subprocess.run(
        ["docker", "compose", "config", "--format", "json"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    downloader, service = config["services"]["model-downloader"], config["services"]["model-service"]
    assert downloader["environment"]["DOCKER_CONFIG"] == "/run/secrets/docker"
    mounted = {s["source"]: s.get("target", s["source"]) for s in downloader["secrets"]}
    assert mounted["registry_auth"] == "docker/config.json"
    assert {"registry_ca", "trust_key"} <= set(mounted)
    assert config["secrets"]["registry_auth"]["file"] == str(auth)
    assert not [s for s in service.get("secrets", []) if s["source"] in ("registry_auth", "registry_ca", "trust_key")]
    assert "DOCKER_CONFIG" not in (service.get("environment") or {})


# scripts/realtime-client is Python (argparse), not bash: its --help and usage errors, checked
# here as the bash scripts' are; a real session with it is in tests/service/test_realtime.py
@pytest.mark.parametrize("args", [["--help"], ["-h"], ["speech.wav", "--speed", "2", "--help"]])
def test_realtime_client_help_prints_the_usage(args: list[str]) -> None:
    result = run("realtime-client", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: realtime-client")
    for word in ("--url", "--key-file", "--manual", "--speed", "--chunk-ms", "input_audio_buffer.append"):
        assert word in result.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--no-such-option", "speech.wav"], "--no-such-option"),
        ([], "wav"),
        (["speech.wav", "--chunk-ms", "5"], "--chunk-ms must be 20 to 100"),
        (["speech.wav", "--speed", "-1"], "--speed must be 0"),
    ],
)
def test_realtime_client_usage_errors(args: list[str], said: str) -> None:
    result = run("realtime-client", *args)
    assert result.returncode == 2 and said in result.stderr.splitlines()[-1], result.stderr


def test_realtime_client_names_a_missing_file(tmp_path: Path) -> None:
    result = run("realtime-client", str(tmp_path / "none.wav"), "--url", "ws://127.0.0.1:9/v1/realtime")
    assert result.returncode == 1 and result.stderr.strip() == f"realtime-client: no such file: {tmp_path / 'none.wav'}"
