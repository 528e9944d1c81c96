"""MODELCACHE_LOG_FORMAT=json for both programs, and X-Request-Id: every line a JSON object,
each request's id taken or made, returned on every answer (refusals included) and in its line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx2
import pytest

from tests.conftest import Volume
from tests.support.fixtures import MINILM, MirrorModels
from tests.support.service import Service, start_service

pytestmark = pytest.mark.slow  # starts `modelcache serve`, runs the downloader


def json_lines(text: str) -> list[dict]:
    """Every line parsed; a line that is not a JSON object fails the test, naming it."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(record, dict) and {"time", "level", "event", "message"} <= record.keys(), line
        records.append(record)
    return records


@pytest.fixture(scope="module")
def service(service_volume: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    env = {
        **service_volume,
        "MODELCACHE_LOG_FORMAT": "json",
        "MODELCACHE_WHISPER": "none",
        "MODELCACHE_VISION": "none",
        "MODELCACHE_MLX": "",
    }  # MiniLM and YuNet of the shared volume: quick to load
    service = start_service(env, tmp_path_factory.mktemp("json-logs") / "service.log")
    yield service
    service.stop()


def _requests(service: Service, *wanted: str) -> dict[str, dict]:
    """The request lines by id, once those ``wanted`` are there (a line is written just after
    its answer went out)."""
    deadline = time.monotonic() + 10
    while True:
        lines = {r["request_id"]: r for r in json_lines(service.output()) if r["event"] == "request"}
        if all(w in lines for w in wanted) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_the_service_writes_only_json_lines_from_its_first_one(service: Service) -> None:
    records = json_lines(service.output())
    events = [r["event"] for r in records]
    assert events[0] == "volume_verified" and "listening" in events
    verified = records[0]
    assert verified["files"] > 0 and verified["bytes"] > 0 and verified["level"] == "info"


def test_a_request_id_is_taken_returned_and_in_the_requests_line(service: Service) -> None:
    answer = httpx2.post(
        f"{service.url}/v1/embeddings",
        json={"model": MINILM, "input": "hello"},
        headers={"X-Request-Id": "ci-run-7:req-1"},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "ci-run-7:req-1"
    made = httpx2.post(f"{service.url}/v1/embeddings", json={"model": "nope", "input": "x"}, timeout=60)
    assert made.status_code == 404
    made_id = made.headers["x-request-id"]
    assert len(made_id) == 32 and int(made_id, 16) >= 0
    odd = httpx2.get(f"{service.url}/v1/models", headers={"X-Request-Id": "two words"}, timeout=30)
    assert odd.headers["x-request-id"] != "two words" and len(odd.headers["x-request-id"]) == 32
    lines = _requests(service, "ci-run-7:req-1", made_id, odd.headers["x-request-id"])
    line = lines["ci-run-7:req-1"]
    assert line["route"] == "/v1/embeddings" and line["method"] == "POST" and line["status"] == 200
    assert line["model"] == MINILM and line["duration_ms"] > 0 and line["level"] == "info"
    refused = lines[made_id]
    assert refused["status"] == 404 and "model" not in refused  # no model was found to name
    assert lines[odd.headers["x-request-id"]]["route"] == "/v1/models"


def test_refusals_before_routing_carry_an_id_too(service: Service) -> None:
    big = httpx2.post(
        f"{service.url}/v1/embeddings",
        content=b"x" * (26 * 2**20),  # over MODELCACHE_MAX_BODY_MB: refused from Content-Length
        headers={"content-type": "application/json", "X-Request-Id": "too-big"},
        timeout=60,
    )
    assert big.status_code == 413 and big.headers["x-request-id"] == "too-big"
    unmatched = httpx2.get(f"{service.url}/no/such/route", headers={"X-Request-Id": "lost-1"}, timeout=30)
    assert unmatched.status_code == 404 and unmatched.headers["x-request-id"] == "lost-1"
    lines = _requests(service, "too-big", "lost-1")
    assert lines["too-big"]["status"] == 413 and lines["lost-1"]["status"] == 404


def test_probes_and_scrapes_are_not_logged_when_they_succeed(service: Service) -> None:
    for path in ("/health", "/health/ready", "/metrics"):
        answer = httpx2.get(f"{service.url}{path}", headers={"X-Request-Id": f"probe{path}"}, timeout=30)
        assert answer.status_code == 200 and answer.headers["x-request-id"] == f"probe{path}"
    httpx2.get(f"{service.url}/v1/models", headers={"X-Request-Id": "after-probes"}, timeout=30)
    assert not [i for i in _requests(service, "after-probes") if i.startswith("probe")]


def test_the_downloader_writes_json_lines_and_its_errors_as_one(tmp_path: Path, models: MirrorModels) -> None:
    root = tmp_path / "models"
    small = {"MODELCACHE_WHISPER": "none", "MODELCACHE_VISION": "none", "MODELCACHE_MLX": "", "MODELCACHE_FACE": "none"}
    volume = Volume(root, models.env(root, **small, MODELCACHE_LOG_FORMAT="json"))
    fetched = volume.cli("fetch")
    assert fetched.returncode == 0, fetched.stderr
    records = json_lines(fetched.stderr)
    files = [r for r in records if r["event"] == "fetched"]
    assert files and all(r["bytes"] > 0 and r["seconds"] >= 0 and "file" in r for r in files)
    assert any(r["file"].endswith("model.safetensors") for r in files)
    assert records[-1]["message"].startswith("volume complete:")
    failed = volume.cli("fetch", MODELCACHE_WORKERS="lots")
    assert failed.returncode == 2
    (error,) = json_lines(failed.stderr)
    assert error["event"] == "error" and error["level"] == "error" and error["exit_code"] == 2
    assert "MODELCACHE_WORKERS" in error["message"] and error["remedy"]
