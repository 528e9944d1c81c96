"""The metrics the alert rules and the dashboard (docs/monitoring/) read, from a real running
service: readiness, each model's state and memory, the budget, queue capacity, realtime
sessions, model processes found dead, the volume's lock against the one served, reloads."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelcache import __version__
from modelcache.fetch import run_fetch
from modelcache.layout import Layout
from modelcache.progress import PlainReporter
from modelcache.settings import Settings
from tests.support.fixtures import MINILM, MirrorModels
from tests.support.service import Service, start_service

pytestmark = pytest.mark.slow  # each test starts `modelcache serve` or uses the shared one

STATES = {"loaded", "unloaded", "loading", "unloading", "failed", "retired"}


def samples(service: Service) -> dict[tuple[str, tuple], float]:
    """Every sample on /metrics: (name, sorted labels) -> value."""
    response = httpx2.get(f"{service.url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    text = response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(service: Service, name: str, **labels: str) -> float | None:
    return samples(service).get((name, tuple(sorted(labels.items()))))


def health(service: Service) -> dict:
    return httpx2.get(f"{service.url}/health", timeout=10).json()


def until(check: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_state_gauges_of_a_running_service(server: Service) -> None:
    models = health(server)["models"]
    got = samples(server)
    assert got[("modelcache_build_info", (("version", __version__),))] == 1
    assert got[("modelcache_ready", ())] == 1
    assert abs(got[("modelcache_start_time_seconds", ())] - time.time()) < 3600
    assert ("modelcache_memory_budget_bytes", ()) not in got  # no budget configured
    assert got[("modelcache_volume_lock_drift", ())] == 0
    assert got[("modelcache_realtime_sessions", ())] == 0
    assert got[("modelcache_reloads_total", (("result", "failed"),))] == 0  # present before any reload
    assert ("modelcache_reload_last_success", ()) not in got  # no reload yet
    for model, info in models.items():
        key = (("model", model),)
        states = {s: got[("modelcache_model_state", (("model", model), ("state", s)))] for s in STATES}
        assert states == {s: (1 if s == "loaded" else 0) for s in STATES}, (model, states)
        assert got[("modelcache_model_pinned", key)] == 1  # no budget: every model stays
        assert got[("modelcache_queue_capacity", key)] == 64  # MODELCACHE_QUEUE_SIZE's default
        assert got[("modelcache_model_restarts_total", key)] == 0
        # the process's private memory now: the figure /health shows, within a page or two of churn
        assert got[("modelcache_model_memory_bytes", key)] > 1_000_000
        assert abs(got[("modelcache_model_memory_bytes", key)] - info["memory_bytes"]) < 0.05 * info["memory_bytes"]
        assert got[("modelcache_model_need_bytes", key)] == max(info["load_bytes"], info["peak_bytes"])


def test_an_open_realtime_session_is_counted(server: Service) -> None:
    websockets = pytest.importorskip("websockets")
    from websockets.sync.client import connect

    assert websockets
    url = server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    with connect(url) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "transcription_session.created"
        assert value(server, "modelcache_realtime_sessions") == 1
    assert until(lambda: value(server, "modelcache_realtime_sessions") == 0, timeout=10)


def test_budget_gauges_and_a_killed_model_process(service_volume: dict, tmp_path: Path) -> None:
    """Under a budget with yunet pinned: the budget and each model's need are exported; a
    killed pinned process counts a restart and comes back; a killed unpinned one counts one
    and reads as failed until its next request (readiness is unaffected)."""
    env = {
        **service_volume,
        "MODELCACHE_WHISPER": "none",
        "MODELCACHE_VISION": "none",
        "MODELCACHE_MEMORY_BUDGET": "8g",
        "MODELCACHE_PIN": "yunet",
        "MODELCACHE_QUEUE_SIZE": "5",
    }
    service = start_service(env, tmp_path / "log")
    try:
        got = samples(service)
        assert got[("modelcache_memory_budget_bytes", ())] == 8 * 2**30
        assert got[("modelcache_queue_capacity", (("model", MINILM),))] == 5
        assert got[("modelcache_model_pinned", (("model", "yunet"),))] == 1
        assert got[("modelcache_model_pinned", (("model", MINILM),))] == 0
        for model in ("yunet", MINILM):
            assert got[("modelcache_model_need_bytes", (("model", model),))] > 1_000_000
            assert got[("modelcache_model_restarts_total", (("model", model),))] == 0

        pinned = health(service)["models"]["yunet"]["pid"]
        os.kill(pinned, signal.SIGKILL)
        assert until(lambda: value(service, "modelcache_model_restarts_total", model="yunet") == 1)
        assert until(lambda: health(service)["models"]["yunet"]["state"] == "loaded")
        assert health(service)["models"]["yunet"]["pid"] != pinned
        assert value(service, "modelcache_model_state", model="yunet", state="loaded") == 1

        os.kill(health(service)["models"][MINILM]["pid"], signal.SIGKILL)
        assert until(lambda: value(service, "modelcache_model_restarts_total", model=MINILM) == 1)
        assert value(service, "modelcache_model_state", model=MINILM, state="failed") == 1
        assert value(service, "modelcache_model_memory_bytes", model=MINILM) == 0
        assert value(service, "modelcache_ready") == 1  # only pinned models gate readiness
        assert value(service, "modelcache_model_restarts_total", model="yunet") == 1  # counted once
    finally:
        service.stop()


def test_volume_lock_drift_and_reload_results(models: MirrorModels, tmp_path: Path) -> None:
    """The downloader writes another lock: drift until a reload takes it; a damaged lock is
    drift too, and its refused reload reads as the last reload failed."""
    root = tmp_path / "models"
    env = models.env(root, MODELCACHE_WHISPER="none", MODELCACHE_MLX="", MODELCACHE_VISION="none")

    def fetch(**extra: str) -> None:
        run_fetch(Settings.from_env({**env, **extra}), reporter=PlainReporter(open(os.devnull, "w")))

    fetch()
    service = start_service(env, tmp_path / "log")
    try:
        assert value(service, "modelcache_volume_lock_drift") == 0
        fetch(MODELCACHE_FACE="none")  # the operator drops the face model and runs the downloader
        assert value(service, "modelcache_volume_lock_drift") == 1

        lock = Layout(root).lock_file
        lock.write_text("{not json")
        assert value(service, "modelcache_volume_lock_drift") == 1
        assert service.admin("reload", timeout=120).status_code == 409
        got = samples(service)
        assert got[("modelcache_reload_last_success", ())] == 0
        assert got[("modelcache_reloads_total", (("result", "failed"),))] == 1
        assert abs(got[("modelcache_reload_last_timestamp_seconds", ())] - time.time()) < 60

        fetch(MODELCACHE_FACE="none")  # rewrites the damaged lock
        assert value(service, "modelcache_volume_lock_drift") == 1  # still not the one served
        answer = service.admin("reload", timeout=120)
        assert answer.status_code == 200 and answer.json()["removed"] == ["yunet"], answer.text
        got = samples(service)
        assert got[("modelcache_volume_lock_drift", ())] == 0
        assert got[("modelcache_reload_last_success", ())] == 1
        assert got[("modelcache_reloads_total", (("result", "ok"),))] == 1
        assert not any(name == "modelcache_model_state" and ("model", "yunet") in labels for name, labels in got)
    finally:
        service.stop()
