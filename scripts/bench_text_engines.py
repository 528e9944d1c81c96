#!/usr/bin/env python3
"""The text engines side by side (MODELCACHE_TEXT_ENGINE=torch, onnx, onnx-int8, openvino), on
real MiniLM weights, each a real downloader fill and a real service:

    .venv/bin/python scripts/bench_text_engines.py [--json out.json] [--quick]

- *fetch*: a cold `modelcache fetch` of MiniLM alone per engine, from the loopback mirror
  (its MiniLM repo ships no ONNX graph, so `onnx` exports one and `onnx-int8` also
  quantizes it: the downloader's own cost of those engines);
- *volume*: the bytes the lock holds for the model;
- *1 client*: single-text requests, one at a time, p50 and p99 (the same texts for all);
- *memory*: the model process's private bytes (USS: pages no other process shares) after
  the load and the requests, and its resident bytes;
- *isolation*: the same single-text requests while Whisper tiny.en transcribes a long
  recording in its own process (`MODELCACHE_ASR_NICE=10`): does the new engine keep the
  latency the torch engine keeps (issue 11's figures)?
- *accuracy*: each engine's vectors for real English sentences (docs/*.md, cut into
  sentences) against the torch engine's: cosine, mean and worst.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_service  # noqa: E402
import benchlib  # noqa: E402  (also puts the project on sys.path)

from modelcache.fetch.runner import run_fetch  # noqa: E402
from modelcache.progress import PlainReporter  # noqa: E402
from modelcache.settings import TEXT_ENGINES, Settings  # noqa: E402
from modelcache.testing.hfmirror import HFMirror  # noqa: E402
from tests.support import fixtures  # noqa: E402
from tests.support.whisper_ckpt import speak  # noqa: E402

ENGINES = TEXT_ENGINES
ONLY_TEXT = {"MODELCACHE_WHISPER": "none", "MODELCACHE_VISION": "none", "MODELCACHE_FACE": "none", "MODELCACHE_MLX": ""}


def sentences(limit: int) -> list[str]:
    """Real English prose of varied length: the docs' paragraphs (tables, code and headings
    left out, markup dropped), cut into sentences."""
    found: list[str] = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for paragraph in text.split("\n\n"):
            if paragraph.lstrip().startswith(("|", "#", "<", "-", "1.")):
                continue
            plain = re.sub(r"\](\([^)]*\))?|[`*\[]", "", " ".join(paragraph.split()))
            for sentence in re.split(r"(?<=[.!?])\s+", plain):
                if 4 <= len(sentence.split()) <= 60 and sentence not in found:
                    found.append(sentence)
                if len(found) == limit:
                    return found
    return found


def private_bytes(pid: int) -> int:
    """Private_Clean + Private_Dirty of one process (its USS), from /proc/PID/smaps_rollup."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total


def embed_all(url: str, texts: list[str]) -> list[list[float]]:
    conn = benchlib.Conn(url)
    try:
        out = []
        for start in range(0, len(texts), 32):
            body = json.dumps({"model": fixtures.MINILM, "input": texts[start : start + 32]}).encode()
            out += [d["embedding"] for d in json.loads(conn.post_ok(benchlib.EMBED, body))["data"]]
        return out
    finally:
        conn.close()


def one_client(url: str, texts: list[str], n: int) -> list[float]:
    conn = benchlib.Conn(url)
    times = []
    try:
        for i in range(n + 20):
            started = time.perf_counter()
            conn.post_ok(benchlib.EMBED, benchlib.text_body(texts[i % len(texts)]))
            if i >= 20:  # the first requests warm the connection and the model
                times.append(time.perf_counter() - started)
    finally:
        conn.close()
    return times


def bench(quick: bool) -> dict:
    import numpy as np

    n = 150 if quick else 400
    texts = sentences(120 if quick else 300)
    work = Path(tempfile.mkdtemp(prefix="mc-bench-engines-"))
    long_wav = bench_service.long_speech(speak(bench_service.SPEECH, work / "speech.wav"), 30 if quick else 60)
    results: dict = {"texts": len(texts), "requests": n, "engines": {}}
    vectors: dict[str, np.ndarray] = {}
    quiet = PlainReporter(open(os.devnull, "w"))
    with HFMirror() as mirror:
        models = fixtures.fill_mirror(mirror, work)
        for engine in ENGINES:
            env = models.env(
                work / engine / "models",
                **ONLY_TEXT,
                MODELCACHE_TEXT_ENGINE=engine,
                MODELCACHE_REQUEST_TIMEOUT="900",
            )
            started = time.perf_counter()
            lock = run_fetch(Settings.from_env(env), reporter=quiet).lock
            fetch_s = time.perf_counter() - started
            # Whisper tiny.en beside it, for the isolation run (issue 11's: ASR at nice 10)
            env = {**env, "MODELCACHE_WHISPER": "tiny.en"}
            run_fetch(Settings.from_env(env), reporter=quiet)
            server = benchlib.Server(env, work / f"{engine}.log")
            try:
                pid = server.pids()[fixtures.MINILM]
                loaded = private_bytes(pid)
                times = one_client(server.url, texts, n)
                vectors[engine] = np.array(embed_all(server.url, texts), dtype=np.float32)
                rss, _ = benchlib.proc_memory(pid)
                results["engines"][engine] = {
                    "fetch_s": fetch_s,
                    "volume_bytes": lock.get(fixtures.MINILM).size,
                    "ready_s": server.ready_seconds,
                    "p50_ms": 1000 * statistics.median(times),
                    "p99_ms": 1000 * benchlib.pct(times, 0.99),
                    "private_after_load": loaded,
                    "private_after_requests": private_bytes(pid),
                    "rss_after_requests": rss,
                    "isolation": bench_service.isolation(server, long_wav, 100 if quick else 300),
                }
            finally:
                server.stop()
    exact = vectors["torch"]
    for engine in ENGINES[1:]:
        got = vectors[engine]
        cosines = (got * exact).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(exact, axis=1))
        results["engines"][engine]["cosine_mean"] = float(cosines.mean())
        results["engines"][engine]["cosine_min"] = float(cosines.min())
    return results


def report(r: dict) -> str:
    e = r["engines"]

    def row(label: str, fmt) -> str:
        return f"| {label} | " + " | ".join(fmt(e[name]) for name in ENGINES) + " |"

    mib = 2**20
    lines = [
        "| measure | " + " | ".join(ENGINES) + " |",
        "|---|" + "---|" * len(ENGINES),
        row("cold fetch of MiniLM (export / quantize included)", lambda x: f"{x['fetch_s']:.1f} s"),
        row("bytes in the volume for the model", lambda x: f"{x['volume_bytes'] / mib:.1f} MiB"),
        row("service start to ready", lambda x: f"{x['ready_s']:.1f} s"),
        row("1 client, p50", lambda x: f"{x['p50_ms']:.1f} ms"),
        row("1 client, p99", lambda x: f"{x['p99_ms']:.1f} ms"),
        row("model process, private bytes after load", lambda x: f"{x['private_after_load'] / mib:.0f} MiB"),
        row(
            "model process, private bytes after the requests", lambda x: f"{x['private_after_requests'] / mib:.0f} MiB"
        ),
        row("model process, resident bytes", lambda x: f"{x['rss_after_requests'] / mib:.0f} MiB"),
        row(
            "1 client during a transcription (Whisper tiny.en), p50",
            lambda x: f"{x['isolation']['during_p50_ms']:.1f} ms",
        ),
        row("1 client during a transcription, p99", lambda x: f"{x['isolation']['during_p99_ms']:.1f} ms"),
        row(
            "the transcription: alone / with the embeddings alongside",
            lambda x: (
                f"{x['isolation']['transcription_alone_s']:.1f} / {x['isolation']['transcription_during_s']:.1f} s"
            ),
        ),
        row(
            f"cosine to torch's vectors, {r['texts']} sentences: mean / worst",
            lambda x: f"{x['cosine_mean']:.4f} / {x['cosine_min']:.4f}" if "cosine_mean" in x else "(reference)",
        ),
    ]
    speed = e["torch"]["p50_ms"] / e["onnx"]["p50_ms"]
    lines.append("")
    lines.append(
        f"onnx vs torch at 1 client (p50): **{speed:.2f}x** (target ≥1.5x: {'met' if speed >= 1.5 else 'not met'}); "
        + "".join(f"{n} vs torch: {e['torch']['p50_ms'] / e[n]['p50_ms']:.2f}x; " for n in ENGINES[2:])
        + f"{r['requests']} requests per engine, `MODELCACHE_THREADS` unset (every CPU)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    benchlib.cli(__doc__ or "", bench, report)
