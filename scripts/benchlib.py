"""What the benchmark scripts share: the project on sys.path, a `modelcache serve` process
(Server), a keep-alive HTTP connection (Conn), process memory and CPU readings, and the
side-by-side table and command line every script prints with. Not a benchmark itself."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))

import httpx2  # noqa: E402

from tests.support import fixtures  # noqa: E402

TEXT = "A man is eating food in a small restaurant by the sea."
EMBED, IMAGES, FACES = "/v1/embeddings", "/v1/images/embeddings", "/v1/faces/detect"
JSON = "application/json"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MODELCACHE_", "HF_"))}
    return {**base, "PYTHONPATH": str(ROOT / "services"), **env}


def proc_memory(pid: int) -> tuple[int, int]:
    """Resident bytes (VmRSS) and proportional bytes (Pss: shared pages split between the
    processes that map them) of one process."""

    def field(path: str, key: str) -> int:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        return 0

    try:
        return field(f"/proc/{pid}/status", "VmRSS:"), field(f"/proc/{pid}/smaps_rollup", "Pss:")
    except OSError:
        return 0, 0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every process), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that ended (the services, and through
    them their model processes)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus sample over the series that carry ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_ready(server, url: str, log: Path, what: str, timeout: float) -> float:
    """Seconds from ``server.started`` until ``url`` answers 200; the server's log in the
    error when its process exits first or the time runs out (then it is stopped)."""
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{what} exited {server.proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.perf_counter() - server.started > timeout:
            server.stop()
            raise RuntimeError(f"{what} not ready within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - server.started
        except httpx2.HTTPError:
            pass
        time.sleep(0.05)


class Server:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelcache", "serve"],
            env=cli_env({**env, "MODELCACHE_HOST": "127.0.0.1", "MODELCACHE_PORT": str(self.port)}),
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
        )
        self.ready_seconds = wait_ready(self, f"{self.url}/health/ready", log, "modelcache serve", 600)

    def pids(self) -> dict[str, int]:
        """The HTTP process ("http"), the zygote the torch models' processes are forked from
        ("zygote") and each model's process, by model id (from /health)."""
        health = httpx2.get(f"{self.url}/health", timeout=30).json()
        zygote = {"zygote": health["zygote"]["pid"]} if health.get("zygote") else {}
        return {"http": self.proc.pid, **zygote, **{m: v["pid"] for m, v in health["models"].items() if v.get("pid")}}

    def rss(self) -> dict:
        """Resident bytes of the HTTP process, the zygote and every model's process, their total, and
        the total PSS (the libraries every process maps counted once, not once each)."""
        memory = {name: proc_memory(pid) for name, pid in self.pids().items()}
        return {
            "total": sum(rss for rss, _ in memory.values()),
            "http": memory["http"][0],
            "zygote": memory.get("zygote", (0, 0))[0],
            "models": {name: rss for name, (rss, _) in memory.items() if name not in ("http", "zygote")},
            "pss_total": sum(pss for _, pss in memory.values()),
        }

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the HTTP process and by each model's process."""
        return {name: cpu_seconds(pid) for name, pid in self.pids().items()}

    def metrics(self) -> str:
        return httpx2.get(f"{self.url}/metrics", timeout=30).text

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class Conn:
    """One keep-alive HTTP/1.1 connection. http.client costs the client much less CPU per
    request than httpx2, which matters when the clients share the CPUs with the service."""

    IDLE_S = 4.0  # uvicorn closes a keep-alive connection idle for 5 s: reconnect before that

    def __init__(self, url: str, timeout: float = 600) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.http = http.client.HTTPConnection(host, int(port), timeout=timeout)
        self.last = time.monotonic()

    def connect(self) -> None:
        self.http.connect()
        self.last = time.monotonic()

    def post(self, path: str, body: bytes, content_type: str = JSON) -> tuple[int, bytes]:
        """Status and body; status 0 when the connection failed (it reconnects on the next call)."""
        if time.monotonic() - self.last > self.IDLE_S:
            self.http.close()  # the server may be closing it right now; the next request opens another
        try:
            self.http.request("POST", path, body, {"Content-Type": content_type})
            response = self.http.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.http.close()
            return 0, b""
        finally:
            self.last = time.monotonic()

    def post_ok(self, path: str, body: bytes, content_type: str = JSON) -> bytes:
        status, data = self.post(path, body, content_type)
        if status != 200:
            raise RuntimeError(f"POST {path}: {status} {data[:300]!r}")
        return data

    def close(self) -> None:
        self.http.close()


def text_body(text: str) -> bytes:
    return json.dumps({"model": fixtures.MINILM, "input": text, "encoding_format": "float"}).encode()


def multipart(field: str, filename: str, data: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body with one file and some plain fields, and its content type."""
    boundary = "modelcache-bench-8d1f3a"
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def table(rows: list[tuple[str, str, str, str]]) -> str:
    """The rows as a markdown table: measure, modelcache, anchor, ratio."""
    lines = ["| measure | modelcache | anchor | ratio |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def cli(doc: str, bench, report) -> None:
    """A benchmark script's command line: ``[--json FILE] [--quick]``, then the report."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and shorter runs")
    args = parser.parse_args()
    results = bench(args.quick)
    if args.json:  # first: the figures survive a report that fails
        args.json.write_text(json.dumps(results, indent=2))
    print(report(results))
