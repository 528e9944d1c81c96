#!/usr/bin/env python3
"""Live transcription benchmarks, each measured side by side with its anchor in one run.

    scripts/test --version >/dev/null       # once: makes .venv with everything installed
    .venv/bin/python scripts/bench_live.py [--json out.json] [--quick]

A volume with the real Whisper tiny.en (faster-whisper, CTranslate2, float32 on CPU) and
all-MiniLM-L6-v2 from the project's loopback mirror; speech made by espeak-ng from known sentences, in a seeded
random order with pauses of 0.4–1.6 s between them (no two minutes alike). Measures:
  1. time to first delta on 60 s of speech (``stream=true``) vs the same request
     unstreamed, with ``chunking_strategy=auto`` and without
  2. stream overhead: the streamed request's total time vs the unstreamed one
  3. 10 minutes of speech with ``chunking_strategy=auto`` (Silero VAD, batched decoding)
     vs the same file as one block: real-time factor and word error rate
  4. realtime: a WebSocket session fed a WAV file at real-time pace, with server VAD;
     from the end of each phrase (the server's speech_stopped) to its ``completed``
     event, median and p95, and the session's real-time factor, with MiniLM embedding
     traffic beside it (one client, 20 requests a second); that traffic's latency while the
     session runs vs alone
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import benchlib  # noqa: E402  (also puts the project on sys.path)
import httpx2  # noqa: E402
import numpy as np  # noqa: E402
from benchlib import Server  # noqa: E402

from modelcache.fetch import run_fetch  # noqa: E402
from modelcache.progress import PlainReporter  # noqa: E402
from modelcache.settings import Settings  # noqa: E402
from modelcache.testing.hfmirror import HFMirror  # noqa: E402
from tests.support import fixtures  # noqa: E402
from tests.support.whisper_ckpt import speak, wer  # noqa: E402

RATE = 16_000
SENTENCES = [
    "The train to the coast leaves at half past nine every morning.",
    "Please remember to water the plants while I am away.",
    "Our team finished the report two days before the deadline.",
    "The museum is closed on Mondays but open late on Fridays.",
    "She bought fresh bread, a bag of apples and some cheese.",
    "It is going to rain in the afternoon, so bring an umbrella.",
    "The new bridge will open to traffic at the end of the year.",
    "He called his brother to ask about the weekend plans.",
    "Most of the students walked to school when the weather was good.",
    "The kitchen smelled of coffee and warm cinnamon rolls.",
    "We need three more chairs for the meeting in the large room.",
    "The pilot said that the flight would land twenty minutes early.",
    "A small boat drifted slowly across the quiet lake.",
    "The doctor asked him to come back for a check next week.",
    "Children played football in the park until it got dark.",
    "The library has a large collection of old maps and letters.",
    "Turn left at the second light and the hotel is on your right.",
    "My neighbour repairs old bicycles in his garage.",
    "The concert was sold out within an hour of the announcement.",
    "They planted tomatoes, beans and carrots in the garden.",
    "The price of fuel went up again at the start of the month.",
    "Write your name at the top of every page of the form.",
    "The cat slept on the window sill in the afternoon sun.",
    "Our office moves to the third floor of the building next spring.",
]


def fetch(env: dict[str, str]) -> None:
    run_fetch(Settings.from_env(env), reporter=PlainReporter(open(os.devnull, "w")))


class Speech:
    """Known sentences spoken once each; recordings of any length are put together from them."""

    def __init__(self, work: Path) -> None:
        import soundfile as sf

        self.clips = []
        for i, text in enumerate(SENTENCES):
            audio, rate = sf.read(speak(text, work / f"s{i}.wav"), dtype="float32")
            assert rate == RATE
            self.clips.append((text, audio))

    def recording(self, seconds: float, seed: int) -> tuple[np.ndarray, str]:
        rng = random.Random(seed)
        pieces, texts, total = [], [], 0
        while total < seconds * RATE:
            text, audio = rng.choice(self.clips)
            pause = np.zeros(int(rng.uniform(0.4, 1.6) * RATE), np.float32)
            pieces += [audio, pause]
            texts.append(text)
            total += len(audio) + len(pause)
        return np.concatenate(pieces), " ".join(texts)


def wav(audio: np.ndarray) -> bytes:
    import io

    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, audio, RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


def transcribe(url: str, audio: bytes, **data: str) -> tuple[float, str]:
    started = time.perf_counter()
    r = httpx2.post(
        f"{url}/v1/audio/transcriptions",
        files={"file": ("speech.wav", audio)},
        data={"model": "whisper-1", **data},
        timeout=3600,
    )
    r.raise_for_status()
    return time.perf_counter() - started, r.json()["text"]


def stream(url: str, audio: bytes, **data: str) -> tuple[float, float, str]:
    """Time to the first delta, total time, and the done text of a streamed request."""
    started, first, text = time.perf_counter(), None, None
    with httpx2.Client(timeout=3600) as client:
        with client.stream(
            "POST",
            f"{url}/v1/audio/transcriptions",
            files={"file": ("speech.wav", audio)},
            data={"model": "whisper-1", "stream": "true", **data},
        ) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if event["type"] == "transcript.text.delta" and first is None:
                    first = time.perf_counter() - started
                elif event["type"] == "transcript.text.done":
                    text = event["text"]
                elif event["type"] == "error":
                    raise RuntimeError(event["error"]["message"])
    assert first is not None and text is not None
    return first, time.perf_counter() - started, text


def first_delta(url: str, audio: bytes, reps: int, **data: str) -> dict:
    """Streamed vs unstreamed, in turns, ``reps`` times each."""
    firsts, streamed, plain = [], [], []
    for _ in range(reps):
        a, b, streamed_text = stream(url, audio, **data)
        c, plain_text = transcribe(url, audio, **data)
        assert streamed_text == plain_text, "the streamed text differs from the unstreamed one"
        firsts.append(a)
        streamed.append(b)
        plain.append(c)
    return {"first_delta_s": firsts, "streamed_s": streamed, "unstreamed_s": plain}


def bench(quick: bool) -> dict:
    reps = 2 if quick else 3
    work = Path(tempfile.mkdtemp(prefix="mc-bench-live-"))
    results: dict = {"repetitions": reps}
    speech = Speech(work)
    with HFMirror() as mirror:
        models = fixtures.fill_mirror(mirror, work)
        env = models.env(
            work / "vol" / "models",
            MODELCACHE_ASR_ENGINE="faster-whisper",
            MODELCACHE_WHISPER_URL="",
            MODELCACHE_VISION="none",
            MODELCACHE_FACE="none",
            MODELCACHE_MLX="",
            MODELCACHE_TEXT_EMBEDDING=fixtures.MINILM,  # for the isolation rows
        )
        fetch(env)
    server = Server({**env, "MODELCACHE_REQUEST_TIMEOUT": "3600"}, work / "live.log")
    try:
        minute, _ = speech.recording(60, seed=1)
        minute_wav = wav(minute)
        transcribe(server.url, minute_wav)  # warm: the first call loads Silero and fills caches
        transcribe(server.url, minute_wav, chunking_strategy="auto")
        results["minute"] = {
            "seconds": len(minute) / RATE,
            "chunked": first_delta(server.url, minute_wav, reps, chunking_strategy="auto"),
            "block": first_delta(server.url, minute_wav, reps),
        }
        long_s = 180 if quick else 600
        long, text = speech.recording(long_s, seed=2)
        long_wav = wav(long)
        chunked_s, chunked_text = transcribe(server.url, long_wav, chunking_strategy="auto")
        block_s, block_text = transcribe(server.url, long_wav)
        results["long"] = {
            "seconds": len(long) / RATE,
            "chunked_s": chunked_s,
            "block_s": block_s,
            "chunked_wer": wer(text, chunked_text),
            "block_wer": wer(text, block_text),
        }
        results["realtime"] = realtime(server, speech, quick)
    finally:
        server.stop()
    return results


def realtime(server: Server, speech: Speech, quick: bool) -> dict:
    """One session at real-time pace through scripts/realtime-client's own code."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("realtime_client", str(ROOT / "scripts" / "realtime-client"))
    spec = importlib.util.spec_from_loader("realtime_client", loader)
    assert spec is not None
    client = importlib.util.module_from_spec(spec)
    loader.exec_module(client)
    audio, text = speech.recording(30 if quick else 90, seed=3)
    at24 = np.interp(np.arange(0, len(audio), RATE / 24_000), np.arange(len(audio)), audio)
    pcm = (np.clip(at24, -1, 1) * 32767).astype("<i2").tobytes()
    url = server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    alone = embed_latencies(server.url, seconds=20 if quick else 40)
    during: list[float] = []
    stop = threading.Event()
    embedder = threading.Thread(target=lambda: during.extend(embed_latencies(server.url, stop=stop)))
    embedder.start()
    try:
        result = client.run_session(url, pcm, speed=1.0, chunk_ms=40)
    finally:
        stop.set()
        embedder.join()
    if result["errors"]:
        raise RuntimeError(f"realtime session errors: {result['errors']}")
    return {
        "embed_alone_s": alone,
        "embed_during_s": during,
        "audio_s": result["audio_s"],
        "phrases": result["committed"],
        "latency_s": result["latency_s"],
        "transcribe_s": result["transcribe_s"],
        "rtf": sum(result["transcribe_s"]) / result["audio_s"],
        "wer": wer(text, " ".join(result["transcripts"])),
    }


EMBED_RATE = 20  # requests a second: steady traffic beside the session, not a saturating load


def embed_latencies(url: str, seconds: float = 0.0, stop: threading.Event | None = None) -> list[float]:
    """One client embedding a short text EMBED_RATE times a second (keep-alive), for
    ``seconds`` or until ``stop``."""
    latencies = []
    body = json.dumps({"model": fixtures.MINILM, "input": "a short text to embed"}).encode()
    begin = time.perf_counter()
    end = begin + seconds
    with httpx2.Client(timeout=60) as client:
        while (stop is not None and not stop.is_set()) or (stop is None and time.perf_counter() < end):
            started = time.perf_counter()
            r = client.post(f"{url}/v1/embeddings", content=body, headers={"content-type": "application/json"})
            r.raise_for_status()
            latencies.append(time.perf_counter() - started)
            wait = begin + len(latencies) / EMBED_RATE - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
    return latencies


def report(r: dict) -> str:
    m, long = r["minute"], r["long"]
    n = r["repetitions"]
    med = statistics.median
    rows = []
    for name, label in (("chunked", "`chunking_strategy=auto`"), ("block", "one block (no chunking)")):
        x = m[name]
        first, streamed, plain = med(x["first_delta_s"]), med(x["streamed_s"]), med(x["unstreamed_s"])
        rows.append(
            (
                f"time to first delta, {m['seconds']:.0f} s of speech, {label} (goal <= 0.2x; median of {n})",
                f"{first:.2f} s",
                f"unstreamed answer: {plain:.2f} s",
                f"{first / plain:.2f}x",
            )
        )
        rows.append(
            (
                f"streamed total time, {label} (goal <= 1.05x)",
                f"{streamed:.2f} s",
                f"unstreamed: {plain:.2f} s",
                f"{streamed / plain:.2f}x",
            )
        )
    minutes = long["seconds"] / 60
    rows.append(
        (
            f"{minutes:.0f} min of speech, `chunking_strategy=auto` vs one block: real-time factor (goal >= 2x faster)",
            f"RTF {long['chunked_s'] / long['seconds']:.3f} ({long['chunked_s']:.1f} s)",
            f"RTF {long['block_s'] / long['seconds']:.3f} ({long['block_s']:.1f} s)",
            f"{long['block_s'] / long['chunked_s']:.2f}x faster",
        )
    )
    rows.append(
        (
            f"{minutes:.0f} min of speech: word error rate (goal: chunked within 1 point)",
            f"{long['chunked_wer'] * 100:.1f} %",
            f"one block: {long['block_wer'] * 100:.1f} %",
            f"{(long['chunked_wer'] - long['block_wer']) * 100:+.1f} points",
        )
    )
    rt = r.get("realtime") or {}
    if rt:
        rows.append(
            (
                f"realtime session, {rt['audio_s']:.0f} s at real-time pace, {rt['phrases']} phrases: server's `speech_stopped` to `completed`, median / p95",
                f"{med(rt['latency_s']):.2f} s / {benchlib.pct(rt['latency_s'], 0.95):.2f} s",
                "",
                "",
            )
        )
        rows.append(
            (
                "realtime session: real-time factor (commit to transcript, summed, over the audio's length); WER",
                f"RTF {rt['rtf']:.3f}; WER {rt['wer'] * 100:.1f} %",
                "",
                "",
            )
        )
        alone, during = rt["embed_alone_s"], rt["embed_during_s"]
        rows.append(
            (
                f"MiniLM embeddings, 1 client at {EMBED_RATE}/s, while the realtime session runs vs alone: p50 / p99",
                f"{med(during) * 1000:.1f} / {benchlib.pct(during, 0.99) * 1000:.1f} ms",
                f"alone: {med(alone) * 1000:.1f} / {benchlib.pct(alone, 0.99) * 1000:.1f} ms",
                f"{med(during) / med(alone):.2f}x / {benchlib.pct(during, 0.99) / benchlib.pct(alone, 0.99):.2f}x",
            )
        )
    return benchlib.table(rows)


if __name__ == "__main__":
    benchlib.cli(__doc__ or "", bench, report)
