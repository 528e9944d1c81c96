#!/usr/bin/env python3
"""modelcache's text embeddings against a peer server, Infinity, in one run.

    scripts/test --version >/dev/null       # once: makes .venv with everything installed
    .venv/bin/python scripts/bench_peers.py [--json out.json] [--quick] [--engines torch,onnx,onnx-int8,openvino]

Infinity (PyPI ``infinity-emb``, pinned below) is installed once into a virtual environment
of its own under ~/.cache/modelcache/bench-venvs/, with the same torch as the project's
venv (a CPU build that is already on disk), and reused by later runs.

The real all-MiniLM-L6-v2 goes from the project's loopback mirror into one volume per
text engine, each filled by the real downloader (`modelcache fetch`, a process of its own)
with that engine's MODELCACHE_TEXT_ENGINE. Infinity serves the MiniLM snapshot folder of
the torch volume (local path, HF_HUB_OFFLINE=1), torch engine, CPU, batches of 32 as
modelcache. One server at a time, on 127.0.0.1, driven by the same load generator as the
service part (bench_service.load: keep-alive clients, one single-text OpenAI request after
another) at 1, 32 and 128 clients. Before any server starts, the in-process anchors run on
this process's main thread: the torch forwards (bench_service.raw_forward) and one ONNX
Runtime forward of 32 texts (and of one) on each ONNX engine's graph from its volume.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))

from bench_service import load, raw_forward, time_forwards  # noqa: E402
from benchlib import (  # noqa: E402  (also puts the project on sys.path)
    EMBED,
    JSON,
    TEXT,
    Conn,
    Server,
    busy_cpu_seconds,
    cli_env,
    cpu_seconds,
    free_port,
    own_cpu_seconds,
    pct,
    proc_memory,
    table,
    text_body,
    wait_ready,
)

from modelcache.layout import Layout  # noqa: E402
from modelcache.settings import TEXT_ENGINES  # noqa: E402
from modelcache.testing.hfmirror import HFMirror  # noqa: E402
from modelcache.volume_lock import read_lock  # noqa: E402
from tests.support import fixtures  # noqa: E402

INFINITY_VERSION = "0.0.78"
VENVS = Path.home() / ".cache" / "modelcache" / "bench-venvs"
CLIENTS = (1, 32, 128)
BATCH = 32  # modelcache's MODELCACHE_BATCH_MAX default, and Infinity's --batch-size
ONNX = ("onnx", "onnx-int8", "openvino")  # the engines that run an ONNX graph (openvino: the fp32 one)
#: a load run waits for the other processes on the machine to use less than this (cores)
QUIET, NOISY = 0.1, 0.25
#: the issue's goals for the ONNX engine
VS_INFINITY, VS_TORCH_1, VS_ORT_32 = 2.0, 1.5, 0.9


# --- Infinity ---------------------------------------------------------------------------------


def infinity_venv(log: Path) -> Path:
    """The ``infinity_emb`` program of a venv made once (and again only when an install did
    not finish): torch first, pinned to the project venv's own build, so pip takes that
    CPU wheel instead of a CUDA one; then infinity-emb, pinned."""
    venv = VENVS / f"infinity-{INFINITY_VERSION}"
    program = venv / "bin" / "infinity_emb"
    done = venv / ".installed"
    if done.is_file() and program.is_file():
        return program
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    torch = f"torch=={metadata.version('torch')}"
    print(f"bench: installing infinity-emb=={INFINITY_VERSION} into {venv} (once) …", file=sys.stderr, flush=True)
    with open(log, "ab") as out:
        for cmd in (
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "pip"), "install", "--quiet", torch],
            [str(venv / "bin" / "pip"), "install", "--quiet", f"infinity-emb[server,torch]=={INFINITY_VERSION}"],
        ):
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{log.read_text()[-3000:]}")
    done.write_text(f"infinity-emb=={INFINITY_VERSION}\n{torch}\n")
    return program


class Infinity:
    """``infinity_emb v2`` on 127.0.0.1 serving a local model folder, offline; the same
    interface as benchlib.Server for bench_service.load (no modelcache metrics)."""

    def __init__(self, program: Path, model: Path, work: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = cli_env(
            {
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "HF_HOME": str(work / "hf-home"),  # writes nothing under ~/.cache
                "DO_NOT_TRACK": "1",
                "INFINITY_ANONYMOUS_USAGE_STATS": "0",
            }
        )
        env.pop("PYTHONPATH", None)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                str(program),
                "v2",
                "--model-id",
                str(model),
                "--served-model-name",
                fixtures.MINILM,
                "--url-prefix",
                "/v1",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--engine",
                "torch",
                "--device",
                "cpu",
                "--batch-size",
                str(BATCH),
                "--no-vector-disk-cache",  # on by default: it would answer repeated texts from a cache
            ],
            env=env,
            cwd=work,
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
        )
        self.ready_seconds = wait_ready(self, f"{self.url}/health", log, "infinity_emb", 300)

    def metrics(self) -> str:
        return ""

    def cpu(self) -> dict[str, float]:
        return {"infinity": cpu_seconds(self.proc.pid)}

    def rss(self) -> dict:
        rss, pss = proc_memory(self.proc.pid)
        return {"total": rss, "pss_total": pss}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


# --- in-process anchor: ONNX Runtime --------------------------------------------------------


def ort_forward(graph: Path, snapshot: Path, n: int, batch_reps: int) -> dict:
    """One ONNX Runtime session on ``graph`` in-process, set up as a model process would be
    (every CPU for one operator, one at a time, every graph optimisation): texts per second
    of a forward of the 32 clients' texts at once (tokenised together, padded), and the
    latencies of ``n`` single-text forwards; tokenise, run, mean pool, normalise each time."""
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(snapshot / "tokenizer.json"))
    tokenizer.enable_truncation(256)  # MiniLM's max_seq_length; the texts here are far shorter
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    output = next((name for name in ("last_hidden_state", "token_embeddings") if name in outputs), outputs[0])

    def forward(texts: list[str]):
        encoded = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = session.run([output], {k: v for k, v in feed.items() if k in inputs})
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    batch = [f"{TEXT} {c}" for c in range(BATCH)]  # the texts the 32 clients send
    single, batched = time_forwards(forward, batch, n, batch_reps)
    return {
        "graph": graph.name,
        "graph_bytes": graph.stat().st_size,
        "one_forward_rps": n / sum(single),
        "single_p50_ms": pct(single, 0.5) * 1000,
        "single_p99_ms": pct(single, 0.99) * 1000,
        "batch32_texts_per_s": len(batch) / statistics.median(batched),
    }


# --- the run ------------------------------------------------------------------------------------


def volume_env(models_dir: Path, mirror_url: str, engine: str) -> dict[str, str]:
    """MiniLM alone, with ``engine``: the downloader and the service get the same variables
    (the engine changes the plan). The queue holds all 128 clients: the rows compare
    throughput, not the 429s of a queue smaller than the crowd (the service part has those)."""
    return {
        "MODELCACHE_DIR": str(models_dir),
        "HF_ENDPOINT": mirror_url,
        "MODELCACHE_HF_TOKEN_FILE": str(models_dir.parent / "no-token"),
        "MODELCACHE_TEXT_EMBEDDING": fixtures.MINILM,
        "MODELCACHE_TEXT_ENGINE": engine,
        "MODELCACHE_WHISPER": "none",
        "MODELCACHE_VISION": "none",
        "MODELCACHE_FACE": "none",
        "MODELCACHE_MLX": "",
        "MODELCACHE_QUEUE_SIZE": str(2 * max(CLIENTS)),
        "MODELCACHE_REQUEST_TIMEOUT": "900",  # a slow run must measure slowly, not answer 504
        "MODELCACHE_LOCK_TIMEOUT": "60",
    }


def embed_one(url: str, text: str) -> list[float]:
    conn = Conn(url)
    try:
        return json.loads(conn.post_ok(EMBED, text_body(text)))["data"][0]["embedding"]
    finally:
        conn.close()


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)


class Others:
    """The CPU that processes other than this one and the server's used (cores), over a
    stretch of time: on a shared machine, what the server did not get."""

    def __init__(self, server=None) -> None:
        self.server = server
        self.started = time.perf_counter()
        self.busy, self.mine, self.theirs = busy_cpu_seconds(), self_cpu(), self.server_cpu()

    def server_cpu(self) -> float:
        return sum(self.server.cpu().values()) if self.server else 0.0

    def cores(self) -> float:
        wall = time.perf_counter() - self.started
        used = (busy_cpu_seconds() - self.busy) - (self_cpu() - self.mine) - (self.server_cpu() - self.theirs)
        return max(0.0, used / wall)


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Patience:
    """How long to wait for a quiet machine: at most ``each`` seconds at a time, ``total``
    over the whole part (a machine that stays busy must not double the part's time)."""

    def __init__(self, each: float, total: float) -> None:
        self.each, self.left = each, total

    def settle(self, server) -> float:
        """Wait for a second in which other processes kept less than QUIET of a core busy
        (one second at least, to let the queues drain); that second's reading, or the last."""
        started = time.perf_counter()
        deadline = started + min(self.each, self.left)
        while True:
            others = Others(server)
            time.sleep(1.0)
            cores = others.cores()
            if cores < QUIET or time.perf_counter() >= deadline:
                self.left = max(0.0, self.left - (time.perf_counter() - started - 1.0))
                return cores


def drive(server, bodies: list[bytes], window: float, patience: Patience) -> dict:
    """A short warm-up at 32 clients (not counted), then 1, 32 and 128 clients in turn, each
    once the machine is quiet (or ``patience`` ran out), with the other processes' CPU use
    during the run."""
    load(server, EMBED, bodies, JSON, BATCH, 2.0)
    runs = {}
    for clients in CLIENTS:
        before = patience.settle(server)
        others = Others(server)
        run = load(server, EMBED, bodies, JSON, clients, window)
        runs[str(clients)] = {k: v for k, v in run.items() if k != "server_cpu_cores"} | {
            "server_cpu_cores": sum(run["server_cpu_cores"].values()),
            "others_cpu_cores": others.cores(),
            "others_cpu_cores_before": before,
        }
    return runs


def bench(quick: bool, engines: tuple[str, ...] = TEXT_ENGINES) -> dict:
    window = 5.0 if quick else 10.0  # seconds of each load run
    # how long to wait for a quiet machine before each load run, and in all
    patience = Patience(10.0, 60.0) if quick else Patience(20.0, 120.0)
    n_single = 100 if quick else 300  # single-text forwards of the in-process anchors
    batch_reps = 10 if quick else 20
    wall_started, busy_before, own_before = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
    work = Path(tempfile.mkdtemp(prefix="mc-bench-peers-"))
    program = infinity_venv(work / "infinity-install.log")
    results: dict = {
        "machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, no GPU",
        "infinity_version": INFINITY_VERSION,
        "window_s": window,
        "engines": list(engines),
    }
    try:
        # one volume per engine, each filled by the real downloader in a process of its own;
        # Infinity reads the torch volume's snapshot, so that one is always filled
        volumes = {e: work / e / "models" for e in dict.fromkeys(("torch", *engines))}
        envs: dict[str, dict[str, str]] = {}
        fetch_s = {}
        with HFMirror() as mirror:
            mirror.add_repo(fixtures.MINILM, fixtures.minilm_dir())
            for engine, models in volumes.items():
                envs[engine] = volume_env(models, mirror.url, engine)
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "modelcache", "fetch"],
                    env=cli_env(envs[engine]),
                    capture_output=True,
                    text=True,
                )
                if done.returncode:
                    raise RuntimeError(f"fetch ({engine}) exited {done.returncode}:\n{done.stdout}{done.stderr}")
                fetch_s[engine] = time.perf_counter() - started
        results["fetch_s"] = fetch_s
        snapshot, graphs = {}, {}
        for engine, models in volumes.items():
            layout = Layout(models)
            artifact = read_lock(layout).get(fixtures.MINILM)
            snapshot[engine] = layout.snapshot(artifact.source, artifact.commit)
            wanted = "model_int8.onnx" if engine == "onnx-int8" else "model.onnx"
            graph = [f.path for f in artifact.files if f.path.endswith("/" + wanted) or f.path == wanted]
            if engine in ONNX:
                if not graph:
                    raise RuntimeError(f"the {engine} volume's lock names no {wanted}")
                graphs[engine] = layout.abs(graph[0])

        # the in-process anchors, on this thread, before any server starts ----------------------
        results["others_cpu_cores_before_anchors"] = patience.settle(None)
        raw = raw_forward(snapshot["torch"], n_single, batch_reps)
        results["torch_forward"] = {
            "one_forward_rps": raw["one_forward_rps"],
            "single_p50_ms": pct(raw["single_s"], 0.5) * 1000,
            "single_p99_ms": pct(raw["single_s"], 0.99) * 1000,
            "batch32_texts_per_s": raw["batch32_texts_per_s"],
        }
        results["ort_forward"] = {
            engine: ort_forward(graph, snapshot[engine], n_single, batch_reps) for engine, graph in graphs.items()
        }

        # the servers, one at a time -------------------------------------------------------------
        bodies = [text_body(f"{TEXT} {c}") for c in range(max(CLIENTS))]
        probe = "Infinity and modelcache serve the same MiniLM snapshot."
        servers: dict[str, dict] = {}
        vectors = {}
        print("bench: peers: infinity …", file=sys.stderr, flush=True)
        infinity = Infinity(program, snapshot["torch"], work, work / "infinity.log")
        try:
            vectors["infinity"] = embed_one(infinity.url, probe)
            servers["infinity"] = {"ready_s": infinity.ready_seconds, "runs": drive(infinity, bodies, window, patience)}
            servers["infinity"]["pss_bytes"] = infinity.rss()["pss_total"]
        finally:
            infinity.stop()
        for engine in engines:
            print(f"bench: peers: modelcache {engine} …", file=sys.stderr, flush=True)
            server = Server(envs[engine], work / f"modelcache-{engine}.log")
            try:
                vectors[engine] = embed_one(server.url, probe)
                servers[engine] = {"ready_s": server.ready_seconds, "runs": drive(server, bodies, window, patience)}
                servers[engine]["pss_bytes"] = server.rss()["pss_total"]
            finally:
                server.stop()
        # the same model and pooling on both sides: a guard that the rows compare like with like
        reference = vectors.get("torch", vectors["infinity"])
        results["cosine_to_torch_engine"] = {name: cosine(v, reference) for name, v in vectors.items()}
        if "torch" in vectors and results["cosine_to_torch_engine"]["infinity"] < 0.999:
            raise RuntimeError(f"Infinity's vector differs from modelcache's: {results['cosine_to_torch_engine']}")
        results["servers"] = servers
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - wall_started
    others = (busy_cpu_seconds() - busy_before) - (own_cpu_seconds() - own_before)
    results["other_processes_cpu_share"] = max(0.0, others) / (results["wall_s"] * (os.cpu_count() or 1))
    return results


# --- the report ---------------------------------------------------------------------------------


def verdict(ratio: float, goal: float) -> str:
    return f"{ratio:.2f}x, {'met' if ratio >= goal else 'not met'}"


def report(r: dict) -> str:
    servers, torch_fwd, ort = r["servers"], r["torch_forward"], r["ort_forward"]

    def name(server: str) -> str:
        return f"Infinity {r['infinity_version']}" if server == "infinity" else f"modelcache {server}"

    def rps(server: str, clients: int) -> float:
        return servers[server]["runs"][str(clients)]["ok_per_s"]

    def p99(server: str, clients: int) -> float:
        return servers[server]["runs"][str(clients)]["p99_ms"]

    noisy: list[float] = []
    lines = [
        "| server | " + " | ".join(f"{c} client{'s' if c > 1 else ''}: req/s, p50 / p99" for c in CLIENTS) + " |",
        "|---|" + "---|" * len(CLIENTS),
    ]
    for server, figures in servers.items():
        cells = []
        for clients in CLIENTS:
            run = figures["runs"][str(clients)]
            cell = f"{run['ok_per_s']:.0f}, {run['p50_ms']:.1f} / {run['p99_ms']:.1f} ms"
            if run["status_429"] or run["failed"]:
                cell += f" ({run['status_429']} 429s, {run['failed']} failed)"
            if run["others_cpu_cores"] > NOISY:
                noisy.append(run["others_cpu_cores"])
                cell += " †"
            cells.append(cell)
        lines.append(f"| {name(server)} | " + " | ".join(cells) + " |")
    throughput = "\n".join(lines)
    if noisy:
        throughput += (
            f"\n\n† other processes on the machine kept {min(noisy):.2f}–{max(noisy):.2f} of a core busy during"
            " that run: the server had less than the whole machine"
        )

    rows: list[tuple[str, str, str, str]] = []
    onnx_engines = [e for e in ONNX if e in servers]
    for engine in onnx_engines:
        for clients in CLIENTS:
            rows.append(
                (
                    f"{engine} vs Infinity, {clients} client{'s' if clients > 1 else ''} (goal >= {VS_INFINITY}x)",
                    f"{rps(engine, clients):.0f} req/s",
                    f"Infinity: {rps('infinity', clients):.0f} req/s",
                    verdict(rps(engine, clients) / rps("infinity", clients), VS_INFINITY),
                )
            )
        if "torch" in servers:
            rows.append(
                (
                    f"{engine} vs the torch engine, 1 client (goal >= {VS_TORCH_1}x)",
                    f"{rps(engine, 1):.0f} req/s",
                    f"torch engine: {rps('torch', 1):.0f} req/s",
                    verdict(rps(engine, 1) / rps("torch", 1), VS_TORCH_1),
                )
            )
        rows.append(
            (
                f"{engine}, 1 client, p99 (goal <= Infinity's)",
                f"{p99(engine, 1):.1f} ms",
                f"Infinity: {p99('infinity', 1):.1f} ms",
                f"{p99(engine, 1) / p99('infinity', 1):.2f}x, "
                + ("met" if p99(engine, 1) <= p99("infinity", 1) else "not met"),
            )
        )
        batch = ort[engine]["batch32_texts_per_s"]
        rows.append(
            (
                f"{engine}, 32 clients vs one in-process ONNX Runtime forward of 32 texts (goal >= {VS_ORT_32}x)",
                f"{rps(engine, 32):.0f} req/s",
                f"{ort[engine]['graph']}: {batch:.0f} texts/s",
                verdict(rps(engine, 32) / batch, VS_ORT_32),
            )
        )
    if not onnx_engines:
        rows.append(("ONNX engine goals", "not measured: no ONNX text engine in this run", "-", "-"))
    if "torch" in servers:
        rows += [
            (
                "torch engine vs Infinity, " + ", ".join(f"{c}" for c in CLIENTS) + " clients",
                ", ".join(f"{rps('torch', c):.0f}" for c in CLIENTS) + " req/s",
                "Infinity: " + ", ".join(f"{rps('infinity', c):.0f}" for c in CLIENTS) + " req/s",
                ", ".join(f"{rps('torch', c) / rps('infinity', c):.2f}x" for c in CLIENTS),
            ),
            (
                "torch engine, 1 client vs one torch forward per request in-process",
                f"{rps('torch', 1):.0f} req/s",
                f"{torch_fwd['one_forward_rps']:.0f} req/s",
                f"{rps('torch', 1) / torch_fwd['one_forward_rps']:.2f}x",
            ),
            (
                "torch engine, 32 clients vs one torch forward of 32 texts in-process",
                f"{rps('torch', 32):.0f} req/s",
                f"{torch_fwd['batch32_texts_per_s']:.0f} texts/s",
                f"{rps('torch', 32) / torch_fwd['batch32_texts_per_s']:.2f}x",
            ),
        ]
    for engine in onnx_engines:
        rows.append(
            (
                f"{engine}, 1 client vs one ONNX Runtime forward per request in-process",
                f"{rps(engine, 1):.0f} req/s",
                f"{ort[engine]['one_forward_rps']:.0f} req/s",
                f"{rps(engine, 1) / ort[engine]['one_forward_rps']:.2f}x",
            )
        )
    ready = ", ".join(f"{name(s)} {f['ready_s']:.1f} s" for s, f in servers.items())
    pss = ", ".join(f"{name(s)} {f['pss_bytes'] / 2**20:.0f} MiB" for s, f in servers.items())
    machine = f"machine: {r['machine']}; part's wall time {r['wall_s']:.0f} s"
    if r.get("other_processes_cpu_share", 0) > 0.05:
        machine += f"; other processes kept {r['other_processes_cpu_share']:.0%} of its CPU time busy during this run"
    return (
        f"{machine}\n\n{throughput}\n\n{table(rows)}\n\n"
        f"Start to ready: {ready}. Memory after the runs (PSS of every process of the server): {pss}."
    )


NOTES = """- *servers*: Infinity (`infinity_emb v2`, PyPI `infinity-emb[server,torch]`, in a venv of
  its own with the project's CPU torch) serves the MiniLM snapshot folder of the volume the
  downloader filled for the torch engine: `--engine torch --device cpu --batch-size 32
  --no-vector-disk-cache` (its default disk cache would answer a repeated text without a
  forward), HF_HUB_OFFLINE=1, its other defaults. modelcache serves a volume per text engine,
  filled by `modelcache fetch` with the same `MODELCACHE_TEXT_ENGINE` (for the ONNX engines
  the downloader exports the graph and quantizes it), MiniLM alone, batches of at most 32,
  `MODELCACHE_QUEUE_SIZE=256` so that 128 clients are all queued rather than answered 429.
  Both log one access line per request (their defaults). One server at a time.
- *load*: the service part's generator: N keep-alive clients (threads of the benchmark's
  process, sharing the CPUs with the server), each posting one text (`{"model", "input":
  "<text>", "encoding_format": "float"}`) after another for the window; answers counted
  within it; a short 32-client warm-up first. p50 / p99 over every answer of the window.
  Each run (and the anchors) waits until the machine's other processes use less than a
  tenth of a core for a second, 20 s at most (2 minutes in all); the other processes' CPU
  during each run is recorded, and a run where it exceeded a quarter of a core is marked †.
- *anchors*, in-process on the main thread before any server starts: the torch forwards as
  in the service part (tokenise, forward, mean pool, normalise; one text, and the 32
  clients' texts at once), and the same on an ONNX Runtime session of the graph from each
  ONNX engine's volume (every CPU for one operator, all graph optimisations).
- Accuracy of the int8 graph is measured elsewhere, not here.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="shorter load runs and fewer in-process forwards")
    parser.add_argument(
        "--engines",
        default=",".join(TEXT_ENGINES),
        help=f"modelcache text engines to run, comma-separated (default: {','.join(TEXT_ENGINES)})",
    )
    args = parser.parse_args()
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    unknown = [e for e in engines if e not in TEXT_ENGINES]
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(TEXT_ENGINES)}")
    results = bench(args.quick, engines)
    if args.json:  # first: the figures survive a report that fails
        args.json.write_text(json.dumps(results, indent=2))
    print(report(results))


if __name__ == "__main__":
    main()
