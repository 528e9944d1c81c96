"""Under concurrency: embedding requests are batched (and each gets its own vectors back),
and a full queue answers 429 with Retry-After instead of piling up."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx2
import numpy as np
import pytest

from tests.support import fixtures
from tests.support.service import Service, start_service

pytestmark = pytest.mark.slow  # each test starts `modelcache serve`


def batch_stats(service: Service, model: str) -> tuple[float, float]:
    text = httpx2.get(f"{service.url}/metrics").text
    label = re.escape(f'model="{model}"')
    total = float(re.search(rf"modelcache_batch_size_sum\{{{label}\}} (\S+)", text).group(1))
    count = float(re.search(rf"modelcache_batch_size_count\{{{label}\}} (\S+)", text).group(1))
    return total, count


def embed(service: Service, text: str) -> tuple[int, np.ndarray | None, dict]:
    response = httpx2.post(
        f"{service.url}/v1/embeddings",
        json={"model": fixtures.MINILM, "input": text, "encoding_format": "float"},
        timeout=120,
    )
    vector = np.array(response.json()["data"][0]["embedding"]) if response.status_code == 200 else None
    return response.status_code, vector, dict(response.headers)


def test_concurrent_requests_are_batched_and_answered_correctly(server: Service) -> None:
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'the weather'}" for i in range(64)]
    alone = {t: embed(server, t)[1] for t in texts[:8]}
    before = batch_stats(server, fixtures.MINILM)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda t: embed(server, t), texts))
    after = batch_stats(server, fixtures.MINILM)
    assert all(status == 200 for status, _, _ in results)
    inputs, calls = after[0] - before[0], after[1] - before[1]
    assert inputs == 64
    assert calls < 64 and inputs / calls > 1.5, (inputs, calls)  # several requests per forward pass
    for text, (_, vector, _) in zip(texts[:8], results[:8], strict=True):
        assert np.abs(vector - alone[text]).max() < 1e-5  # nobody got somebody else's vector


def test_a_full_queue_answers_429_with_retry_after(tmp_path, service_volume) -> None:
    env = {
        **service_volume,
        "MODELCACHE_QUEUE_SIZE": "1",
        "MODELCACHE_BATCH_MAX": "1",
        "MODELCACHE_WHISPER": "none",
        "MODELCACHE_VISION": "none",
        "MODELCACHE_FACE": "none",
    }
    service = start_service(env, tmp_path / "log")
    try:
        long_text = " ".join(["a fairly long sentence to keep the model busy for a while"] * 20)
        with ThreadPoolExecutor(24) as pool:
            results = list(pool.map(lambda i: embed(service, f"{i} {long_text}"), range(48)))
        statuses = [status for status, _, _ in results]
        assert set(statuses) <= {200, 429}
        assert statuses.count(429) > 0 and statuses.count(200) > 0
        for status, _, headers in results:
            if status == 429:
                assert int(headers["retry-after"]) >= 1
        metrics = httpx2.get(f"{service.url}/metrics").text
        refused = [float(v) for v in re.findall(r"modelcache_(?:rejected|shed)_total\{[^}]+\} (\S+)", metrics)]
        assert sum(refused) == statuses.count(429)  # at the door (shed) or at the model's queue (rejected)
        assert httpx2.get(f"{service.url}/health/ready").status_code == 200
        assert embed(service, "after the storm")[0] == 200
    finally:
        service.stop()


def test_a_request_that_takes_too_long_gets_504(tmp_path, service_volume, speech) -> None:
    env = {
        **service_volume,
        "MODELCACHE_REQUEST_TIMEOUT": "0.2",
        "MODELCACHE_TEXT_EMBEDDING": "none",
        "MODELCACHE_VISION": "none",
        "MODELCACHE_FACE": "none",
    }
    service = start_service(env, tmp_path / "log")
    try:
        slow = httpx2.post(
            f"{service.url}/v1/audio/transcriptions",
            files={"file": ("s.wav", speech[0])},
            data={"model": "whisper-1"},
            timeout=120,
        )
        assert slow.status_code == 504 and slow.json()["error"]["code"] == "timeout"
        assert httpx2.get(f"{service.url}/health/ready").status_code == 200
    finally:
        service.stop()
