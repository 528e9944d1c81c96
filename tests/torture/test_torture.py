"""Torture tests (marker `torture`; bounded in time; part of the README test command).

- 20 random `kill -9` of fetch, each followed by a re-run: all end complete and
  deep-verified; a final path never holds a partial or wrong file.
- A mirror with random faults (5xx, resets, stalls, wrong bytes): each fetch completes, or
  fails within its time bound with a clear error.
- Schemathesis against the service's own OpenAPI, plus malformed audio and images and
  oversized bodies: no 5xx, and the service stays ready.
- 32 concurrent clients for 60 s: no errors but the designed 429s, and RSS stays flat.
"""

from __future__ import annotations

import base64
import io
import random
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import numpy as np
import pytest
from PIL import Image

from modelcache.errors import EXIT_NETWORK, EXIT_VERIFY
from modelcache.hashing import sha256_file
from modelcache.layout import Layout
from modelcache.plan import build_plan
from modelcache.verify import verify
from tests.conftest import Volume
from tests.support import fixtures
from tests.support.fixtures import MirrorModels
from tests.support.service import Service, start_service

# the dev extra (schemathesis brings hypothesis)
schemathesis = pytest.importorskip("schemathesis")
HealthCheck = pytest.importorskip("hypothesis").HealthCheck
settings = pytest.importorskip("hypothesis").settings
checks = pytest.importorskip("schemathesis.specs.openapi.checks")

pytestmark = [pytest.mark.torture, pytest.mark.slow]  # minutes of randomised runs

SMALL_PLAN = {"MODELCACHE_MLX": "", "MODELCACHE_VISION": "none"}  # MiniLM, whisper checkpoint, YuNet


@pytest.fixture(params=["hub-like", "hub-like-segments", "direct"])
def any_mirror(request: pytest.FixtureRequest, models: MirrorModels) -> tuple[MirrorModels, dict[str, str]]:
    """Both ways a Hub serves LFS files (a redirect to a CDN with Xet advertised, or directly),
    and the big file in parallel ranged segments; with the plan's environment for each."""
    if request.param == "hub-like":
        return models, SMALL_PLAN
    if request.param == "hub-like-segments":  # throttled per stream: 4 streams, a quarter of the rate each
        return models, {**SMALL_PLAN, "MODELCACHE_SEGMENT_MIN_MB": "16", "THROTTLE": "30000000"}
    direct: MirrorModels = request.getfixturevalue("_direct_mirror_models")
    direct.mirror.clear_faults()
    direct.mirror.reset_log()
    return direct, SMALL_PLAN


def reference_hashes(template: Path) -> dict[str, str]:
    """sha256 of every final path of a complete volume (same commits, same relative paths)."""
    layout = Layout(template)
    finals = [p for p in layout.hub.rglob("*") if "snapshots" in p.parts and p.is_file()]
    finals += [p for p in layout.whisper.rglob("*") if p.is_file()]
    return {layout.rel(p): sha256_file(p) for p in finals}


def assert_no_partial_at_a_final_path(root: Path, reference: dict[str, str]) -> None:
    layout = Layout(root)
    for rel, want in reference.items():
        path = layout.abs(rel)
        if path.exists():
            assert sha256_file(path) == want, f"{rel} is visible but not complete and correct"


def test_twenty_random_kill_9_then_rerun(tmp_path: Path, any_mirror, _warm_template: Path) -> None:
    models, plan = any_mirror
    plan = dict(plan)
    reference = reference_hashes(_warm_template)
    rng = random.Random(20261122)
    models.mirror.throttle_bps = int(plan.pop("THROTTLE", 120_000_000))  # a cold fetch takes about 1.5 s
    outcomes = []
    try:
        for i in range(20):
            root = tmp_path / f"v{i}" / "models"
            volume = Volume(root, models.env(root, **plan))
            proc = volume.popen("fetch")
            time.sleep(rng.uniform(0.05, 1.6))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            outcomes.append("killed" if proc.returncode == -signal.SIGKILL else "finished first")
            assert_no_partial_at_a_final_path(root, reference)
            done = volume.cli("fetch")
            assert done.returncode == 0, done.stderr
            report = verify(Layout(root), build_plan(volume.settings()), deep=True)
            assert report.ok, [p.line() for p in report.problems]
    finally:
        models.mirror.throttle_bps = None
    assert outcomes.count("killed") >= 15, outcomes  # most kills really landed mid-fetch


def test_random_faults_complete_or_fail_within_bound(tmp_path: Path, any_mirror) -> None:
    models, plan = any_mirror
    plan = {k: v for k, v in plan.items() if k != "THROTTLE"}
    rng = random.Random(7)
    kinds = ["status", "reset", "stall", "corrupt", "truncate"]
    results = []
    for round_ in range(6):
        models.mirror.clear_faults()
        for _ in range(rng.randint(2, 6)):
            kind = rng.choice(kinds)
            target = rng.choice(["*/model.safetensors", "*/tokenizer.json", "*/resolve/*", "/whisper/*", "*.onnx"])
            models.mirror.inject(
                target,
                kind,
                count=rng.choice([1, 2, 3, -1]),
                after_bytes=rng.randint(0, 20_000),
                stall_s=5,
                status=rng.choice([500, 502, 503, 429]),
            )
        root = tmp_path / f"f{round_}" / "models"
        volume = Volume(root, models.env(root, **plan))
        started = time.monotonic()
        proc = volume.cli(
            "fetch", MODELCACHE_RETRIES="3", MODELCACHE_STALL_TIMEOUT="1", MODELCACHE_FETCH_TIMEOUT="20", timeout=120
        )
        elapsed = time.monotonic() - started
        assert elapsed < 45, f"round {round_} took {elapsed:.0f}s"
        if proc.returncode == 0:
            report = verify(Layout(root), build_plan(volume.settings()), deep=True)
            assert report.ok, [p.line() for p in report.problems]
            results.append("complete")
        else:  # a network failure, or the same wrong bytes twice
            assert proc.returncode in (EXIT_NETWORK, EXIT_VERIFY), proc.stderr
            assert "could not be fetched" in proc.stderr and "remedy:" in proc.stderr and "Traceback" not in proc.stderr
            results.append("clear failure")
    models.mirror.clear_faults()
    assert "complete" in results, results


# --- the service ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_schema(server: Service):
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_finds_no_server_error(case, server: Service) -> None:
    response = case.call(base_url=server.url, timeout=60)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    # every status code, content type and body the service answers is the one its schema declares;
    # refusing schema-valid data is allowed here: no schema says "a decodable image" or "speech"
    excluded = [checks.positive_data_acceptance]
    if sends_nothing_for_a_field(case):
        # an empty list in a form is sent as no part at all: the request on the wire is a valid one
        excluded.append(checks.negative_data_rejection)
    case.validate_response(response, excluded_checks=excluded)


def sends_nothing_for_a_field(case) -> bool:
    body = case.body if case.media_type == "multipart/form-data" else None
    return isinstance(body, dict) and any(value == [] for value in body.values())


def test_malformed_media_and_oversized_bodies(server: Service) -> None:
    rng = random.Random(3)
    wav_header = b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00"
    blobs = [rng.randbytes(rng.randint(1, 50_000)) for _ in range(15)]
    blobs += [
        wav_header + rng.randbytes(2000),
        b"ID3" + rng.randbytes(5000),
        b"\x89PNG\r\n\x1a\n" + rng.randbytes(300),
        b"\xff\xd8\xff\xe0" + rng.randbytes(800),
        b"OggS" + rng.randbytes(900),
        b"fLaC" + rng.randbytes(400),
    ]
    for data in blobs:
        audio = httpx2.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": ("x", data)},
            data={"model": "whisper-1"},
            timeout=120,
        )
        image = httpx2.post(
            f"{server.url}/v1/images/embeddings",
            json={"model": fixtures.SIGLIP, "input": base64.b64encode(data).decode()},
        )
        face = httpx2.post(f"{server.url}/v1/faces/detect", files={"file": ("x", data)})
        for response in (audio, image, face):
            assert response.status_code < 500, (response.request.url, response.status_code, response.text[:200])
    huge = httpx2.post(
        f"{server.url}/v1/images/embeddings",
        content=b"\0" * (30 * 1024 * 1024),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert huge.status_code == 413
    assert httpx2.get(f"{server.url}/health/ready").status_code == 200


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024


def test_32_clients_for_60_seconds(tmp_path: Path, service_volume: dict) -> None:
    env = {**service_volume, "MODELCACHE_QUEUE_SIZE": "16", "MODELCACHE_WHISPER": "none"}
    service = start_service(env, tmp_path / "log")
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(png, format="PNG")
    image = base64.b64encode(png.getvalue()).decode()
    deadline = time.monotonic() + 60
    counts: dict[int, int] = {}
    samples: list[tuple[float, int]] = []

    def client(n: int) -> dict[int, int]:
        seen: dict[int, int] = {}
        rng = random.Random(n)
        with httpx2.Client(timeout=60) as http:
            while time.monotonic() < deadline:
                kind = rng.random()
                if kind < 0.7:
                    r = http.post(
                        f"{service.url}/v1/embeddings",
                        json={"model": fixtures.MINILM, "input": f"client {n} says {rng.random()}"},
                    )
                elif kind < 0.85:
                    r = http.post(
                        f"{service.url}/v1/images/embeddings", json={"model": fixtures.SIGLIP, "input": image}
                    )
                else:
                    r = http.post(f"{service.url}/v1/faces/detect", json={"input": image})
                seen[r.status_code] = seen.get(r.status_code, 0) + 1
        return seen

    try:
        with ThreadPoolExecutor(33) as pool:
            futures = [pool.submit(client, n) for n in range(32)]
            while time.monotonic() < deadline:
                samples.append((time.monotonic(), _rss(service.proc.pid)))
                time.sleep(2)
            for future in futures:
                for status, count in future.result().items():
                    counts[status] = counts.get(status, 0) + count
        assert set(counts) <= {200, 429}, counts
        assert counts.get(200, 0) > 500, counts
        early = max(rss for t, rss in samples[3:8])  # after warm-up, 6-16 s in
        late = max(rss for t, rss in samples[-5:])
        assert late - early < 64 * 2**20, f"RSS grew {(late - early) / 2**20:.0f} MiB under load"
        assert httpx2.get(f"{service.url}/health/ready").status_code == 200
        print(f"\n60 s, 32 clients: {counts}, RSS {early / 2**20:.0f} -> {late / 2**20:.0f} MiB")
    finally:
        service.stop()
