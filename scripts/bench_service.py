#!/usr/bin/env python3
"""Service benchmarks, each measured side by side with its anchor in one run.

    scripts/test --version >/dev/null       # once: makes .venv with everything installed
    .venv/bin/python scripts/bench_service.py [--json out.json] [--quick]

The models come from the project's loopback mirror into a fresh volume (the real
all-MiniLM-L6-v2, Whisper tiny.en in both formats, a tiny SigLIP, a YuNet-shaped graph).
Measures:
  1. fail-fast: process start -> exit on a missing file, vs a bare script importing torch
  2. cold start -> ready, vs a bare script loading the same models
  3. embeddings: latency per request (p50, p99) over HTTP vs the raw forward of the model
  4. embeddings throughput at 1 / 8 / 32 concurrent single-text clients vs one forward per request
  5. speech-to-text real-time factor, both engines, vs the `whisper` command-line tool
  6. RSS vs weight bytes, and its drift over 1000 requests
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))

import httpx2  # noqa: E402

from modelcache.fetch import run_fetch  # noqa: E402
from modelcache.layout import Layout  # noqa: E402
from modelcache.lock import read_lock  # noqa: E402
from modelcache.progress import PlainReporter  # noqa: E402
from modelcache.settings import Settings  # noqa: E402
from tests.support import fixtures  # noqa: E402
from tests.support.hfmirror import HFMirror  # noqa: E402
from tests.support.whisper_ckpt import speak  # noqa: E402

TEXT = "A man is eating food in a small restaurant by the sea."
SPEECH = (
    "The quick brown fox jumps over the lazy dog. Please call me tomorrow morning about the meeting. "
    "We will review the quarterly numbers and then decide which projects continue next year. "
    "Bring the printed report, a laptop, and the notes from last week."
)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MODELCACHE_", "HF_"))}
    return {**base, "PYTHONPATH": str(ROOT / "services"), **env}


class Server:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelcache", "serve"],
            env=cli_env({**env, "MODELCACHE_HOST": "127.0.0.1", "MODELCACHE_PORT": str(self.port)}),
            stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(log.read_text())
            try:
                if httpx2.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            time.sleep(0.05)
        self.ready_seconds = time.perf_counter() - self.started

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def timed_run(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


BARE_LOAD = """
import sys, time
t0 = time.perf_counter()
import torch, whisper, cv2
from transformers import AutoModel, AutoProcessor, AutoTokenizer
from whisper.model import ModelDimensions, Whisper
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
m = Whisper(ModelDimensions(**ckpt["dims"])); m.load_state_dict(ckpt["model_state_dict"]); m.eval()
AutoTokenizer.from_pretrained(sys.argv[2]); AutoModel.from_pretrained(sys.argv[2]).eval()
AutoProcessor.from_pretrained(sys.argv[3]); AutoModel.from_pretrained(sys.argv[3]).eval()
cv2.FaceDetectorYN.create(sys.argv[4], "", (320, 320))
print(time.perf_counter() - t0)
"""


def raw_forward(minilm: Path, n: int) -> tuple[list[float], float]:
    """Latencies of single-text forwards (tokenise + model + mean pool + normalise) in-process."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    model = AutoModel.from_pretrained(minilm).eval()
    times = []
    with torch.inference_mode():
        for i in range(n + 10):
            started = time.perf_counter()
            enc = tokenizer([f"{TEXT} {i}"], padding=True, truncation=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            vector = (hidden * mask).sum(1) / mask.sum(1)
            torch.nn.functional.normalize(vector, dim=1)
            if i >= 10:
                times.append(time.perf_counter() - started)
    return times, n / sum(times)


def bench(quick: bool) -> dict:
    n_lat = 100 if quick else 300
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, no GPU",
    }
    work = Path(tempfile.mkdtemp(prefix="mc-bench-svc-"))
    with HFMirror() as mirror:
        models = fixtures.fill_mirror(mirror, work)
        env = models.env(work / "vol" / "models", MODELCACHE_MLX="")
        fw_env = models.env(work / "fw" / "models", MODELCACHE_MLX="", MODELCACHE_ASR_ENGINE="faster-whisper",
                            MODELCACHE_WHISPER_URL="", MODELCACHE_VISION="none", MODELCACHE_FACE="none",
                            MODELCACHE_TEXT_EMBEDDING="none")  # fmt: skip
        run_fetch(Settings.from_env(env), reporter=PlainReporter(open(os.devnull, "w")))
        run_fetch(Settings.from_env(fw_env), reporter=PlainReporter(open(os.devnull, "w")))
    layout = Layout(Path(env["MODELCACHE_DIR"]))
    lock = read_lock(layout)
    snapshot = {a.name: layout.snapshot(a.source, a.commit) for a in lock.artifacts if a.commit}
    yunet_file = layout.abs(lock.get(fixtures.YUNET).files[0].path)
    checkpoint = layout.whisper / "tiny.en.pt"
    served_bytes = sum(a.size for a in lock.artifacts)

    # 1. fail-fast ------------------------------------------------------------------------------
    broken = work / "broken" / "models"
    shutil.copytree(layout.root, broken, symlinks=True)
    (broken / "whisper" / "tiny.en.pt").unlink()
    broken_env = cli_env({**env, "MODELCACHE_DIR": str(broken)})
    ours = [timed_run([sys.executable, "-m", "modelcache", "serve"], broken_env) for _ in range(5)]
    bare = [timed_run([sys.executable, "-c", "import torch, sys; sys.exit(4)"], broken_env) for _ in range(5)]
    results["fail_fast"] = {"modelcache_s": statistics.median(ours), "import_torch_then_fail_s": statistics.median(bare)}

    # 2. cold start -> ready ------------------------------------------------------------------
    bare_args = [str(checkpoint), str(snapshot[fixtures.MINILM]), str(snapshot[fixtures.SIGLIP]), str(yunet_file)]
    bare_load = [timed_run([sys.executable, "-c", BARE_LOAD, *bare_args], cli_env(env)) for _ in range(3)]
    ready = []
    for i in range(3):
        server = Server(env, work / f"cold{i}.log")
        ready.append(server.ready_seconds)
        server.stop()
    results["cold_start"] = {"modelcache_ready_s": statistics.median(ready), "bare_load_s": statistics.median(bare_load)}

    # 3 + 4. embeddings --------------------------------------------------------------------------
    raw_times, raw_rps = raw_forward(snapshot[fixtures.MINILM], n_lat)
    server = Server(env, work / "server.log")
    try:
        body = {"model": fixtures.MINILM, "encoding_format": "float"}
        latencies = []
        with httpx2.Client(timeout=60) as http:
            for i in range(n_lat + 10):
                started = time.perf_counter()
                http.post(f"{server.url}/v1/embeddings", json={**body, "input": f"{TEXT} {i}"}).raise_for_status()
                if i >= 10:
                    latencies.append(time.perf_counter() - started)
        results["embedding_latency"] = {
            "http_p50_ms": pct(latencies, 0.5) * 1000, "http_p99_ms": pct(latencies, 0.99) * 1000,
            "raw_p50_ms": pct(raw_times, 0.5) * 1000, "raw_p99_ms": pct(raw_times, 0.99) * 1000,
        }  # fmt: skip
        throughput = {}
        for clients in (1, 8, 32):
            per_client = 16 if quick else 32

            def worker(c: int) -> None:
                with httpx2.Client(timeout=120) as http:
                    for j in range(per_client):
                        http.post(f"{server.url}/v1/embeddings", json={**body, "input": f"{TEXT} {c}-{j}"}).raise_for_status()

            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(worker, range(clients)))
            throughput[clients] = clients * per_client / (time.perf_counter() - started)
        results["embedding_throughput"] = {"requests_per_s": throughput, "one_forward_per_request_rps": raw_rps}

        # 6. RSS drift over 1000 requests --------------------------------------------------
        import base64
        import io

        import numpy as np
        from PIL import Image

        png = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(png, "PNG")
        image = base64.b64encode(png.getvalue()).decode()
        rss_start = server.rss()
        with httpx2.Client(timeout=60) as http:
            for i in range(1000):
                kind = i % 4
                if kind == 0:
                    http.post(f"{server.url}/v1/images/embeddings", json={"model": fixtures.SIGLIP, "input": image})
                elif kind == 1:
                    http.post(f"{server.url}/v1/faces/detect", json={"input": image})
                else:
                    http.post(f"{server.url}/v1/embeddings", json={**body, "input": f"{TEXT} {i}"})
                if i == 99:
                    rss_100 = server.rss()
        rss_end = server.rss()
        results["memory"] = {"weight_bytes": served_bytes, "rss_after_load": rss_start, "rss_after_100": rss_100,
                             "rss_after_1000": rss_end}  # fmt: skip

        # 5. speech-to-text RTF -----------------------------------------------------------
        wav = speak(SPEECH, work / "speech.wav")
        import soundfile

        duration = soundfile.info(str(wav)).duration
        audio = wav.read_bytes()
        fw_server = Server(fw_env, work / "fw.log")
        try:
            rtf = {}
            for name, srv in (("openai-whisper", server), ("faster-whisper", fw_server)):
                times = []
                for _ in range(3):
                    started = time.perf_counter()
                    httpx2.post(f"{srv.url}/v1/audio/transcriptions", files={"file": ("s.wav", audio)},
                                data={"model": "whisper-1"}, timeout=300).raise_for_status()  # fmt: skip
                    times.append(time.perf_counter() - started)
                rtf[name] = statistics.median(times) / duration
        finally:
            fw_server.stop()
        cli = shutil.which("whisper", path=str(Path(sys.executable).parent))
        cli_rtf = None
        if cli and shutil.which("ffmpeg"):
            out = work / "cli-out"
            times = [timed_run([cli, str(wav), "--model", str(checkpoint), "--language", "en", "--fp16", "False",
                                "--output_dir", str(out), "--output_format", "txt"], cli_env({})) for _ in range(3)]  # fmt: skip
            cli_rtf = statistics.median(times) / duration
        results["asr"] = {"audio_s": duration, "rtf": rtf, "whisper_cli_rtf": cli_rtf}
    finally:
        server.stop()
    shutil.rmtree(work, ignore_errors=True)
    return results


def report(r: dict) -> str:
    f, c, e, t, m, a = (r["fail_fast"], r["cold_start"], r["embedding_latency"], r["embedding_throughput"],
                        r["memory"], r["asr"])  # fmt: skip
    mib = 2**20
    rows = [
        ("fail-fast, missing file (start -> exit)", f"{f['modelcache_s']:.2f} s",
         f"import torch, then fail: {f['import_torch_then_fail_s']:.2f} s",
         f"{f['import_torch_then_fail_s'] / f['modelcache_s']:.1f}x sooner"),
        ("cold start -> ready (4 models)", f"{c['modelcache_ready_s']:.2f} s",
         f"bare script loading them: {c['bare_load_s']:.2f} s", f"{c['modelcache_ready_s'] / c['bare_load_s']:.2f}x"),
        ("embedding, 1 text, p50 / p99", f"{e['http_p50_ms']:.1f} / {e['http_p99_ms']:.1f} ms",
         f"raw forward: {e['raw_p50_ms']:.1f} / {e['raw_p99_ms']:.1f} ms",
         f"+{e['http_p50_ms'] - e['raw_p50_ms']:.1f} ms (p50)"),
    ]  # fmt: skip
    for clients, rps in t["requests_per_s"].items():
        rows.append((f"embeddings, {clients} concurrent clients", f"{rps:.0f} req/s",
                     f"one forward per request: {t['one_forward_per_request_rps']:.0f} req/s",
                     f"{rps / t['one_forward_per_request_rps']:.2f}x"))  # fmt: skip
    for engine, value in a["rtf"].items():
        anchor = f"whisper CLI: {a['whisper_cli_rtf']:.3f}" if a["whisper_cli_rtf"] else "whisper CLI: not run (no ffmpeg)"
        ratio = f"{a['whisper_cli_rtf'] / value:.1f}x faster" if a["whisper_cli_rtf"] else "-"
        rows.append((f"ASR real-time factor, {engine} ({a['audio_s']:.1f} s audio)", f"{value:.3f}", anchor, ratio))
    rows.append(("RSS after load vs weight bytes", f"{m['rss_after_load'] / mib:.0f} MiB",
                 f"weights: {m['weight_bytes'] / mib:.0f} MiB", f"{m['rss_after_load'] / m['weight_bytes']:.1f}x"))  # fmt: skip
    rows.append(("RSS drift, requests 100 -> 1000", f"{(m['rss_after_1000'] - m['rss_after_100']) / mib:+.1f} MiB",
                 f"after 100: {m['rss_after_100'] / mib:.0f} MiB", "-"))  # fmt: skip
    lines = [f"machine: {r['machine']}", "", "| measure | modelcache | anchor | ratio |", "|---|---|---|---|"]
    lines += [f"| {a_} | {b} | {c_} | {d} |" for a_, b, c_, d in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    results = bench(args.quick)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
