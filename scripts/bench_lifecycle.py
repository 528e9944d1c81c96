#!/usr/bin/env python3
"""Live model management benchmarks, each measured side by side with its anchor in one run.

    scripts/test --version >/dev/null       # once: makes .venv with everything installed
    .venv/bin/python scripts/bench_lifecycle.py [--json out.json] [--quick]

A volume with the real all-MiniLM-L6-v2, a tiny BERT as a second text model and YuNet,
from the project's loopback mirror. Measures:
  1. hot reload under 32 clients: a new revision of MiniLM is fetched while 32 clients
     embed with it back to back; time from `POST /admin/reload` until the new revision
     serves, and failed requests, vs stopping the service and starting it again until ready
  2. memory: total RSS (HTTP process + model processes) after unloading MiniLM vs before it
     was loaded
  3. first request to an unloaded model: its latency vs loading the model alone
     (`POST /admin/models/{id}/load`)
  4. a budget smaller than Whisper's peak: Whisper tiny.en and MiniLM under a 250 MiB
     budget, transcribe and embed in turns (answers that were 200, goal all), each
     model's load size and peak as measured, and the sequence's time vs the same
     sequence with no budget (the cost of taking turns)
"""

from __future__ import annotations

import os
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
from benchlib import Conn, Server, text_body  # noqa: E402

from modelcache.fetch import run_fetch  # noqa: E402
from modelcache.progress import PlainReporter  # noqa: E402
from modelcache.settings import Settings  # noqa: E402
from modelcache.testing.hfmirror import HFMirror  # noqa: E402
from tests.conftest import SENTENCE  # noqa: E402
from tests.support import fixtures  # noqa: E402
from tests.support.whisper_ckpt import speak  # noqa: E402

MINILM, TINY_BERT = fixtures.MINILM, fixtures.TINY_BERT
CLIENTS = 32
MIB = 2**20


ADMIN = {"Authorization": "Bearer bench-admin-key"}


def admin_key_file(work: Path) -> Path:
    """Model control is off without an admin key: the bench turns it on with one of its own."""
    path = work / "admin_key"
    path.write_text(ADMIN["Authorization"].split()[1] + "\n")
    return path


def fetch(env: dict[str, str]) -> None:
    run_fetch(Settings.from_env(env), reporter=PlainReporter(open(os.devnull, "w")))


def revision(server: Server, model: str) -> str | None:
    return httpx2.get(f"{server.url}/health", timeout=30).json()["models"].get(model, {}).get("revision")


def reload_under_load(server: Server, mirror: HFMirror, env: dict[str, str], n: int) -> dict:
    """32 clients embed with MiniLM back to back; meanwhile a new revision is fetched and the
    service reloaded. Time from the reload call until it answers (the new revision serves
    from then on) and every answer's status."""
    statuses: list[int] = []
    stop = threading.Event()

    def client() -> None:
        conn = Conn(server.url)
        body = text_body(benchlib.TEXT)
        while not stop.is_set():
            status, _ = conn.post(benchlib.EMBED, body)
            statuses.append(status)
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    seconds = []
    try:
        time.sleep(2)
        source = fixtures.minilm_dir()
        files: dict = {p.relative_to(source).as_posix(): p for p in source.rglob("*") if p.is_file()}
        for i in range(n):
            files["README.md"] = f"# revision {i} of the same weights\n".encode()
            commit = mirror.add_repo(MINILM, files)
            fetch({**env, "MODELCACHE_TEXT_EMBEDDING": f"{MINILM}@{commit},{TINY_BERT}"})
            started = time.perf_counter()
            answer = httpx2.post(f"{server.url}/admin/reload", headers=ADMIN, timeout=600)
            seconds.append(time.perf_counter() - started)
            if answer.status_code != 200 or revision(server, MINILM) != commit:
                raise RuntimeError(f"reload {i}: {answer.status_code} {answer.text[:300]}")
            time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return {
        "clients": CLIENTS,
        "reloads": n,
        "reload_s": seconds,
        "requests": len(statuses),
        "failed": sum(1 for s in statuses if s != 200),
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
    }


def restart(server: Server, env: dict[str, str], log: Path) -> tuple[Server, float]:
    """Stop the service and start it again until /health/ready; the seconds it took."""
    started = time.perf_counter()
    server.stop()
    server = Server(env, log)
    return server, time.perf_counter() - started


def admin(server: Server, action: str, model: str) -> float:
    started = time.perf_counter()
    answer = httpx2.post(f"{server.url}/admin/models/{model}/{action}", headers=ADMIN, timeout=600)
    if answer.status_code != 200:
        raise RuntimeError(f"{action} {model}: {answer.status_code} {answer.text[:300]}")
    return time.perf_counter() - started


def settle(server: Server) -> int:
    """Total RSS once it stops moving (a stopped process's pages go back within a moment)."""
    time.sleep(1)
    return server.rss()["total"]


def on_demand(server: Server, n: int) -> dict:
    """With a budget that holds every model: RSS before MiniLM is loaded, after a request
    loaded it, after it was unloaded; the first request's latency vs an explicit load."""
    conn = Conn(server.url)
    body = text_body(benchlib.TEXT)
    first, loads, rss = [], [], []
    for _ in range(n):
        admin(server, "unload", MINILM)
        before = settle(server)
        started = time.perf_counter()
        conn.post_ok(benchlib.EMBED, body)  # loads MiniLM, then embeds
        first.append(time.perf_counter() - started)
        loaded = settle(server)
        admin(server, "unload", MINILM)
        after = settle(server)
        rss.append({"before_load": before, "loaded": loaded, "after_unload": after})
        loads.append(admin(server, "load", MINILM))
    conn.close()
    return {"first_request_s": first, "load_s": loads, "rss": rss}


def turns(env: dict[str, str], log: Path, wav: bytes, rounds: int) -> dict:
    """Transcribe, embed, ... (``rounds`` of each, transcribe first and last): statuses,
    seconds for the whole sequence, and each model's load size and peak from /health."""
    server = Server(env, log)
    try:
        statuses, started = [], time.perf_counter()
        with httpx2.Client(timeout=600) as http:
            for i in range(2 * rounds + 1):
                if i % 2 == 0:
                    answer = http.post(
                        f"{server.url}/v1/audio/transcriptions",
                        files={"file": ("s.wav", wav)},
                        data={"model": "whisper-1"},
                    )
                else:
                    answer = http.post(f"{server.url}/v1/embeddings", json={"model": MINILM, "input": "hello"})
                statuses.append(answer.status_code)
        seconds = time.perf_counter() - started
        models = httpx2.get(f"{server.url}/health", timeout=30).json()["models"]
    finally:
        server.stop()
    return {
        "statuses": statuses,
        "seconds": seconds,
        "sizes": {m: {"load": v["load_bytes"], "peak": v["peak_bytes"]} for m, v in models.items()},
    }


def bench(quick: bool) -> dict:
    reps = 2 if quick else 3
    work = Path(tempfile.mkdtemp(prefix="mc-bench-life-"))
    results: dict = {"repetitions": reps}
    with HFMirror() as mirror:
        models = fixtures.fill_mirror(mirror, work)
        env = models.env(
            work / "vol" / "models",
            MODELCACHE_WHISPER="none",
            MODELCACHE_VISION="none",
            MODELCACHE_MLX="",
            MODELCACHE_TEXT_EMBEDDING=f"{MINILM},{TINY_BERT}",
            MODELCACHE_REQUEST_TIMEOUT="900",
            MODELCACHE_ADMIN_KEY_FILE=str(admin_key_file(work)),
        )
        fetch(env)
        pair = models.env(
            work / "pair" / "models", MODELCACHE_VISION="none", MODELCACHE_FACE="none", MODELCACHE_MLX=""
        )  # Whisper tiny.en (openai-whisper) and MiniLM
        fetch(pair)
        # 1. reload under load vs restart -------------------------------------------------------
        server = Server(env, work / "reload.log")
        try:
            results["reload"] = reload_under_load(server, mirror, env, reps)
            restarts = []
            for i in range(reps):
                server, seconds = restart(server, env, work / f"restart{i}.log")
                restarts.append(seconds)
            results["reload"]["restart_to_ready_s"] = restarts
        finally:
            server.stop()
    # 2 and 3. on demand, under a budget that holds every model ------------------------------
    server = Server({**env, "MODELCACHE_MEMORY_BUDGET": "16g"}, work / "budget.log")
    try:
        results["on_demand"] = on_demand(server, reps)
        info = httpx2.get(f"{server.url}/v1/models/{MINILM}", timeout=30).json()
        results["on_demand"]["load_seconds_reported"] = info["load_seconds"]
    finally:
        server.stop()
    # 4. a budget smaller than Whisper's peak ---------------------------------------------------
    wav = speak(SENTENCE, work / "speech.wav").read_bytes()
    rounds = 2 if quick else 4
    results["turns"] = {
        "budget": turns({**pair, "MODELCACHE_MEMORY_BUDGET": "250m"}, work / "turns.log", wav, rounds),
        "no_budget": turns(pair, work / "turns-free.log", wav, rounds),
    }
    return results


def report(r: dict) -> str:
    rel, od = r["reload"], r["on_demand"]
    reload_s, restart_s = statistics.median(rel["reload_s"]), statistics.median(rel["restart_to_ready_s"])
    first_s, load_s = statistics.median(od["first_request_s"]), statistics.median(od["load_s"])
    before = statistics.median(x["before_load"] for x in od["rss"])
    after = statistics.median(x["after_unload"] for x in od["rss"])
    loaded = statistics.median(x["loaded"] for x in od["rss"])
    n = r["repetitions"]
    rows = [
        (
            f"hot reload of a new MiniLM revision under {rel['clients']} clients: call to serving (median of {n})",
            f"{reload_s:.2f} s",
            f"process restart to ready: {restart_s:.2f} s",
            f"{reload_s / restart_s:.2f}x",
        ),
        (
            f"requests that failed during {rel['reloads']} reloads (goal 0)",
            f"{rel['failed']} of {rel['requests']:,}",
            "",
            "",
        ),
        (
            "total RSS after unloading MiniLM vs before it was loaded (goal within 10%)",
            f"{after / MIB:.0f} MiB (loaded: {loaded / MIB:.0f} MiB)",
            f"before: {before / MIB:.0f} MiB",
            f"{after / before:.2f}x",
        ),
        (
            f"first request to an unloaded MiniLM vs loading it alone (goal <= 1.1x; median of {n})",
            f"{first_s:.2f} s",
            f"`POST /admin/models/…/load`: {load_s:.2f} s",
            f"{first_s / load_s:.2f}x",
        ),
    ]
    if "turns" in r:
        budget, free = r["turns"]["budget"], r["turns"]["no_budget"]
        ok = sum(code == 200 for code in budget["statuses"])
        sizes = "; ".join(
            f"{m}: {v['load'] / MIB:.0f} MiB loaded, {v['peak'] / MIB:.0f} MiB peak" for m, v in budget["sizes"].items()
        )
        rows += [
            (
                f"transcribe/embed in turns under a 250 MiB budget, {len(budget['statuses'])} requests (goal all 200)",
                f"{ok} of {len(budget['statuses'])} answered 200",
                sizes,
                "",
            ),
            (
                "the same sequence: time under the 250 MiB budget vs no budget (both models kept)",
                f"{budget['seconds']:.2f} s",
                f"no budget: {free['seconds']:.2f} s",
                f"{budget['seconds'] / free['seconds']:.2f}x",
            ),
        ]
    return benchlib.table(rows)


def main() -> None:
    benchlib.cli(__doc__, bench, report)


if __name__ == "__main__":
    main()
