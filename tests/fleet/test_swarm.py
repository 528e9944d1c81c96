"""docker-stack.yml on a real three-node Docker Swarm (tests/support/swarm.py), as an
operator runs it: the images and the models reach the nodes only through the site's
registry, the downloader job fills each node's volume, the service runs on every node
behind the HAProxy front door; then a model upgrade under load, and a node lost under load.
Everything is removed at the end, and the test checks that nothing is left.

Skipped without a Docker engine, the images or docker-registry, unless
MODELCACHE_REQUIRE_DOCKER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest

from modelcache.testing.hfmirror import HFMirror
from tests.conftest import ROOT
from tests.support import fixtures
from tests.support.docker import docker_unavailable
from tests.support.swarm import NODE_IMAGE, PROXY_IMAGE, Fleet, Load

VERSION = "0.1.0"
IMAGES = (f"modelcache-downloader:{VERSION}", f"modelcache-service:{VERSION}", NODE_IMAGE, PROXY_IMAGE)
BASE_IMAGE = os.environ.get("BASE_IMAGE", "local/python:3.11-bookworm")
STACK = "modelcache"
PORT = 8000
# the fleet's model sets: v1, then v2 adds a model (requests for the first never stop)
SMALL = {"MODELCACHE_WHISPER": "none", "MODELCACHE_VISION": "none", "MODELCACHE_FACE": "none", "MODELCACHE_MLX": ""}
SETS = {"v1": [fixtures.MINILM], "v2": [fixtures.MINILM, fixtures.TINY_BERT]}
FIGURES: dict[str, object] = {}

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@dataclass
class Site:
    fleet: Fleet
    work: Path
    digests: dict[str, str] = field(default_factory=dict)  # tag -> manifest digest
    images: dict[str, str] = field(default_factory=dict)  # local image -> as the nodes pull it

    @property
    def url(self) -> str:
        return f"http://{self.fleet.manager.ip}:{PORT}"

    def env_file(self, tag: str) -> Path:
        """The downloader's settings on every node for model set ``tag``."""
        path = self.work / f"fleet-{tag}.env"
        lines = {
            **SMALL,
            "MODELCACHE_TEXT_EMBEDDING": ",".join(SETS[tag]),
            "MODELCACHE_FROM": f"oci://{self.fleet.registry}/site/models@{self.digests[tag]}",
            "MODELCACHE_INSECURE_REGISTRIES": self.fleet.registry,
        }
        path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        return path

    def stack_env(self, tag: str) -> dict[str, str]:
        """What the operator's shell holds when it runs `docker stack deploy` (or fleet-upgrade)."""
        return {
            **os.environ,
            "DOCKER_HOST": self.fleet.manager.docker_host,
            "MODELCACHE_DOWNLOADER_IMAGE": self.images[f"modelcache-downloader:{VERSION}"],
            "MODELCACHE_SERVICE_IMAGE": self.images[f"modelcache-service:{VERSION}"],
            "MODELCACHE_PROXY_IMAGE": self.images[PROXY_IMAGE],
            "MODELCACHE_ENV_FILE": str(self.env_file(tag)),
            "MODELCACHE_HOST_PORT": str(PORT),
            "MODELCACHE_MEM_LIMIT": "2g",
            "MODELCACHE_START_PERIOD": "120s",
        }

    def health(self) -> dict | None:
        try:
            response = httpx2.get(f"{self.url}/health", timeout=5)
        except httpx2.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None


def _fill_and_push(site: Site, mirror: HFMirror) -> None:
    """The one host with Internet access: fetch each model set from the Hub (the mirror) into its
    volume, push it; the nodes never reach the Hub (the mirror listens on this machine's loopback)."""
    models = fixtures.fill_mirror(mirror, site.work)
    host = f"127.0.0.1:{site.fleet.registry_port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MODELCACHE_", "HF_"))}
    hub_bytes, model_bytes = 0, 0
    volume = site.work / "internet-host" / "models"
    for tag, wanted in SETS.items():
        env = {
            **base,
            **models.env(volume),
            **SMALL,
            "MODELCACHE_TEXT_EMBEDDING": ",".join(wanted),
            "MODELCACHE_INSECURE_REGISTRIES": host,
            "PYTHONPATH": str(ROOT / "services"),
        }
        mirror.reset_log()
        cli = [sys.executable, "-m", "modelcache"]
        subprocess.run([*cli, "fetch", "--plain"], env=env, check=True, capture_output=True, timeout=600)
        hub_bytes += mirror.bytes_served("*")
        lock = json.loads((volume / ".modelcache/lock.json").read_text())
        model_bytes = sum(f["size"] for a in lock["artifacts"] for f in a["files"])  # the latest set
        pushed = subprocess.run(
            [*cli, "push", f"oci://{host}/site/models:{tag}", "--json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        site.digests[tag] = json.loads(pushed.stdout)["digest"]
    FIGURES["hub_bytes"] = hub_bytes
    FIGURES["models_bytes"] = model_bytes


def service_logs(site: Site, service: str) -> str:
    """What every task of the stack's service printed (modelcache logs to stderr)."""
    done = site.fleet.manager.docker("service", "logs", "--raw", f"{STACK}_{service}")
    return done.stdout + done.stderr


def _wait_serving(site: Site, expect: list[str], timeout: float) -> float:
    started = time.monotonic()
    while True:
        health = site.health()
        if health is not None and sorted(health["models_loaded"]) == sorted(expect):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            ps = site.fleet.manager.docker("service", "ps", "--no-trunc", f"{STACK}_model-service", check=False)
            raise AssertionError(f"the fleet did not serve {expect} in {timeout:.0f}s: {health}\n{ps.stdout}")
        time.sleep(1)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    reason = docker_unavailable(IMAGES) or (None if shutil.which("docker-registry") else "no docker-registry")
    if reason:
        if os.environ.get("MODELCACHE_REQUIRE_DOCKER") == "1":
            pytest.fail(f"the fleet test is required here but cannot run: {reason}")
        pytest.skip(f"fleet test skipped: {reason} (scripts/build-fleet-images, scripts/build-images)")
    work = Path(tempfile.mkdtemp(prefix="mc-fleet-"))
    fleet = Fleet(f"mcfleet{uuid.uuid4().hex[:6]}", BASE_IMAGE)
    site = Site(fleet, work)
    try:
        started = time.monotonic()
        fleet.start(3)
        FIGURES["swarm_start_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        for image in (*IMAGES[:2], PROXY_IMAGE):
            site.images[image] = fleet.push_image(image)
        FIGURES["images_to_registry_s"] = round(time.monotonic() - started, 1)
        with HFMirror(cdn=True, xet=True) as mirror:
            _fill_and_push(site, mirror)
        started = time.monotonic()
        deploy = subprocess.run(
            ["docker", "stack", "deploy", "-c", "docker-stack.yml", STACK],
            cwd=ROOT,
            env=site.stack_env("v1"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert deploy.returncode == 0, deploy.stderr
        # each node pulls the images from the registry, fills its volume, loads, serves
        FIGURES["first_deploy_s"] = round(_wait_serving(site, SETS["v1"], 900) + time.monotonic() - started, 1)
        yield site
    finally:
        FIGURES["node_storage_bytes"] = fleet.storage_bytes()
        left = fleet.remove()
        shutil.rmtree(work, ignore_errors=True)
        print(f"\nfleet figures: {json.dumps(FIGURES)}")
        if out := os.environ.get("MODELCACHE_FLEET_FIGURES"):
            Path(out).write_text(json.dumps(FIGURES, indent=2))
        assert not left, f"the fleet left these behind: {left}"


def test_every_node_filled_its_volume_from_the_registry_and_serves(site: Site) -> None:
    manager = site.fleet.manager
    jobs = manager.docker("service", "ps", f"{STACK}_model-downloader", "--format", "{{.Node}} {{.CurrentState}}")
    complete = {line.split()[0] for line in jobs.stdout.splitlines() if " Complete " in f" {line} "}
    assert complete == {"node1", "node2", "node3"}, jobs.stdout
    logs = service_logs(site, "model-downloader")
    assert logs.count(f"volume complete from oci://{site.fleet.registry}/site/models@{site.digests['v1']}") == 3
    # the Hub gave each model's bytes once, for the whole fleet and both model sets
    assert int(FIGURES["hub_bytes"]) <= 1.02 * int(FIGURES["models_bytes"])  # type: ignore[call-overload]
    # a replica that started before its node's volume was complete was refused by the gate and
    # started again (exit 4), never served: every running one serves the whole set
    tasks = manager.docker("service", "ps", "--no-trunc", f"{STACK}_model-service", "--format", "{{.Error}}")
    assert all(e in ("", '"task: non-zero exit (4)"') for e in tasks.stdout.splitlines()), tasks.stdout
    answers = [site.health() for _ in range(12)]
    assert all(a is not None and a["models_loaded"] == SETS["v1"] for a in answers), answers


def test_the_replicas_run_locked_down(site: Site) -> None:
    node = site.fleet.nodes[1]
    ids = node.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_model-service").stdout
    (info,) = json.loads(node.docker("inspect", *ids.split()).stdout)
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["Config"]["User"] == "10001:10001"
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    models = next(m for m in info["Mounts"] if m["Destination"] == "/models")
    assert models["RW"] is False
    assert "HF_TOKEN=" in info["Config"]["Env"]


def test_an_upgrade_under_load_fails_no_request(site: Site) -> None:
    """scripts/fleet-upgrade with the new set: the job refills every node, each replica reloads
    in place; 32 clients through the front door see no failure."""
    with Load(site.url, fixtures.MINILM) as load:
        time.sleep(3)
        upgrade = subprocess.run(
            [
                sys.executable,
                "scripts/fleet-upgrade",
                "--stack",
                STACK,
                "--url",
                site.url,
                "--expect",
                ",".join(SETS["v2"]),
                "--timeout",
                "600",
                "--json",
            ],
            cwd=ROOT,
            env=site.stack_env("v2"),
            capture_output=True,
            text=True,
            timeout=700,
        )
        time.sleep(3)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    timings = json.loads(upgrade.stdout.splitlines()[-1])
    FIGURES["upgrade"] = {**timings, "requests": len(load.outcomes), "failed": len(load.failed())}
    assert load.answered() > 100
    assert load.failed() == [], load.failed()[:5]
    logs = service_logs(site, "model-service")
    assert logs.count(f"added ['{fixtures.TINY_BERT}'], removed nothing, kept 1") == 3, logs[-3000:]


def test_a_lost_node_costs_only_the_requests_it_held(site: Site) -> None:
    """A worker stops under load: what was in flight there fails while the front door
    notices; after that, the other replicas answer everything."""
    lost = site.fleet.nodes[2]
    with Load(site.url, fixtures.MINILM) as load:
        time.sleep(5)
        stopped = time.monotonic()
        subprocess.run(["docker", "stop", "-t", "0", lost.container], check=True, capture_output=True)
        time.sleep(20)
    failed = load.failed(since=stopped)
    window = max((o.at - stopped for o in failed), default=0.0)
    FIGURES["node_lost"] = {
        "requests": len(load.outcomes),
        "failed": len(failed),
        "failed_within_s": round(window, 2),
        "kinds": sorted({str(o.status) for o in failed}),
    }
    assert load.failed(since=stopped + 6) == [], FIGURES["node_lost"]  # the front door noticed within seconds
    assert len(failed) <= 32  # at most what the 32 clients had in flight
    assert sum(1 for o in load.outcomes if o.at > stopped + 6 and o.status == 200) > 20
    assert load.failed(since=0) == failed  # nothing failed before the node was lost


@pytest.mark.skipif(
    os.environ.get("MODELCACHE_FLEET_COMPARE") != "1", reason="a benchmark figure: scripts/bench_fleet.py sets it"
)
def test_compose_up_on_each_node_in_turn_for_comparison(site: Site) -> None:
    """The single-host way to roll the v2 set out: `docker compose up --wait` with
    docker-compose.yml on each node, one after the other (its own project, volume and port),
    filling from the same registry. Timed for scripts/bench_fleet.py, then removed."""
    plugin = Path("/usr/local/lib/docker/cli-plugins/docker-compose")
    if not plugin.exists():
        pytest.skip(f"no compose plugin at {plugin}")
    env_lines = site.env_file("v2").read_text() + "COMPOSE_PROFILES=cpu\nHF_TOKEN_FILE=/dev/null\n"
    seconds = []
    for node in site.fleet.nodes[:2]:  # the third was stopped by the test before
        container = node.container
        subprocess.run(["docker", "exec", container, "mkdir", "-p", "/srv/mc", str(plugin.parent)], check=True)
        subprocess.run(["docker", "cp", str(plugin), f"{container}:{plugin}"], check=True, capture_output=True)
        subprocess.run(["docker", "cp", str(ROOT / "docker-compose.yml"), f"{container}:/srv/mc/"], check=True)
        subprocess.run(["docker", "exec", "-i", container, "sh", "-c", "cat > /srv/mc/.env"], input=env_lines,
                       text=True, check=True)  # fmt: skip
        compose = ["docker", "exec", "-w", "/srv/mc"]
        for key in ("MODELCACHE_DOWNLOADER_IMAGE", "MODELCACHE_SERVICE_IMAGE"):
            compose += ["-e", f"{key}={site.stack_env('v2')[key]}"]
        compose += [
            "-e",
            "MODELCACHE_HOST_PORT=8100",
            "-e",
            "MODELCACHE_MEM_LIMIT=2g",
            "-e",
            "MODELCACHE_VOLUME=mc-turn",
        ]
        compose += [container, "docker", "compose", "-p", "turn"]
        started = time.monotonic()
        up = subprocess.run([*compose, "up", "--wait"], capture_output=True, text=True, timeout=600)
        seconds.append(time.monotonic() - started)
        subprocess.run([*compose, "down", "-v"], capture_output=True, timeout=120)
        assert up.returncode == 0, up.stdout[-1500:] + up.stderr[-1500:]
    FIGURES["compose_in_turn"] = {
        "per_node_s": [round(s, 1) for s in seconds],
        "three_nodes_estimate_s": round(sum(seconds) / len(seconds) * 3, 1),
    }
