"""Serving under pressure: models isolated from each other, requests given up are stopped
in the model, overload shed before the body is read, image embeddings batched, the
faster-whisper compute type, and no Hub token in the model processes."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import numpy as np
import pytest
from PIL import Image

from tests.support import fixtures
from tests.support.service import Service, counter, start_service

sf = pytest.importorskip("soundfile")  # the dev extra

pytestmark = pytest.mark.slow  # each test starts `modelcache serve`

ONLY = {"MODELCACHE_VISION": "none", "MODELCACHE_FACE": "none"}  # whisper + MiniLM


def tiled(speech, seconds: int) -> bytes:
    audio, rate = sf.read(io.BytesIO(speech[0]), dtype="float32")
    long = np.tile(audio, int(seconds * rate / len(audio)) + 1)[: seconds * rate]
    out = io.BytesIO()
    sf.write(out, long, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


@pytest.fixture(scope="module")
def long_speech(speech) -> bytes:
    """About 60 s of known speech, as WAV."""
    return tiled(speech, 60)


@pytest.fixture(scope="module")
def very_long_speech(speech) -> bytes:
    """8 minutes: a minute or more of work for the model, unless it is stopped."""
    return tiled(speech, 480)


def transcribe(service: Service, wav: bytes, timeout: float = 300) -> httpx2.Response:
    return httpx2.post(
        f"{service.url}/v1/audio/transcriptions",
        files={"file": ("long.wav", wav)},
        data={"model": "whisper-1"},
        timeout=timeout,
    )


def embed(service: Service, client: httpx2.Client) -> float:
    started = time.perf_counter()
    response = client.post(f"{service.url}/v1/embeddings", json={"model": fixtures.MINILM, "input": "a short text"})
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pid(service: Service, model: str) -> int:
    return httpx2.get(f"{service.url}/health").json()["models"][model]["pid"]


@pytest.fixture(scope="module")
def pair(service_volume: dict, tmp_path_factory: pytest.TempPathFactory):
    """openai-whisper and MiniLM, each in its own process; a deadline that a minute of
    speech meets on a busy 2-core machine."""
    env = {**service_volume, **ONLY, "MODELCACHE_REQUEST_TIMEOUT": "300"}
    service = start_service(env, tmp_path_factory.mktemp("logs") / "pair.log")
    yield service
    service.stop()


def test_every_model_runs_in_its_own_process(pair: Service) -> None:
    models = httpx2.get(f"{pair.url}/health").json()["models"]
    pids = {m["pid"] for m in models.values()}
    assert len(pids) == len(models) == 2 and pair.proc.pid not in pids
    assert all(m["state"] == "loaded" and m["memory_bytes"] > 10_000_000 for m in models.values())


def test_a_long_transcription_does_not_hold_up_embeddings(pair: Service, long_speech: bytes) -> None:
    finished: dict[str, float] = {}
    statuses: list[int] = []

    def long_request() -> None:
        response = transcribe(pair, long_speech)
        finished["transcription"] = time.monotonic()
        statuses.append(response.status_code)  # checked below: an assert here would be lost

    thread = threading.Thread(target=long_request)
    with httpx2.Client(timeout=60) as client:
        idle = sorted(embed(pair, client) for _ in range(20))
        thread.start()
        time.sleep(1.0)  # the transcription is running
        busy = sorted(embed(pair, client) for _ in range(20))
        finished["embeddings"] = time.monotonic()
    thread.join()
    assert statuses == [200]
    assert finished["embeddings"] < finished["transcription"]  # 20 embeddings done while it still ran
    assert busy[len(busy) // 2] < 10 * idle[len(idle) // 2] + 0.05  # sharing the CPU, not waiting in line


def test_a_request_past_its_deadline_stops_in_the_model(
    service_volume: dict, very_long_speech: bytes, tmp_path
) -> None:
    service = start_service({**service_volume, **ONLY, "MODELCACHE_REQUEST_TIMEOUT": "2"}, tmp_path / "log")
    try:
        pid = worker_pid(service, "whisper-tiny.en")
        started = time.monotonic()
        response = transcribe(service, very_long_speech)
        assert response.status_code == 504 and time.monotonic() - started < 10
        assert "stopped" in response.json()["error"]["message"]
        assert counter(service, "modelcache_cancelled_total", reason="deadline") == 1
        assert_work_stops(pid)
        with httpx2.Client(timeout=30) as client:
            assert embed(service, client) > 0  # still serving
    finally:
        service.stop()


def assert_work_stops(pid: int) -> None:
    """The model's process goes idle soon after the request was given up (the window it is
    decoding finishes first), long before the 8 minutes of audio would be done."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(1.5)
        if cpu_seconds(pid) - before < 0.15:
            return
    raise AssertionError("the model kept working on a request nobody waits for")


def test_a_client_that_goes_away_stops_its_transcription(pair: Service, very_long_speech: bytes) -> None:
    pid = worker_pid(pair, "whisper-tiny.en")
    before = counter(pair, "modelcache_cancelled_total", reason="disconnect")
    with pytest.raises(httpx2.ReadTimeout):
        transcribe(pair, very_long_speech, timeout=1.5)  # the client gives up and closes its connection
    deadline = time.monotonic() + 10
    while counter(pair, "modelcache_cancelled_total", reason="disconnect") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counter(pair, "modelcache_cancelled_total", reason="disconnect") == before + 1
    assert_work_stops(pid)


def read_until_closed(sock: socket.socket) -> bytes:
    """The rest of a reply sent with ``connection: close``."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_refusal_comes_before_the_body(service_volume: dict, long_speech: bytes, tmp_path) -> None:
    env = {**service_volume, **ONLY, "MODELCACHE_QUEUE_SIZE": "1", "MODELCACHE_ADMISSION_WAIT_MS": "0"}
    service = start_service(env, tmp_path / "log")
    try:
        busy = threading.Thread(target=lambda: transcribe(service, long_speech))
        busy.start()
        time.sleep(1.0)  # the one slot is taken
        port = int(service.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                b"boundary=b\r\nContent-Length: 20000000\r\n\r\n"
            )
            started = time.monotonic()
            first = sock.recv(65536)  # not one body byte was sent
            waited = time.monotonic() - started
            reply = (first + read_until_closed(sock)).decode(errors="replace")  # headers and body may come apart
        assert reply.startswith("HTTP/1.1 429") and "retry-after:" in reply.lower(), reply
        assert waited < 1.0 and "queue_full" in reply
        assert counter(service, "modelcache_shed_total") >= 1
        busy.join()
    finally:
        service.stop()


def test_a_slot_goes_to_the_request_that_waited(service_volume: dict, tmp_path) -> None:
    """With the queue full, a request waits (up to MODELCACHE_ADMISSION_WAIT_MS) instead of being refused."""
    env = {
        **service_volume,
        **ONLY,
        "MODELCACHE_WHISPER": "none",
        "MODELCACHE_QUEUE_SIZE": "2",
        "MODELCACHE_BATCH_MAX": "1",
        "MODELCACHE_ADMISSION_WAIT_MS": "30000",
    }
    service = start_service(env, tmp_path / "log")
    try:
        with ThreadPoolExecutor(4) as pool:  # twice the queue: half wait, nobody is refused
            statuses = list(
                pool.map(
                    lambda _: (
                        httpx2.post(
                            f"{service.url}/v1/embeddings",
                            json={"model": fixtures.MINILM, "input": "x " * 200},
                            timeout=60,
                        ).status_code
                    ),
                    range(40),
                )
            )
        assert statuses == [200] * 40
        assert counter(service, "modelcache_shed_total") == 0
    finally:
        service.stop()


def test_image_embeddings_are_batched(server: Service) -> None:
    def image(i: int) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (64, 64), (i * 7 % 255, 90, 200)).save(out, format="PNG")
        return out.getvalue()

    before = (
        counter(server, "modelcache_batch_size_sum", model=fixtures.SIGLIP),
        counter(server, "modelcache_batch_size_count", model=fixtures.SIGLIP),
    )
    with ThreadPoolExecutor(16) as pool:
        responses = list(
            pool.map(
                lambda i: httpx2.post(
                    f"{server.url}/v1/images/embeddings", files={"file": ("i.png", image(i))}, timeout=60
                ),
                range(48),
            )
        )
    assert all(r.status_code == 200 for r in responses)
    inputs = counter(server, "modelcache_batch_size_sum", model=fixtures.SIGLIP) - before[0]
    calls = counter(server, "modelcache_batch_size_count", model=fixtures.SIGLIP) - before[1]
    assert inputs == 48 and calls < 48, (inputs, calls)  # several requests' images per forward


def test_faster_whisper_compute_type_is_a_setting(
    fw_server: Service, faster_whisper_volume: dict, speech, tmp_path
) -> None:
    default = httpx2.get(f"{fw_server.url}/v1/models/whisper-1").json()
    assert default["compute_type"] == "float32"  # accuracy first on CPU
    service = start_service({**faster_whisper_volume, "MODELCACHE_ASR_COMPUTE_TYPE": "int8"}, tmp_path / "log")
    try:
        assert httpx2.get(f"{service.url}/v1/models/whisper-1").json()["compute_type"] == "int8"
        response = transcribe(service, speech[0], timeout=120)
        assert response.status_code == 200 and "fox" in response.json()["text"].lower()
    finally:
        service.stop()


def test_no_hub_token_reaches_the_model_processes(service_volume: dict, tmp_path) -> None:
    env = {
        **service_volume,
        **ONLY,
        "MODELCACHE_WHISPER": "none",
        "HF_TOKEN": "hf_secret_for_this_test",
        "HUGGING_FACE_HUB_TOKEN": "hf_secret_for_this_test",
    }
    service = start_service(env, tmp_path / "log")
    try:
        pid = worker_pid(service, fixtures.MINILM)
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"hf_secret_for_this_test" not in environ and b"HF_HUB_OFFLINE=1" in environ
    finally:
        service.stop()


def test_a_model_whose_process_dies_is_restarted_and_the_others_keep_serving(service_volume: dict, tmp_path) -> None:
    import signal

    service = start_service({**service_volume, "MODELCACHE_VISION": "none"}, tmp_path / "log")
    try:
        killed = worker_pid(service, "yunet")
        os.kill(killed, signal.SIGKILL)
        with httpx2.Client(timeout=30) as client:
            assert embed(service, client) > 0  # the other models are untouched
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            health = httpx2.get(f"{service.url}/health").json()["models"]["yunet"]
            if health["state"] == "loaded" and health["pid"] != killed:
                break
            time.sleep(0.2)
        assert health["state"] == "loaded" and health["pid"] != killed  # a new process
        face = httpx2.post(f"{service.url}/v1/faces/detect", files={"file": ("i.png", fixtures.png())}, timeout=30)
        assert face.status_code == 200
        assert httpx2.get(f"{service.url}/health/ready").status_code == 200
        assert "exit code -9" in service.output() and "restarting it" in service.output()
    finally:
        service.stop()
