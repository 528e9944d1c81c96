"""A real multi-node Docker Swarm on one machine, for tests/fleet/.

Each node is a Docker engine in a container (``local/swarm-node:bookworm``, made by
scripts/build-fleet-images from Debian's docker.io) on a bridge network of the test's own.
Beside them runs a CNCF registry (Debian's docker-registry binary in the base image), the
only way images and models reach the nodes: the host pushes to it on 127.0.0.1, the nodes
pull from it by its name on the network. Everything the fleet creates carries the fleet's
prefix, and ``remove()`` takes all of it away again (containers, the nodes' storage
volumes, the network), checking that nothing is left.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NODE_IMAGE = "local/swarm-node:bookworm"
PROXY_IMAGE = "local/haproxy:bookworm"
REGISTRY_CONFIG = Path(__file__).resolve().parents[1] / "stack" / "registry.yml"
# what a Docker-in-Docker node needs here (../shared/ENVIRONMENT.md §5): --privileged fails
# ("unable to apply caps"), every capability but CAP_SYS_RESOURCE works
NODE_RUN = [
    "--cap-add=ALL",
    "--cap-drop=SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--security-opt",
    "systempaths=unconfined",
    "--cgroupns=host",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup",
]

# the node's engine: on its own socket and on TCP (the test's network only: how this machine's
# docker CLI drives the swarm, like an operator's context), pulling from the test registry;
# a stale pid file from a stopped node must not keep it from starting again
NODE_ENGINE = (
    "rm -f /var/run/docker.pid; exec dockerd --host unix:///var/run/docker.sock --host tcp://0.0.0.0:2375 "
    "--insecure-registry {registry}"
)


def docker(*args: str, host: str | None = None, check: bool = True, timeout: float = 300, input: str | None = None):
    env = None
    if host is not None:
        import os

        env = {**os.environ, "DOCKER_HOST": host}
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env, input=input)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:6])}… failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return done


@dataclass
class Node:
    container: str
    hostname: str
    ip: str

    @property
    def docker_host(self) -> str:
        return f"tcp://{self.ip}:2375"

    def docker(self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None):
        """The docker CLI of this machine, talking to the node's engine (as an operator's context would)."""
        return docker(*args, host=self.docker_host, check=check, timeout=timeout, input=input)


@dataclass
class Fleet:
    prefix: str
    base_image: str
    nodes: list[Node] = field(default_factory=list)
    registry_ip: str = ""
    registry_port: int = 0  # on 127.0.0.1, for this machine's pushes

    @property
    def network(self) -> str:
        return f"{self.prefix}-net"

    @property
    def registry(self) -> str:
        """The registry as the nodes (and the tasks on them) reach it."""
        return f"{self.registry_ip}:5000"

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def start(self, count: int = 3) -> None:
        docker("network", "create", "--driver", "bridge", self.network)
        binary = shutil.which("docker-registry")
        if binary is None:
            raise FileNotFoundError("docker-registry")
        docker(
            "run", "-d", "--name", f"{self.prefix}-registry", "--network", self.network,
            "-p", "127.0.0.1::5000",
            "-v", f"{binary}:/usr/local/bin/docker-registry:ro",
            "-v", f"{REGISTRY_CONFIG}:/etc/registry.yml:ro",
            self.base_image, "/usr/local/bin/docker-registry", "serve", "/etc/registry.yml",
        )  # fmt: skip
        self.registry_ip = self._ip(f"{self.prefix}-registry")
        port = docker("port", f"{self.prefix}-registry", "5000/tcp").stdout.split()[0]
        self.registry_port = int(port.rsplit(":", 1)[1])
        for i in range(1, count + 1):
            name = f"{self.prefix}-node{i}"
            docker(
                "run", "-d", "--name", name, "--hostname", f"node{i}", "--network", self.network,
                *NODE_RUN, "-v", f"{name}-lib:/var/lib/docker",
                NODE_IMAGE, "sh", "-c", NODE_ENGINE.format(registry=f"{self.registry_ip}:5000"),
            )  # fmt: skip
            self.nodes.append(Node(name, f"node{i}", self._ip(name)))
        for node in self.nodes:
            self._wait_engine(node)
        manager = self.manager
        manager.docker("swarm", "init", "--advertise-addr", manager.ip)
        token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        for node in self.nodes[1:]:
            node.docker("swarm", "join", "--token", token, f"{manager.ip}:2377")
        deadline = time.monotonic() + 60
        while self.ready_nodes() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.ready_nodes()} of {count} nodes became ready")
            time.sleep(1)

    def ready_nodes(self) -> int:
        out = self.manager.docker("node", "ls", "--format", "{{.Status}} {{.Availability}}").stdout
        return sum(1 for line in out.splitlines() if line.split() == ["Ready", "Active"])

    def push_image(self, image: str) -> str:
        """Push a local image to the registry; the name the nodes pull it by."""
        name = image.split("/")[-1]
        local = f"127.0.0.1:{self.registry_port}/{name}"
        docker("tag", image, local)
        try:
            docker("push", local, timeout=900)
        finally:
            docker("rmi", local, check=False)
        return f"{self.registry}/{name}"

    def remove(self) -> list[str]:
        """Remove everything the fleet made; what could not be removed (empty: nothing left)."""
        names = [n.container for n in self.nodes] + [f"{self.prefix}-registry"]
        docker("rm", "-f", "-v", *names, check=False, timeout=120)
        volumes = docker("volume", "ls", "-q", "--filter", f"name={self.prefix}", check=False).stdout.split()
        if volumes:
            docker("volume", "rm", "-f", *volumes, check=False)
        docker("network", "rm", self.network, check=False)
        left = docker("ps", "-aq", "--filter", f"name={self.prefix}", check=False).stdout.split()
        left += docker("volume", "ls", "-q", "--filter", f"name={self.prefix}", check=False).stdout.split()
        left += docker("network", "ls", "-q", "--filter", f"name={self.prefix}", check=False).stdout.split()
        return left

    def storage_bytes(self) -> int:
        """What the nodes' engines hold on this machine's disk now (images, volumes, containers)."""
        total = 0
        for node in self.nodes:
            found = docker("volume", "inspect", f"{node.container}-lib", "--format", "{{.Mountpoint}}", check=False)
            if found.returncode == 0:
                du = subprocess.run(["du", "-sb", found.stdout.strip()], capture_output=True, text=True)
                total += int(du.stdout.split()[0]) if du.returncode == 0 and du.stdout else 0
        return total

    def _ip(self, container: str) -> str:
        out = docker("inspect", container, "--format", "{{json .NetworkSettings.Networks}}").stdout
        return json.loads(out)[self.network]["IPAddress"]

    def _wait_engine(self, node: Node) -> None:
        deadline = time.monotonic() + 90
        while node.docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=10).returncode != 0:
            if time.monotonic() > deadline:
                logs = docker("logs", "--tail", "30", node.container, check=False)
                raise RuntimeError(f"the engine in {node.container} did not start: {logs.stdout}{logs.stderr}")
            time.sleep(0.5)


@dataclass
class Outcome:
    at: float  # time.monotonic() when the answer (or the error) came
    status: int | str  # the HTTP status, or the exception's class name


class Load:
    """``clients`` threads posting embeddings through the front door until stopped."""

    def __init__(self, url: str, model: str, clients: int = 32, timeout: float = 30) -> None:
        import threading

        self.url, self.model, self.clients, self.timeout = url, model, clients, timeout
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _run(self) -> None:
        import httpx2

        body = {"model": self.model, "input": "one fleet, many replicas"}
        with httpx2.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                try:
                    status: int | str = client.post(f"{self.url}/v1/embeddings", json=body).status_code
                except Exception as exc:  # every failure counts, whatever its kind
                    status = exc.__class__.__name__
                self.outcomes.append(Outcome(time.monotonic(), status))

    def failed(self, since: float = 0.0) -> list[Outcome]:
        return [o for o in self.outcomes if o.at >= since and o.status != 200]

    def answered(self) -> int:
        return sum(1 for o in self.outcomes if o.status == 200)
