"""Smoke tests of the real Compose stack on a real Docker engine, through testcontainers.

An HF-compatible mirror runs as a container on the compose network, filled with real
all-MiniLM-L6-v2 weights, Whisper tiny.en (converted to an openai-whisper checkpoint), a
tiny SigLIP and a YuNet-shaped graph. The tests run in order, as an operator would:
first up, hardening checks, warm up, `down` keeping the volume, a damaged volume, reset
and re-download. Without a Docker engine (or the images) they are skipped with the reason,
unless MODELCACHE_REQUIRE_DOCKER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from onnxruntime.quantization import QuantType, quantize_dynamic

from modelcache.fetch.export import export_text_graph
from modelcache.testing import tiny_models
from tests.conftest import ROOT, SENTENCE
from tests.support import fixtures
from tests.support.docker import docker_unavailable
from tests.support.registry import require_binary
from tests.support.service import free_port
from tests.support.whisper_ckpt import wer

VERSION = "0.1.0"
IMAGES = (f"modelcache-downloader:{VERSION}", f"modelcache-service:{VERSION}")
pytestmark = [pytest.mark.docker, pytest.mark.slow]  # a real Compose stack


def _base_image() -> str:
    wanted = os.environ.get("BASE_IMAGE")
    if wanted:
        return wanted
    local = "local/python:3.11-bookworm"
    found = subprocess.run(["docker", "image", "inspect", local], capture_output=True).returncode == 0
    return local if found else "python:3.11-slim"


MINILM_WITH_GRAPH = "test-org/minilm-with-onnx"


def _mirror_root(base: Path) -> tuple[Path, str]:
    """models/<org>/<name>/ and files/ for the mirror container; returns the whisper URL path."""
    root = base / "mirror"
    repos = {
        fixtures.MINILM: fixtures.minilm_dir(),
        fixtures.SIGLIP: fixtures.siglip_repo(),
        fixtures.YUNET: fixtures.yunet_repo(),
        fixtures.TINY_BERT: tiny_models.tiny_bert_repo(fixtures.minilm_dir()),
        MINILM_WITH_GRAPH: fixtures.minilm_dir(),  # + onnx/model.onnx below, as on the Hub
    }
    for repo, content in repos.items():
        target = root / "models" / repo
        if isinstance(content, Path):
            shutil.copytree(content, target)
        else:
            tiny_models.write_repo(content, target)
    graphs = root / "models" / MINILM_WITH_GRAPH / "onnx"  # as sentence-transformers repos ship them
    graphs.mkdir()
    export_text_graph(fixtures.minilm_dir(), graphs / "model.onnx")
    quantize_dynamic(graphs / "model.onnx", graphs / "model_quint8_avx2.onnx", weight_type=QuantType.QUInt8)
    checkpoint = fixtures.openai_whisper_tiny_en(base)
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    dest = root / "files" / "whisper" / "models" / sha / "tiny.en.pt"
    dest.parent.mkdir(parents=True)
    shutil.copy(checkpoint, dest)
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    return root, f"whisper/models/{sha}/tiny.en.pt"


@dataclass
class Stack:
    compose: object  # testcontainers DockerCompose
    args: list[str]  # global options for `docker compose`
    port: int
    volume: str
    project: str = ""
    files_args: list[str] = field(default_factory=list)  # -f ... for each compose file
    env_args: list[str] = field(default_factory=list)  # --env-file ... for each env file

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cmd(self, *args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "compose", *self.args, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def up(self) -> float:
        started = time.monotonic()
        self.compose.start()  # `docker compose up --wait`
        return time.monotonic() - started

    def logs(self, service: str) -> str:
        out = self.cmd("logs", "--no-color", "--no-log-prefix", service)
        return out.stdout + out.stderr

    def mirror_gets(self) -> list[str]:
        return [line for line in self.logs("hf-mirror").splitlines() if line.startswith("GET ")]

    def downloader_exit_code(self) -> int:
        return self.compose.get_container("model-downloader", include_all=True).ExitCode

    def volume_exists(self) -> bool:
        return subprocess.run(["docker", "volume", "inspect", self.volume], capture_output=True).returncode == 0


TIMES: dict[str, float] = {}
# the monitoring profile's Prometheus: here built from Debian's package by scripts/build-fleet-images
PROMETHEUS_IMAGE = os.environ.get("MODELCACHE_PROMETHEUS_IMAGE", "local/prometheus:bookworm")
PROMETHEUS_PORT = free_port()
STACK_ADMIN_KEY = "stack-test-admin-key"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    reason = docker_unavailable(IMAGES)
    if reason:
        if os.environ.get("MODELCACHE_REQUIRE_DOCKER") == "1":
            pytest.fail(f"the stack tests are required here but cannot run: {reason}")
        pytest.skip(f"stack tests skipped: {reason}")
    from testcontainers.compose import DockerCompose

    base = Path(tempfile.mkdtemp(prefix="mc-stack-"))
    os.chmod(base, 0o755)
    mirror_root, whisper_path = _mirror_root(base)
    name = f"mctest{uuid.uuid4().hex[:8]}"
    port = free_port()
    token_env = base / "token.env"  # as if an operator had put a Hub token in .env
    token_env.write_text("HF_TOKEN=hf_stack_test_secret\nHUGGING_FACE_HUB_TOKEN=hf_stack_test_secret\n")
    admin_key = base / "admin_key"
    admin_key.write_text(STACK_ADMIN_KEY + "\n")
    os.chmod(admin_key, 0o644)  # read by the service's uid through the compose secret
    env_file = base / "test.env"
    env_file.write_text(
        "\n".join(
            [
                f"COMPOSE_PROJECT_NAME={name}",
                f"MODELCACHE_VOLUME={name}-models",
                "COMPOSE_PROFILES=cpu",
                f"BASE_IMAGE={_base_image()}",
                f"MIRROR_ROOT={mirror_root}",
                f"TEST_WHISPER_URL=http://hf-mirror:8080/{whisper_path}",
                "MODELCACHE_BIND=127.0.0.1",
                f"MODELCACHE_HOST_PORT={port}",
                "MODELCACHE_HEALTH_INTERVAL=1s",
                "MODELCACHE_START_PERIOD=180s",
                "MODELCACHE_MEM_LIMIT=4g",
                f"TEST_TOKEN_ENV={token_env}",
                f"ADMIN_KEY_FILE={admin_key}",
                f"MODELCACHE_PROMETHEUS_IMAGE={PROMETHEUS_IMAGE}",
                f"MODELCACHE_PROMETHEUS_PORT={PROMETHEUS_PORT}",
                "",
            ]
        )
    )
    files = ["docker-compose.yml", "tests/stack/compose.test.yml"]
    env_files = [".env", str(env_file)]
    compose = DockerCompose(
        ROOT, compose_file_name=files, env_file=env_files, pull=False, build=False, wait=True, keep_volumes=True
    )
    files_args = [a for f in files for a in ("-f", f)]
    env_args = [a for e in env_files for a in ("--env-file", e)]
    stack = Stack(compose, files_args + env_args, port, f"{name}-models", name, files_args, env_args)
    try:
        yield stack
    finally:
        # removed on purpose, at the very end: containers, network, and this test's volume
        stack.cmd(
            *("--profile", "cpu", "--profile", "registry", "--profile", "monitoring"),
            *("down", "--volumes", "--remove-orphans"),
            timeout=120,
        )
        shutil.rmtree(base, ignore_errors=True)
        print(f"\nstack timings: {json.dumps({k: round(v, 1) for k, v in TIMES.items()})}")


def _transcribe(stack: Stack, speech: bytes) -> str:
    response = httpx2.post(
        f"{stack.url}/v1/audio/transcriptions",
        files={"file": ("s.wav", speech)},
        data={"model": "whisper-1"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()["text"]


def test_first_up_downloads_then_serves(stack: Stack, speech) -> None:
    TIMES["first_up_s"] = stack.up()
    assert stack.downloader_exit_code() == 0
    assert "lock written" in stack.logs("model-downloader")
    gets = stack.mirror_gets()
    # the weights came the way huggingface.co sends them: a redirect, then the CDN host, no token there
    assert any("all-MiniLM-L6-v2/resolve/" in line and " 302 " in line and "role=hub" in line for line in gets)
    assert any("model.safetensors 200 " in line and "role=cdn auth=no" in line for line in gets), gets
    health = httpx2.get(f"{stack.url}/health", timeout=10).json()
    assert health["status"] == "ok"
    assert set(health["models_loaded"]) == {"whisper-tiny.en", fixtures.MINILM, fixtures.SIGLIP, "yunet"}
    embedding = httpx2.post(f"{stack.url}/v1/embeddings", json={"model": fixtures.MINILM, "input": "hello"}, timeout=60)
    assert embedding.status_code == 200 and len(embedding.json()["data"][0]["embedding"]) == 384
    assert wer(SENTENCE, _transcribe(stack, speech[0])) <= 0.3
    # Silero VAD from the image's own wheel (read-only root, no network), streamed answer
    streamed = httpx2.post(
        f"{stack.url}/v1/audio/transcriptions",
        files={"file": ("s.wav", speech[0])},
        data={"model": "whisper-1", "stream": "true", "chunking_strategy": "auto"},
        timeout=120,
    )
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "transcript.text.done", events
    assert wer(SENTENCE, events[-1]["text"]) <= 0.3


def test_service_container_is_locked_down(stack: Stack) -> None:
    def run(script: str) -> subprocess.CompletedProcess[str]:
        return stack.cmd("exec", "-T", "model-service", "sh", "-c", script)

    assert run("id -u").stdout.strip() == "10001"
    denied = run("touch /models/x")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    rootfs = run("touch /opt/venv/x")
    assert rootfs.returncode != 0 and "Read-only file system" in rootfs.stderr
    assert run("touch /tmp/x && echo ok").stdout.strip() == "ok"
    caps = run("grep CapEff /proc/self/status").stdout.split()
    assert caps[-1] == "0000000000000000"
    # a token in .env never reaches the service: not in its environment, nor in any of its processes
    assert "hf_stack_test_secret" not in stack.cmd("exec", "-T", "model-service", "env").stdout
    environ = run("cat /proc/[0-9]*/environ | tr '\\0' '\\n'").stdout
    assert "HF_HUB_OFFLINE=1" in environ and "hf_stack_test_secret" not in environ
    inspect = json.loads(
        subprocess.run(
            ["docker", "inspect", stack.compose.get_container("model-service").ID],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )[0]
    bindings = inspect["HostConfig"]["PortBindings"]["8000/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]  # published on loopback only


def test_second_up_is_warm(stack: Stack) -> None:
    before = len(stack.mirror_gets())
    TIMES["warm_up_s"] = stack.up()
    assert stack.downloader_exit_code() == 0
    assert "nothing to fetch" in stack.logs("model-downloader")
    assert len(stack.mirror_gets()) == before  # not one request
    assert httpx2.get(f"{stack.url}/health/ready", timeout=10).status_code == 200


def test_the_monitoring_profile_runs_prometheus_on_the_service(stack: Stack) -> None:
    """The real Prometheus of `--profile monitoring`, with docs/monitoring/prometheus.yml and
    its rules, scrapes the running service: the target is up, its metrics have values, and
    both rule groups evaluate without error."""
    if subprocess.run(["docker", "image", "inspect", PROMETHEUS_IMAGE], capture_output=True).returncode != 0:
        reason = f"{PROMETHEUS_IMAGE} is missing (scripts/build-fleet-images builds it)"
        if os.environ.get("MODELCACHE_REQUIRE_DOCKER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    started = time.monotonic()
    api = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1"
    try:
        up = stack.cmd("--profile", "monitoring", "up", "-d", "--wait", "prometheus", timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr

        def get(path: str, **params: str) -> dict:
            try:
                answer = httpx2.get(f"{api}/{path}", params=params, timeout=5)
            except httpx2.HTTPError:
                return {}
            return answer.json()["data"] if answer.status_code == 200 else {}

        deadline = time.monotonic() + 90
        targets: list = []
        rules: list = []
        value: list = []
        while time.monotonic() < deadline:
            targets = [t for t in get("targets").get("activeTargets", []) if t["labels"]["job"] == "modelcache"]
            value = get("query", query="sum(modelcache_requests_total)").get("result", [])
            rules = [r for g in get("rules").get("groups", []) for r in g["rules"]]
            if targets and targets[0]["health"] == "up" and value and rules and all(r["health"] == "ok" for r in rules):
                break
            time.sleep(1)
        found = [(t["labels"]["instance"].split(":")[1], t["health"]) for t in targets]
        assert found == [("8000", "up")], (targets, stack.logs("prometheus")[-3000:])
        assert float(value[0]["value"][1]) > 0  # the requests of the tests before
        ready = get("query", query='modelcache_ready{job="modelcache"}')["result"]
        assert ready and ready[0]["value"][1] == "1", ready
        groups = {g["name"]: g for g in get("rules")["groups"]}
        assert set(groups) == {"modelcache.alerts", "modelcache.recording"}
        assert rules and all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
        firing = [a["labels"]["alertname"] for a in get("alerts")["alerts"] if a["state"] == "firing"]
        assert firing == [], firing
        TIMES["prometheus_s"] = time.monotonic() - started
    finally:
        stack.cmd("--profile", "monitoring", "rm", "--stop", "--force", "--volumes", "prometheus", timeout=120)
        subprocess.run(["docker", "volume", "rm", "-f", f"{stack.project}_prometheus-data"], capture_output=True)


def test_down_keeps_the_models_volume(stack: Stack) -> None:
    down = stack.cmd("down")  # what an operator types: no -v, so the volume stays
    assert down.returncode == 0, down.stderr
    assert stack.volume_exists()
    TIMES["up_after_down_s"] = stack.up()
    assert "nothing to fetch" in stack.logs("model-downloader")


def test_one_download_per_site_through_a_registry(stack: Stack, tmp_path: Path) -> None:
    """The runbook's site flow with compose on both sides: this host pushes its volume to the
    site's registry; another host (its own compose project and volume, MODELCACHE_FROM set)
    fills from the registry alone, then serves the same answers. The Hub mirror stays
    reachable from the other host and is not asked once."""
    binary = shutil.which("docker-registry")
    if binary is None:
        require_binary()  # skips, or fails where MODELCACHE_REQUIRE_REGISTRY=1
    stack.cmd("--profile", "registry", "up", "-d", "--wait", "registry", check=True, timeout=120)
    ref = "oci://registry:5000/site/models:v1"
    insecure = ["-e", "MODELCACHE_INSECURE_REGISTRIES=registry:5000"]
    pushed = stack.cmd("run", "--rm", "-T", "--no-deps", *insecure, "model-downloader", "push", ref, "--json")
    assert pushed.returncode == 0, pushed.stderr
    digest = json.loads(pushed.stdout)["digest"]
    assert digest.startswith("sha256:")

    other = Stack(stack.compose, [], free_port(), f"{stack.volume}-site")
    site_env = tmp_path / "site.env"
    site_env.write_text(
        f"MODELCACHE_VOLUME={other.volume}\nMODELCACHE_HOST_PORT={other.port}\n"
        f"SITE_FROM=oci://registry:5000/site/models@{digest}\nSITE_NETWORK={stack.project}_default\n"
        f"REGISTRY_BINARY={binary}\n"
    )
    other.args = ["-p", f"{stack.project}-site", *stack.files_args, "-f", "tests/stack/compose.site.yml"]
    other.args += [*stack.env_args, "--env-file", str(site_env)]
    before = len(stack.mirror_gets())
    try:
        up = other.cmd("--profile", "cpu", "up", "--wait", "model-service", timeout=600)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        fetched = other.logs("model-downloader")
        assert f"volume complete from oci://registry:5000/site/models@{digest}" in fetched, fetched
        assert len(stack.mirror_gets()) == before  # not one request to the Hub from the other host
        # the same pins, byte for byte, and every byte as the lock says
        lock_path = "/models/.modelcache/lock.json"
        cat = ["run", "--rm", "-T", "--no-deps", "--entrypoint", "cat", "model-downloader", lock_path]
        assert other.cmd(*cat, check=True).stdout == stack.cmd(*cat, check=True).stdout
        deep = other.cmd("run", "--rm", "-T", "--no-deps", "model-downloader", "verify", "--deep")
        assert deep.returncode == 0, deep.stdout + deep.stderr
        text = {"model": fixtures.MINILM, "input": "one download per site"}
        here, there = (httpx2.post(f"{s.url}/v1/embeddings", json=text, timeout=60) for s in (stack, other))
        assert here.status_code == there.status_code == 200
        assert here.json()["data"] == there.json()["data"]
    finally:
        other.cmd("--profile", "cpu", "down", "--volumes", timeout=120)
        stack.cmd("--profile", "registry", "rm", "--stop", "--force", "--volumes", "registry", timeout=120)


def test_service_refuses_a_damaged_volume(stack: Stack) -> None:
    rm = stack.cmd("run", "--rm", "--no-deps", "--entrypoint", "rm", "model-downloader", "/models/whisper/tiny.en.pt")
    assert rm.returncode == 0, rm.stderr
    refused = stack.cmd("run", "--rm", "--no-deps", "model-service", timeout=120)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    output = refused.stdout + refused.stderr
    assert "whisper/tiny.en.pt" in output and "missing" in output and "model-downloader" in output
    # an empty volume: no lock, named as such
    empty = f"{stack.volume}-empty"
    try:
        run = subprocess.run(
            ["docker", "run", "--rm", "-v", f"{empty}:/models:ro", "--network", "none", IMAGES[1]],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 4 and "no-lock" in run.stderr, run.stderr
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", empty], capture_output=True)
    # the downloader repairs exactly that file
    before = len(stack.mirror_gets())
    TIMES["repair_up_s"] = stack.up()
    transfers = [line for line in stack.mirror_gets()[before:] if "/api/" not in line]  # not the metadata calls
    assert len(transfers) == 1 and "tiny.en.pt" in transfers[0], transfers


def test_reset_then_up_downloads_everything_again(stack: Stack) -> None:
    reset = subprocess.run(
        ["scripts/reset-models-volume", "--yes", "--", *stack.args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reset.returncode == 0, reset.stderr
    assert not stack.volume_exists()
    assert subprocess.run(["docker", "image", "inspect", IMAGES[1]], capture_output=True).returncode == 0
    before = len(stack.mirror_gets())
    TIMES["reset_and_refetch_s"] = stack.up()
    again = stack.mirror_gets()[before:]
    assert any("all-MiniLM-L6-v2" in line and "model.safetensors" in line for line in again)
    assert stack.downloader_exit_code() == 0
    assert httpx2.get(f"{stack.url}/health/ready", timeout=10).status_code == 200
    verify = subprocess.run(
        ["scripts/verify-volume", "--", *stack.args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert verify.returncode == 0 and "OK" in verify.stdout, verify.stdout + verify.stderr


def test_air_gapped_install_from_an_exported_bundle(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Export the filled volume, import it into a fresh volume with no network, start on it."""
    out = tmp_path_factory.mktemp("bundle")
    os.chown(out, 1000, 1000)  # an operator's folder, bind-mounted: the documented fast form (runbook)
    bundle = out / "models.tar"
    export = subprocess.run(
        [
            "docker",
            "compose",
            *stack.args,
            "--profile",
            "tools",
            "run",
            "--rm",
            "--user",
            "1000:1000",
            "-v",
            f"{out}:/out",
            "-e",
            "MODELCACHE_LOG_FORMAT=json",
            "model-bundle",
            "export",
            "/out/models.tar",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert export.returncode == 0, export.stderr
    assert bundle.stat().st_uid == 1000  # the operator's file, not the image user's
    # the downloader's image logs JSON when asked: its lines are objects, none is plain text
    records = [json.loads(line) for line in export.stderr.splitlines() if line.startswith("{")]
    (summary,) = [r for r in records if r["event"] == "exported"]
    assert summary["files"] > 0 and 0 < summary["bytes"] < bundle.stat().st_size  # the files, in a tar with headers
    assert summary["message"].startswith(f"exported {summary['files']} file(s)")
    assert not [line for line in export.stderr.splitlines() if line.startswith(("modelcache:", "exported"))]
    listing = subprocess.run(["tar", "-tf", str(bundle)], capture_output=True, text=True, check=True).stdout.split()
    assert listing[0] == "modelcache-bundle.json" and "whisper/tiny.en.pt" in listing
    # another volume, on the "isolated host": same .env, a network-less one-off container
    airgap_env = out / "airgap.env"
    airgap_env.write_text(f"MODELCACHE_VOLUME={stack.volume}-airgap\n")
    args = [*stack.args, "--env-file", str(airgap_env)]
    down = stack.cmd("down")
    assert down.returncode == 0, down.stderr
    try:
        imported = subprocess.run(
            ["docker", "compose", *args, "run", "--rm", "-v", f"{bundle}:/bundle.tar:ro", "model-bundle"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert imported.returncode == 0, imported.stdout + imported.stderr
        assert "lock written" in imported.stderr
        inspect = subprocess.run(
            ["docker", "compose", *args, "--profile", "tools", "config", "--format", "json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(inspect.stdout)["services"]["model-bundle"]["network_mode"] == "none"
        before = len(stack.mirror_gets())
        up = subprocess.run(
            ["docker", "compose", *args, "up", "-d", "--wait"], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert up.returncode == 0, up.stdout + up.stderr
        assert len(stack.mirror_gets()) == before  # not one request: the downloader found the volume complete
        embedding = httpx2.post(
            f"{stack.url}/v1/embeddings", json={"model": fixtures.MINILM, "input": "hello"}, timeout=60
        )
        assert embedding.status_code == 200 and len(embedding.json()["data"][0]["embedding"]) == 384
    finally:
        subprocess.run(["docker", "compose", *args, "down"], cwd=ROOT, capture_output=True, timeout=120)
        subprocess.run(["docker", "volume", "rm", "-f", f"{stack.volume}-airgap"], capture_output=True)


def test_a_model_changes_without_restarting_the_service(stack: Stack) -> None:
    """Change the text model (as an operator edits .env), run the downloader, reload: the new
    model answers, and the service container was never restarted."""
    stack.up()
    service = stack.compose.get_container("model-service")
    before = json.loads(
        subprocess.run(["docker", "inspect", service.ID], capture_output=True, text=True, check=True).stdout
    )[0]
    fetched = stack.cmd(
        "run", "--rm", "-e", f"MODELCACHE_TEXT_EMBEDDING={fixtures.TINY_BERT}", "model-downloader", timeout=300
    )
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    anonymous = httpx2.post(f"{stack.url}/admin/reload", timeout=30)  # the compose secret turned control on
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_admin_key"
    reloaded = httpx2.post(
        f"{stack.url}/admin/reload", headers={"Authorization": f"Bearer {STACK_ADMIN_KEY}"}, timeout=300
    )
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["added"] == [fixtures.TINY_BERT] and reloaded.json()["removed"] == [fixtures.MINILM]
    vector = httpx2.post(f"{stack.url}/v1/embeddings", json={"model": fixtures.TINY_BERT, "input": "hello"}, timeout=60)
    assert vector.status_code == 200 and len(vector.json()["data"][0]["embedding"]) == 64
    after = json.loads(
        subprocess.run(["docker", "inspect", service.ID], capture_output=True, text=True, check=True).stdout
    )[0]
    assert after["Id"] == before["Id"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert after["RestartCount"] == before["RestartCount"] and after["State"]["Running"]


def test_the_onnx_text_engines_from_the_images(stack: Stack) -> None:
    """The default downloader image (no torch) refuses an export it cannot make, before
    fetching; a repo that ships its int8 graph needs nothing made, and the service
    (reloaded, never restarted) serves it with ONNX Runtime."""
    stack.up()
    refused = stack.cmd("run", "--rm", "-e", "MODELCACHE_TEXT_ENGINE=onnx", "model-downloader", timeout=300)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "lacks onnxruntime, torch, transformers; nothing was fetched" in refused.stderr
    fetched = stack.cmd(
        "run",
        "--rm",
        "-e",
        "MODELCACHE_TEXT_ENGINE=onnx-int8",
        "-e",
        f"MODELCACHE_TEXT_EMBEDDING={MINILM_WITH_GRAPH}",
        "model-downloader",
        timeout=300,
    )
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert "minilm-with-onnx/onnx/model_quint8_avx2.onnx" in fetched.stderr
    assert "minilm-with-onnx/model.safetensors" not in fetched.stderr
    assert "minilm-with-onnx/onnx/model.onnx" not in fetched.stderr
    reloaded = httpx2.post(
        f"{stack.url}/admin/reload", headers={"Authorization": f"Bearer {STACK_ADMIN_KEY}"}, timeout=300
    )
    assert reloaded.status_code == 200, reloaded.text
    assert MINILM_WITH_GRAPH in reloaded.json()["added"]
    info = httpx2.get(f"{stack.url}/v1/models/{MINILM_WITH_GRAPH}", timeout=30).json()
    assert info["engine"] == "onnx-int8"
    answer = httpx2.post(
        f"{stack.url}/v1/embeddings", json={"model": MINILM_WITH_GRAPH, "input": ["hello", "world"]}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    assert [len(d["embedding"]) for d in answer.json()["data"]] == [384, 384]
