#!/usr/bin/env python3
"""Service benchmarks, each measured side by side with its anchor in one run.

    scripts/test --version >/dev/null       # once: makes .venv with everything installed
    .venv/bin/python scripts/bench_service.py [--json out.json] [--quick]

The models come from the project's loopback mirror into a fresh volume (the real
all-MiniLM-L6-v2, Whisper tiny.en in both formats, a tiny SigLIP, a YuNet-shaped graph).
The in-process anchors run first, all on this process's main thread (torch's CPU kernels
slow down once a second thread of a process has run them). The load comes from light
keep-alive clients (http.client, one thread each) that share the machine's CPUs with the
service; their CPU use is recorded with each load run.
Measures:
  1. fail-fast: process start -> exit on a missing file, vs a bare script importing torch
  2. cold start -> ready, vs a bare script loading the same models
  3. embeddings: latency per request (p50, p99) over HTTP vs the raw forward of the model,
     and MiniLM's time per call inside its process vs the same forward in-process
  4. embeddings throughput at 1 / 8 / 32 concurrent single-text clients vs one forward per
     request (1, 8) and vs one in-process forward of a batch of 32 texts (32)
  5. overload: 128 and 256 clients that retry every 429 at once; goodput vs the 32-client capacity
  6. image embeddings, 16 concurrent one-image clients vs one forward per image in-process
  7. isolation: embedding latency during a 60 s transcription vs idle, and the
     transcription's own time vs alone
  8. speech-to-text real-time factor: openai-whisper vs bare `transcribe` in-process and vs
     the `whisper` command-line tool; faster-whisper float32 (default) and int8, with WER
  9. RSS of the HTTP process plus every model process vs weight bytes, and its drift from
     request 1,000 to 10,000 of a mix of text, image and face requests
"""

from __future__ import annotations

import base64
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))

import httpx2  # noqa: E402
from benchlib import (  # noqa: E402  (also puts the project on sys.path)
    EMBED,
    FACES,
    IMAGES,
    JSON,
    TEXT,
    Conn,
    Server,
    busy_cpu_seconds,
    cli,
    cli_env,
    metric,
    multipart,
    own_cpu_seconds,
    pct,
    table,
    text_body,
)

from modelcache.fetch import run_fetch  # noqa: E402
from modelcache.layout import Layout  # noqa: E402
from modelcache.progress import PlainReporter  # noqa: E402
from modelcache.settings import Settings  # noqa: E402
from modelcache.testing.hfmirror import HFMirror  # noqa: E402
from modelcache.volume_lock import read_lock  # noqa: E402
from tests.support import fixtures  # noqa: E402
from tests.support.whisper_ckpt import speak, wer  # noqa: E402

SPEECH = (
    "The quick brown fox jumps over the lazy dog. Please call me tomorrow morning about the meeting. "
    "We will review the quarterly numbers and then decide which projects continue next year. "
    "Bring the printed report, a laptop, and the notes from last week."
)
LONG_AUDIO_S = 60  # the transcription that runs while embeddings are measured
OVERLOAD = (128, 256)  # clients that retry a 429 at once


def random_png(size: int, seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def load(server: Server, path: str, bodies: list[bytes], content_type: str, clients: int, seconds: float) -> dict:
    """``clients`` threads, each on a keep-alive connection of its own, posting its body
    (``bodies[i % len(bodies)]``) back to back for ``seconds``. A 429 is sent again at once,
    with no back-off (the worst case for the service). Only answers that arrive within the
    window count. Also: the CPU the clients and each server process used meanwhile, how many
    requests the service shed before the body or refused at a model's queue, and the inputs
    and the model's time per call."""
    ready = threading.Barrier(clients + 1, timeout=120)
    outcomes: list[tuple[list[float], int, int]] = [([], 0, 0)] * clients

    def client(i: int) -> None:
        conn = Conn(server.url)
        conn.connect()  # before the window opens
        body = bodies[i % len(bodies)]
        ok: list[float] = []
        refused = failed = 0
        ready.wait()
        deadline = time.perf_counter() + seconds
        while True:
            started = time.perf_counter()
            status, _ = conn.post(path, body, content_type)
            done = time.perf_counter()
            if done > deadline:
                break
            if status == 200:
                ok.append(done - started)
            elif status == 429:
                refused += 1
            else:
                failed += 1
        conn.close()
        outcomes[i] = (ok, refused, failed)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    before_metrics, before_cpu = server.metrics(), server.cpu()
    ready.wait()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    after_metrics, after_cpu = server.metrics(), server.cpu()
    latencies = [t for ok, _, _ in outcomes for t in ok]

    def delta(name: str) -> float:  # over every model: only the one under load changes
        return metric(after_metrics, name) - metric(before_metrics, name)

    calls = delta("modelcache_batch_size_count")
    return {
        "clients": clients,
        "seconds": seconds,
        "ok": len(latencies),
        "ok_per_s": len(latencies) / seconds,
        "status_429": sum(r for _, r, _ in outcomes),
        "failed": sum(f for _, _, f in outcomes),
        "p50_ms": pct(latencies, 0.5) * 1000 if latencies else None,
        "p99_ms": pct(latencies, 0.99) * 1000 if latencies else None,
        "shed_before_body": delta("modelcache_shed_total"),
        "refused_at_queue": delta("modelcache_rejected_total"),
        "inputs_per_call": delta("modelcache_batch_size_sum") / calls if calls else None,
        "model_ms_per_call": delta("modelcache_model_seconds_sum") / calls * 1000 if calls else None,
        "client_cpu_cores": (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime) / wall,
        "server_cpu_cores": {name: (after_cpu.get(name, 0.0) - cpu) / wall for name, cpu in before_cpu.items()},
    }


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


# --- in-process anchors (this process's main thread) ---------------------------------------


def time_forwards(forward, batch: list[str], n: int, batch_reps: int) -> tuple[list[float], list[float]]:
    """Seconds of ``n`` one-text calls of ``forward`` and of ``batch_reps`` calls on ``batch``,
    after a few warm-up calls of each."""
    single, batched = [], []
    for i in range(n + 10):
        started = time.perf_counter()
        forward([f"{TEXT} {i}"])
        if i >= 10:  # the first calls warm up
            single.append(time.perf_counter() - started)
    for i in range(batch_reps + 2):
        started = time.perf_counter()
        forward(batch)
        if i >= 2:
            batched.append(time.perf_counter() - started)
    return single, batched


def raw_forward(minilm: Path, n: int, batch_reps: int) -> dict:
    """MiniLM in-process: the latencies of ``n`` single-text forwards (tokenise + model + mean
    pool + normalise, what the service's engine does per call), and the texts per second of
    a forward of 32 texts at once (tokenised together, padded to the longest)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    model = AutoModel.from_pretrained(minilm).eval()

    def forward(texts: list[str]):
        enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)

    batch = [f"{TEXT} {c}" for c in range(32)]  # the texts the 32 clients send
    with torch.inference_mode():
        single, batched = time_forwards(forward, batch, n, batch_reps)
    return {
        "single_s": single,
        "one_forward_rps": n / sum(single),
        "batch32_texts_per_s": len(batch) / statistics.median(batched),
    }


def raw_image_forward(siglip: Path, pngs: list[bytes], n: int) -> float:
    """Images per second, one at a time in-process: decode the PNG, preprocess, image tower,
    normalise (the service's engine does the same per batch, after decoding each image)."""
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(siglip)
    model = AutoModel.from_pretrained(siglip).eval()
    times = []
    with torch.inference_mode():
        for i in range(n + 5):
            started = time.perf_counter()
            image = Image.open(io.BytesIO(pngs[i % len(pngs)])).convert("RGB")
            pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
            output = model.get_image_features(pixel_values=pixels)
            features = output if hasattr(output, "shape") else output.pooler_output
            torch.nn.functional.normalize(features, dim=1)
            if i >= 5:
                times.append(time.perf_counter() - started)
    return n / sum(times)


def bare_transcribe(checkpoint: Path, wav: Path, reps: int) -> dict:
    """openai-whisper's own ``transcribe`` in-process, the model loaded as the service's engine
    loads it, with the same options: beam 5, best of 5, temperature fallback, fp32, English.
    Each run reads the WAV too (the service decodes the upload)."""
    import soundfile
    import torch
    from whisper.model import ModelDimensions, Whisper

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = Whisper(ModelDimensions(**ckpt["dims"]))
    model.load_state_dict(ckpt["model_state_dict"])
    model.eval()
    options = {
        "task": "transcribe",
        "language": "en",
        "temperature": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        "beam_size": 5,
        "best_of": 5,
        "fp16": False,
        "verbose": None,
    }
    audio, rate = soundfile.read(str(wav), dtype="float32")
    model.transcribe(audio[: 5 * rate], **options)  # warm-up
    times, text = [], ""
    for _ in range(reps):
        started = time.perf_counter()
        audio, _ = soundfile.read(str(wav), dtype="float32")
        text = model.transcribe(audio, **options)["text"].strip()
        times.append(time.perf_counter() - started)
    return {"seconds": statistics.median(times), "text": text}


# --- measurements against a running service --------------------------------------------------


def transcribe(url: str, audio: bytes) -> tuple[float, str]:
    """Seconds for one transcription request, and its text."""
    started = time.perf_counter()
    response = httpx2.post(
        f"{url}/v1/audio/transcriptions", files={"file": ("s.wav", audio)}, data={"model": "whisper-1"}, timeout=600
    )
    response.raise_for_status()
    return time.perf_counter() - started, response.json()["text"]


def embedding_latency(server: Server, n: int) -> dict:
    """One client, single texts back to back; and from /metrics, MiniLM's time per call inside
    its process over the same calls (the histogram's _sum / _count: the mean, as its buckets
    are too coarse for a median)."""
    conn = Conn(server.url)
    for i in range(10):  # warm-up
        conn.post_ok(EMBED, text_body(f"{TEXT} w{i}"))
    before = server.metrics()
    times = []
    for i in range(n):
        started = time.perf_counter()
        conn.post_ok(EMBED, text_body(f"{TEXT} {i}"))
        times.append(time.perf_counter() - started)
    after = server.metrics()
    conn.close()

    def delta(name: str) -> float:
        return metric(after, name, model=fixtures.MINILM) - metric(before, name, model=fixtures.MINILM)

    calls = delta("modelcache_model_seconds_count")
    return {
        "http_p50_ms": pct(times, 0.5) * 1000,
        "http_p99_ms": pct(times, 0.99) * 1000,
        "model_calls": calls,
        "model_mean_ms": delta("modelcache_model_seconds_sum") / calls * 1000,
        "inference_mean_ms": delta("modelcache_inference_seconds_sum") / calls * 1000,
        "inputs_per_call": delta("modelcache_batch_size_sum") / calls,
    }


def long_speech(wav: Path, seconds: int = LONG_AUDIO_S) -> bytes:
    """``wav`` repeated to ``seconds`` long, as WAV bytes (the isolation run's transcription)."""
    import numpy as np
    import soundfile

    samples, rate = soundfile.read(str(wav), dtype="float32")
    tiled = io.BytesIO()
    soundfile.write(tiled, np.tile(samples, seconds * rate // len(samples) + 1)[: seconds * rate], rate, format="WAV")
    return tiled.getvalue()


def isolation(server: Server, long_wav: bytes, n_idle: int) -> dict:
    """Single-text embeddings from one client (10 ms apart) while the service is idle, then
    while it transcribes ``long_wav`` (only those answered before the transcription ended
    count); and the transcription's time alone vs with the embeddings alongside."""
    conn = Conn(server.url)

    def embedding(i: int) -> float:
        started = time.perf_counter()
        conn.post_ok(EMBED, text_body(f"{TEXT} {i}"))
        return time.perf_counter() - started

    idle = []
    for i in range(n_idle + 10):
        seconds = embedding(i)
        if i >= 10:
            idle.append(seconds)
        time.sleep(0.01)
    alone, _ = transcribe(server.url, long_wav)

    finished: dict[str, float] = {}

    def long_request() -> None:
        finished["seconds"], _ = transcribe(server.url, long_wav)
        finished["at"] = time.perf_counter()

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(0.5)  # the upload is in and the transcription has started
    during: list[tuple[float, float]] = []  # (answered at, latency)
    i = 0
    while thread.is_alive():
        seconds = embedding(i)
        during.append((time.perf_counter(), seconds))
        time.sleep(0.01)
        i += 1
    thread.join()
    conn.close()
    kept = [seconds for at, seconds in during if at < finished["at"]]
    if not kept:
        raise RuntimeError("the transcription ended before any embedding was answered")
    return {
        "idle_p50_ms": pct(idle, 0.5) * 1000,
        "idle_p99_ms": pct(idle, 0.99) * 1000,
        "during_p50_ms": pct(kept, 0.5) * 1000,
        "during_p99_ms": pct(kept, 0.99) * 1000,
        "during_requests": len(kept),
        "still_running_s": finished["at"] - max(at for at, _ in during if at < finished["at"]),
        "transcription_alone_s": alone,
        "transcription_during_s": finished["seconds"],
    }


def memory_drift(server: Server, total: int, image: bytes) -> dict:
    """RSS (HTTP process + every model process) at request 1,000 and at ``total`` of a mix:
    one image embedding, one face detection, two text embeddings in every four requests."""
    encoded = base64.b64encode(image).decode()
    image_body = json.dumps({"model": fixtures.SIGLIP, "input": encoded}).encode()
    face_body = json.dumps({"input": encoded}).encode()
    conn = Conn(server.url)
    failed = 0
    at_1000 = None
    started = time.perf_counter()
    for i in range(total):
        kind = i % 4
        if kind == 0:
            status, _ = conn.post(IMAGES, image_body)
        elif kind == 1:
            status, _ = conn.post(FACES, face_body)
        else:
            status, _ = conn.post(EMBED, text_body(f"{TEXT} {i}"))
        failed += status != 200
        if i + 1 == 1000:
            at_1000 = server.rss()
    seconds = time.perf_counter() - started
    conn.close()
    return {"requests": total, "seconds": seconds, "failed": failed, "rss_at_1000": at_1000, "rss_at_end": server.rss()}


def bench(quick: bool) -> dict:
    n_lat = 100 if quick else 300  # single requests for latency percentiles
    window = 5.0 if quick else 10.0  # seconds of each load run
    reps = 2 if quick else 3  # timed repetitions (process starts, transcriptions)
    n_drift = 5000 if quick else 10000  # requests of the memory-drift mix
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, no GPU",
        "repetitions": reps,
    }
    # the machine's CPU time not spent by this run: on a shared machine, a sign of disturbed figures
    started, busy_before, own_before = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
    work = Path(tempfile.mkdtemp(prefix="mc-bench-svc-"))
    with HFMirror() as mirror:
        models = fixtures.fill_mirror(mirror, work)
        # a deadline far past any request here: a slow run must measure slowly, not answer 504
        env = models.env(work / "vol" / "models", MODELCACHE_MLX="", MODELCACHE_REQUEST_TIMEOUT="900")
        fw_env = models.env(
            work / "fw" / "models",
            MODELCACHE_MLX="",
            MODELCACHE_REQUEST_TIMEOUT="900",
            MODELCACHE_ASR_ENGINE="faster-whisper",
            MODELCACHE_WHISPER_URL="",
            MODELCACHE_VISION="none",
            MODELCACHE_FACE="none",
            MODELCACHE_TEXT_EMBEDDING="none",
        )
        run_fetch(Settings.from_env(env), reporter=PlainReporter(open(os.devnull, "w")))
        run_fetch(Settings.from_env(fw_env), reporter=PlainReporter(open(os.devnull, "w")))
    layout = Layout(Path(env["MODELCACHE_DIR"]))
    lock = read_lock(layout)
    snapshot = {a.name: layout.snapshot(a.source, a.commit) for a in lock.artifacts if a.commit}
    yunet_file = layout.abs(lock.get(fixtures.YUNET).files[0].path)
    checkpoint = layout.whisper / "tiny.en.pt"
    served_bytes = sum(a.size for a in lock.artifacts)

    # the speech: SPEECH once (about 17 s), and tiled to 60 s for the isolation run
    import soundfile

    wav = speak(SPEECH, work / "speech.wav")
    duration = soundfile.info(str(wav)).duration
    audio = wav.read_bytes()
    long_wav = long_speech(wav)

    # 1. fail-fast ------------------------------------------------------------------------------
    broken = work / "broken" / "models"
    shutil.copytree(layout.root, broken, symlinks=True)
    (broken / "whisper" / "tiny.en.pt").unlink()
    broken_env = cli_env({**env, "MODELCACHE_DIR": str(broken)})
    n_fail = 3 if quick else 5
    ours = [timed_run([sys.executable, "-m", "modelcache", "serve"], broken_env) for _ in range(n_fail)]
    bare = [timed_run([sys.executable, "-c", "import torch, sys; sys.exit(4)"], broken_env) for _ in range(n_fail)]
    results["fail_fast"] = {
        "modelcache_s": statistics.median(ours),
        "import_torch_then_fail_s": statistics.median(bare),
    }

    # 2. cold start -> ready ------------------------------------------------------------------
    bare_args = [str(checkpoint), str(snapshot[fixtures.MINILM]), str(snapshot[fixtures.SIGLIP]), str(yunet_file)]
    bare_load = [timed_run([sys.executable, "-c", BARE_LOAD, *bare_args], cli_env(env)) for _ in range(reps)]
    ready = []
    for i in range(reps):
        server = Server(env, work / f"cold{i}.log")
        ready.append(server.ready_seconds)
        server.stop()
    results["cold_start"] = {
        "modelcache_ready_s": statistics.median(ready),
        "bare_load_s": statistics.median(bare_load),
    }

    # the in-process anchors, on this thread, before the service starts -------------------
    raw = raw_forward(snapshot[fixtures.MINILM], n_lat, 10 if quick else 20)
    pngs = [random_png(224, seed) for seed in range(16)]
    raw_images_per_s = raw_image_forward(snapshot[fixtures.SIGLIP], pngs, 50 if quick else 100)
    in_process_asr = bare_transcribe(checkpoint, wav, reps)

    server = Server(env, work / "server.log")
    try:
        rss_after_load = server.rss()  # before any request

        # 3. latency, and MiniLM's time inside its process --------------------------------------
        latency = embedding_latency(server, n_lat)
        latency.update(
            raw_p50_ms=pct(raw["single_s"], 0.5) * 1000,
            raw_p99_ms=pct(raw["single_s"], 0.99) * 1000,
            raw_mean_ms=statistics.mean(raw["single_s"]) * 1000,
        )
        results["embedding_latency"] = latency

        # 4 + 5. throughput (1 / 8 / 32 clients), then overload (128 / 256 retrying at once) -----
        bodies = [text_body(f"{TEXT} {c}") for c in range(max(OVERLOAD))]
        runs = {}
        for clients in (1, 8, 32, *OVERLOAD):
            runs[str(clients)] = load(server, EMBED, bodies, JSON, clients, window)
            time.sleep(1.0)  # let the queues drain and the CPUs settle
        results["embedding_throughput"] = {
            "requests_per_s": {c: runs[c]["ok_per_s"] for c in ("1", "8", "32")},
            "one_forward_per_request_rps": raw["one_forward_rps"],
            "batch32_forward_texts_per_s": raw["batch32_texts_per_s"],
            "runs": runs,
        }
        results["overload"] = {"capacity_32_rps": runs["32"]["ok_per_s"], **{str(c): runs[str(c)] for c in OVERLOAD}}

        # 6. image embeddings, 16 concurrent clients --------------------------------------------
        image_bodies = [multipart("file", "i.png", png, {"model": fixtures.SIGLIP}) for png in pngs]
        image_run = load(server, IMAGES, [b for b, _ in image_bodies], image_bodies[0][1], 16, window)
        results["image_embeddings"] = {**image_run, "one_forward_per_image_per_s": raw_images_per_s}

        # 7. isolation: embeddings during a long transcription ----------------------------------
        results["isolation"] = {"audio_s": LONG_AUDIO_S, **isolation(server, long_wav, 150 if quick else 300)}

        # 8. speech-to-text: openai-whisper in the service (warm by now) ------------------------
        openai_runs = [transcribe(server.url, audio) for _ in range(reps)]

        # 9. memory drift ---------------------------------------------------------------------
        drift = memory_drift(server, n_drift, random_png(96, 0))
        results["memory"] = {"weight_bytes": served_bytes, "rss_after_load": rss_after_load, **drift}
    finally:
        server.stop()

    # 8. speech-to-text: faster-whisper float32 (the default on CPU), then int8, same volume ----
    rtf = {"openai-whisper": statistics.median(t for t, _ in openai_runs) / duration}
    texts = {"openai-whisper": openai_runs[-1][1], "in-process transcribe": in_process_asr["text"]}
    compute_types = {}
    for name, extra in (("faster-whisper", {}), ("faster-whisper int8", {"MODELCACHE_ASR_COMPUTE_TYPE": "int8"})):
        fw_server = Server({**fw_env, **extra}, work / f"{name.replace(' ', '-')}.log")
        try:
            compute_types[name] = httpx2.get(f"{fw_server.url}/v1/models/whisper-1", timeout=30).json()["compute_type"]
            transcribe(fw_server.url, audio)  # warm-up
            fw_runs = [transcribe(fw_server.url, audio) for _ in range(reps)]
        finally:
            fw_server.stop()
        rtf[name] = statistics.median(t for t, _ in fw_runs) / duration
        texts[name] = fw_runs[-1][1]
    cli = shutil.which("whisper", path=str(Path(sys.executable).parent))
    cli_rtf = None
    if cli and shutil.which("ffmpeg"):
        out = work / "cli-out"
        times = [
            timed_run(
                [
                    cli,
                    str(wav),
                    "--model",
                    str(checkpoint),
                    "--language",
                    "en",
                    "--fp16",
                    "False",
                    "--output_dir",
                    str(out),
                    "--output_format",
                    "txt",
                ],
                cli_env({}),
            )
            for _ in range(reps)
        ]
        cli_rtf = statistics.median(times) / duration
    results["asr"] = {
        "audio_s": duration,
        "rtf": rtf,
        "in_process_rtf": in_process_asr["seconds"] / duration,
        "whisper_cli_rtf": cli_rtf,
        "compute_types": compute_types,
        "wer": {name: wer(SPEECH, text) for name, text in texts.items()},
        "texts": texts,
    }
    shutil.rmtree(work, ignore_errors=True)
    others = (busy_cpu_seconds() - busy_before) - (own_cpu_seconds() - own_before)
    results["other_processes_cpu_share"] = max(0.0, others) / ((time.perf_counter() - started) * (os.cpu_count() or 1))
    return results


def report(r: dict) -> str:
    f, c, e, t = r["fail_fast"], r["cold_start"], r["embedding_latency"], r["embedding_throughput"]
    o, im, iso, m, a = r["overload"], r["image_embeddings"], r["isolation"], r["memory"], r["asr"]
    mib = 2**20
    one = t["one_forward_per_request_rps"]
    rps = t["requests_per_s"]
    rows = [
        (
            "fail-fast, missing file (start -> exit)",
            f"{f['modelcache_s']:.2f} s",
            f"import torch, then fail: {f['import_torch_then_fail_s']:.2f} s",
            f"{f['import_torch_then_fail_s'] / f['modelcache_s']:.1f}x sooner",
        ),
        (
            "cold start -> ready (4 models)",
            f"{c['modelcache_ready_s']:.2f} s",
            f"bare script loading them: {c['bare_load_s']:.2f} s",
            f"{c['modelcache_ready_s'] / c['bare_load_s']:.2f}x",
        ),
        (
            "embedding, 1 text, p50 / p99",
            f"{e['http_p50_ms']:.1f} / {e['http_p99_ms']:.1f} ms",
            f"raw forward: {e['raw_p50_ms']:.1f} / {e['raw_p99_ms']:.1f} ms",
            f"{e['http_p50_ms'] - e['raw_p50_ms']:+.1f} ms (p50)",
        ),
        (
            "MiniLM time per call in its process, 1 text, mean (goal <= 1.1x)",
            f"{e['model_mean_ms']:.2f} ms",
            f"same forward in-process: {e['raw_mean_ms']:.2f} ms",
            f"{e['model_mean_ms'] / e['raw_mean_ms']:.2f}x",
        ),
        (
            "embeddings, 1 client (goal >= 0.9x)",
            f"{rps['1']:.0f} req/s",
            f"one forward per request: {one:.0f} req/s",
            f"{rps['1'] / one:.2f}x",
        ),
        (
            "embeddings, 8 concurrent clients",
            f"{rps['8']:.0f} req/s",
            f"one forward per request: {one:.0f} req/s",
            f"{rps['8'] / one:.2f}x",
        ),
        (
            "embeddings, 32 concurrent clients (goal >= 0.95x)",
            f"{rps['32']:.0f} req/s",
            f"one forward of 32 texts: {t['batch32_forward_texts_per_s']:.0f} texts/s",
            f"{rps['32'] / t['batch32_forward_texts_per_s']:.2f}x",
        ),
    ]
    for clients in OVERLOAD:
        run = o[str(clients)]
        p99 = f"{run['p99_ms']:.0f} ms" if run["p99_ms"] is not None else "-"
        rows.append(
            (
                f"overload: {clients} clients retrying each 429 at once, goodput (goal >= 0.8x)",
                f"{run['ok_per_s']:.0f} req/s; {run['status_429']} 429s; p99 of the 200s {p99}",
                f"32 clients: {o['capacity_32_rps']:.0f} req/s",
                f"{run['ok_per_s'] / o['capacity_32_rps']:.2f}x",
            )
        )
    rows += [
        (
            "image embeddings, 16 concurrent clients, one 224x224 PNG each (goal >= 2x)",
            f"{im['ok_per_s']:.0f} images/s",
            f"one forward per image: {im['one_forward_per_image_per_s']:.0f} images/s",
            f"{im['ok_per_s'] / im['one_forward_per_image_per_s']:.2f}x",
        ),
        (
            f"embedding p50 / p99 during a {iso['audio_s']} s transcription (goal p99 <= 2x)",
            f"{iso['during_p50_ms']:.1f} / {iso['during_p99_ms']:.1f} ms",
            f"idle: {iso['idle_p50_ms']:.1f} / {iso['idle_p99_ms']:.1f} ms",
            f"{iso['during_p99_ms'] / iso['idle_p99_ms']:.2f}x (p99)",
        ),
        (
            "that transcription, with the embeddings alongside",
            f"{iso['transcription_during_s']:.1f} s",
            f"alone: {iso['transcription_alone_s']:.1f} s",
            f"{iso['transcription_during_s'] / iso['transcription_alone_s']:.2f}x",
        ),
        (
            f"ASR real-time factor, openai-whisper ({a['audio_s']:.1f} s audio; goal <= 1.05x)",
            f"{a['rtf']['openai-whisper']:.3f} (WER {a['wer']['openai-whisper']:.1%})",
            f"bare transcribe() in-process: {a['in_process_rtf']:.3f} (WER {a['wer']['in-process transcribe']:.1%})",
            f"{a['rtf']['openai-whisper'] / a['in_process_rtf']:.2f}x",
        ),
    ]
    for engine in ("openai-whisper", "faster-whisper"):
        value = a["rtf"][engine]
        anchor = (
            f"whisper CLI: {a['whisper_cli_rtf']:.3f}" if a["whisper_cli_rtf"] else "whisper CLI: not run (no ffmpeg)"
        )
        ratio = f"{a['whisper_cli_rtf'] / value:.1f}x faster" if a["whisper_cli_rtf"] else "-"
        label = f"{engine} {a['compute_types'][engine]}" if engine in a["compute_types"] else engine
        rows.append((f"ASR real-time factor, {label}", f"{value:.3f}", anchor, ratio))
    fw, fw8 = "faster-whisper", "faster-whisper int8"
    rows.append(
        (
            f"faster-whisper {a['compute_types'][fw8]} vs {a['compute_types'][fw]} (the default): RTF, WER",
            f"{a['rtf'][fw8]:.3f}, WER {a['wer'][fw8]:.1%}",
            f"{a['compute_types'][fw]}: {a['rtf'][fw]:.3f}, WER {a['wer'][fw]:.1%}",
            f"{a['rtf'][fw8] / a['rtf'][fw]:.2f}x (RTF)",
        )
    )
    load_rss = m["rss_after_load"]
    rows.append(
        (
            f"RSS after load: HTTP process + zygote + {len(load_rss['models'])} model processes",
            f"{load_rss['total'] / mib:.0f} MiB (HTTP process {load_rss['http'] / mib:.0f} MiB, "
            f"zygote {load_rss.get('zygote', 0) / mib:.0f} MiB; "
            f"PSS {load_rss['pss_total'] / mib:.0f} MiB)",
            f"weights: {m['weight_bytes'] / mib:.0f} MiB",
            f"{load_rss['total'] / m['weight_bytes']:.1f}x",
        )
    )
    first, last = m["rss_at_1000"]["total"], m["rss_at_end"]["total"]
    rows.append(
        (
            f"RSS drift, requests 1,000 -> {m['requests']:,} of a mix (goal < 2%)",
            f"{(last - first) / mib:+.1f} MiB",
            f"at 1,000: {first / mib:.0f} MiB",
            f"{(last - first) / first:+.2%}",
        )
    )
    machine = f"machine: {r['machine']}"
    if r.get("other_processes_cpu_share", 0) > 0.05:
        machine += f"; other processes kept {r['other_processes_cpu_share']:.0%} of its CPU time busy during this run"
    return f"{machine}\n\n{table(rows)}"


def main() -> None:
    cli(__doc__, bench, report)


if __name__ == "__main__":
    main()
