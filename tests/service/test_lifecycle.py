"""Live model management: several models per task, a memory budget with LRU eviction and
pins, loads on demand (one load for many requests), unload, hot reload (API, SIGHUP,
watch) that leaves the old set serving on any failure, and no failed request during one."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest

from modelcache.fetch import run_fetch
from modelcache.layout import Layout
from modelcache.progress import PlainReporter
from modelcache.settings import Settings
from modelcache.volume_lock import read_lock
from tests.support import fixtures
from tests.support.fixtures import MINILM, SIGLIP, TINY_BERT, MirrorModels
from tests.support.service import Service, counter, run_serve, start_service

pytestmark = pytest.mark.slow  # each test starts `modelcache serve`

MIB = 2**20
SMALL = {"MODELCACHE_WHISPER": "none", "MODELCACHE_MLX": "", "MODELCACHE_FACE": "yunet"}


def fetch(env: dict[str, str]) -> None:
    run_fetch(Settings.from_env(env), reporter=PlainReporter(open(os.devnull, "w")))


def health(service: Service) -> dict:
    return httpx2.get(f"{service.url}/health").json()


def embed(service: Service, model: str = MINILM, text: str = "hello") -> httpx2.Response:
    return httpx2.post(f"{service.url}/v1/embeddings", json={"model": model, "input": text}, timeout=120)


@pytest.fixture
def volume(tmp_path: Path, models: MirrorModels) -> tuple[Path, dict[str, str]]:
    """MiniLM, tiny SigLIP and YuNet, fetched from the mirror into a fresh volume."""
    root = tmp_path / "models"
    env = models.env(root, **SMALL)
    fetch(env)
    return root, env


@pytest.fixture(scope="module")
def sizes(_mirror_models: MirrorModels, tmp_path_factory) -> dict[str, int]:
    """Each model's measured memory (its process's private memory after load), from a
    service that measures them as a budget does: one after the other, in the same order.
    On a volume of its own, like each test's: weights files that another running service
    maps too would count as shared, not private."""
    env = _mirror_models.env(tmp_path_factory.mktemp("sizes") / "models", **SMALL, MODELCACHE_MEMORY_BUDGET="100g")
    fetch(env)
    service = start_service(env, tmp_path_factory.mktemp("logs") / "sizes.log")
    try:
        return {model: info["memory_bytes"] for model, info in health(service)["models"].items()}
    finally:
        service.stop()


def budget_for(sizes: dict[str, int], *models: str) -> str:
    """A budget that holds exactly these models: room for growth, but less than the
    smallest model left out needs."""
    others = [size for model, size in sizes.items() if model not in models]
    room = min([20 * MIB, *(size // 2 for size in others)])
    return f"{(sum(sizes[m] for m in models) + room) // MIB}m"


def test_several_embedding_models_are_served_and_picked_by_name(tmp_path: Path, models: MirrorModels) -> None:
    root = tmp_path / "models"
    env = models.env(root, **SMALL, MODELCACHE_TEXT_EMBEDDING=f"{MINILM},{TINY_BERT}", MODELCACHE_VISION="none")
    fetch(env)
    service = start_service(env, tmp_path / "log")
    try:
        listed = {m["id"]: m for m in httpx2.get(f"{service.url}/v1/models").json()["data"]}
        assert {MINILM, TINY_BERT} <= set(listed) and listed[MINILM]["task"] == "text-embedding"
        assert len(embed(service, MINILM).json()["data"][0]["embedding"]) == 384
        assert len(embed(service, TINY_BERT).json()["data"][0]["embedding"]) == 64
        missing = httpx2.post(f"{service.url}/v1/embeddings", json={"input": "x"})
        assert missing.status_code == 400  # two text models: the request must say which
    finally:
        service.stop()


def test_the_budget_keeps_what_fits_and_evicts_the_least_recently_used(volume, sizes, tmp_path) -> None:
    _root, env = volume
    budget = budget_for(sizes, MINILM, SIGLIP)  # loaded in the configured order: YuNet, last, does not fit
    service = start_service({**env, "MODELCACHE_MEMORY_BUDGET": budget}, tmp_path / "log")
    try:
        states = {m: i["state"] for m, i in health(service)["models"].items()}
        assert states == {MINILM: "loaded", SIGLIP: "loaded", "yunet": "unloaded"}
        assert httpx2.get(f"{service.url}/health/ready").status_code == 200  # nothing pinned: ready
        assert embed(service, MINILM).status_code == 200
        time.sleep(0.1)
        image = httpx2.post(
            f"{service.url}/v1/images/embeddings", files={"file": ("i.png", fixtures.png())}, timeout=120
        )
        assert image.status_code == 200  # SigLIP is now the most recently used; MiniLM the least
        face = httpx2.post(f"{service.url}/v1/faces/detect", files={"file": ("i.png", fixtures.png())}, timeout=60)
        assert face.status_code == 200  # YuNet loaded on demand...
        states = {m: i["state"] for m, i in health(service)["models"].items()}
        assert states == {MINILM: "unloaded", SIGLIP: "loaded", "yunet": "loaded"}  # ...in MiniLM's place
        assert counter(service, "modelcache_model_evictions_total", model=MINILM) == 1
        used = sum(i["memory_bytes"] for i in health(service)["models"].values())
        assert used <= int(budget[:-1]) * MIB
        assert embed(service, MINILM).status_code == 200  # and back, evicting YuNet or SigLIP
    finally:
        service.stop()


def test_pinned_models_stay_and_gate_readiness(volume, sizes, tmp_path) -> None:
    _root, env = volume
    budget = budget_for(sizes, MINILM, SIGLIP)
    service = start_service({**env, "MODELCACHE_MEMORY_BUDGET": budget, "MODELCACHE_PIN": MINILM}, tmp_path / "log")
    try:
        for _ in range(2):  # SigLIP and YuNet take turns beside the pinned MiniLM
            assert (
                httpx2.post(f"{service.url}/v1/faces/detect", files={"file": ("i.png", fixtures.png())}).status_code
                == 200
            )
            assert (
                httpx2.post(
                    f"{service.url}/v1/images/embeddings", files={"file": ("i.png", fixtures.png())}, timeout=120
                ).status_code
                == 200
            )
            assert health(service)["models"][MINILM]["state"] == "loaded"
        assert health(service)["models"][MINILM]["pinned"] is True
        refused = service.admin(f"models/{MINILM}/unload")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "pinned"
    finally:
        service.stop()


def test_concurrent_first_requests_share_one_load(volume, sizes, tmp_path) -> None:
    _root, env = volume
    budget = budget_for(sizes, MINILM, SIGLIP)  # YuNet, configured last, is left unloaded
    service = start_service({**env, "MODELCACHE_MEMORY_BUDGET": budget}, tmp_path / "log")
    try:
        assert health(service)["models"]["yunet"]["state"] == "unloaded"
        before = counter(service, "modelcache_model_loads_total", model="yunet")
        with ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(
                    lambda _: (
                        httpx2.post(
                            f"{service.url}/v1/faces/detect", files={"file": ("i.png", fixtures.png())}, timeout=120
                        ).status_code
                    ),
                    range(8),
                )
            )
        assert statuses == [200] * 8
        assert counter(service, "modelcache_model_loads_total", model="yunet") == before + 1
    finally:
        service.stop()


def test_a_model_that_cannot_fit_even_alone_is_refused_at_start(volume, sizes) -> None:
    _root, env = volume
    tiny = f"{(sizes['yunet'] + 10 * MIB) // MIB}m"  # YuNet fits, MiniLM never does
    proc = run_serve({**env, "MODELCACHE_MEMORY_BUDGET": tiny})
    assert proc.returncode == 4, proc.stderr
    assert f"{MINILM} takes" in proc.stderr and "more than MODELCACHE_MEMORY_BUDGET" in proc.stderr
    assert "(measured)" in proc.stderr and "remedy:" in proc.stderr
    pins = run_serve(
        {**env, "MODELCACHE_MEMORY_BUDGET": budget_for(sizes, MINILM), "MODELCACHE_PIN": f"{MINILM},{SIGLIP}"}
    )
    assert pins.returncode == 4 and "the pinned models need" in pins.stderr
    unknown = run_serve({**env, "MODELCACHE_MEMORY_BUDGET": "8g", "MODELCACHE_PIN": "acme/nope"})
    assert unknown.returncode == 2 and "MODELCACHE_PIN names 'acme/nope'" in unknown.stderr


def test_unloading_gives_the_memory_back(volume, tmp_path) -> None:
    _root, env = volume
    service = start_service({**env, "MODELCACHE_MEMORY_BUDGET": "8g"}, tmp_path / "log")
    try:
        status = health(service)
        before, size = status["memory_used_gb"], status["models"][SIGLIP]["memory_bytes"] / 1024**3
        assert size > 0.01
        unloaded = service.admin(f"models/{SIGLIP}/unload")
        assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded"
        after = health(service)["memory_used_gb"]
        loaded = service.admin(f"models/{SIGLIP}/load", timeout=120)
        assert loaded.status_code == 200 and loaded.json()["state"] == "loaded"
        again = health(service)["memory_used_gb"]
        assert after < before - 0.8 * size  # what the model's process held alone is given back
        assert abs(again - before) / before < 0.10  # and comes back as it was
    finally:
        service.stop()


# --- reload ------------------------------------------------------------------------------------


def test_reload_swaps_in_what_the_downloader_fetched(volume, models: MirrorModels, tmp_path) -> None:
    _root, env = volume
    service = start_service(env, tmp_path / "log")
    try:
        pid = service.proc.pid
        old_vector = embed(service, MINILM).json()["data"][0]["embedding"]
        # the operator changes the text model in .env and runs the downloader
        fetch({**env, "MODELCACHE_TEXT_EMBEDDING": TINY_BERT})
        answer = service.admin("reload", timeout=300)
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert (
            report["added"] == [TINY_BERT]
            and report["removed"] == [MINILM]
            and set(report["kept"]) == {SIGLIP, "yunet"}
        )
        assert embed(service, TINY_BERT).status_code == 200
        gone = embed(service, MINILM)
        assert gone.status_code == 404 and len(old_vector) == 384
        assert service.proc.pid == pid and service.proc.poll() is None  # the same process, never restarted
        assert health(service)["last_reload"]["ok"] is True
        assert counter(service, "modelcache_reloads_total", result="ok") == 1
    finally:
        service.stop()


@pytest.mark.parametrize("failure", ["damaged", "does-not-load"])
def test_a_failed_reload_leaves_the_old_set_serving(volume, models: MirrorModels, tmp_path, failure: str) -> None:
    root, env = volume
    service = start_service(env, tmp_path / "log")
    try:
        fetch({**env, "MODELCACHE_TEXT_EMBEDDING": TINY_BERT})
        layout = Layout(root)
        entry = next(f for f in read_lock(layout).get(TINY_BERT).files if f.path.endswith("model.safetensors"))
        blob = layout.abs(entry.path).resolve()
        if failure == "damaged":
            blob.unlink()
        else:  # same size, so only loading it finds out
            blob.write_bytes(b"\xff" * blob.stat().st_size)
        answer = service.admin("reload", timeout=300)
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "reload_refused"
        assert "the previous models keep serving" in answer.json()["error"]["message"]
        assert embed(service, MINILM).status_code == 200  # the old set, untouched
        assert embed(service, TINY_BERT).status_code == 404
        status = health(service)
        assert status["last_reload"]["ok"] is False and status["status"] == "ok"
        assert "reload (api) refused" in service.output()
        assert counter(service, "modelcache_reloads_total", result="failed") == 1
    finally:
        service.stop()


def test_no_request_fails_during_a_reload(volume, models: MirrorModels, tmp_path) -> None:
    """32 clients keep asking the text model while a reload brings a new revision of it."""
    _root, env = volume
    service = start_service(env, tmp_path / "log")
    results: list[int] = []
    stop = threading.Event()

    def client() -> None:
        with httpx2.Client(timeout=120) as http:
            while not stop.is_set():
                results.append(
                    http.post(f"{service.url}/v1/embeddings", json={"model": MINILM, "input": "x"}).status_code
                )

    try:
        source = fixtures.minilm_dir()
        files: dict = {p.relative_to(source).as_posix(): p for p in source.rglob("*") if p.is_file()}
        files["README.md"] = b"# a new revision of the same weights\n"
        commit = models.mirror.add_repo(MINILM, files)
        fetch({**env, "MODELCACHE_TEXT_EMBEDDING": f"{MINILM}@{commit}"})
        threads = [threading.Thread(target=client) for _ in range(32)]
        for t in threads:
            t.start()
        time.sleep(2)
        answer = service.admin("reload", timeout=300)
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join()
        assert answer.status_code == 200 and answer.json()["added"] == [MINILM], answer.text
        assert health(service)["models"][MINILM]["revision"] == commit
        assert len(results) > 100 and set(results) == {200}, {s: results.count(s) for s in set(results)}
    finally:
        stop.set()
        service.stop()
        models.mirror.add_repo(MINILM, fixtures.minilm_dir())  # main as it was, for the other tests


def test_sighup_and_watch_reload(volume, models: MirrorModels, tmp_path) -> None:
    _root, env = volume
    service = start_service(
        {**env, "MODELCACHE_RELOAD": "watch", "MODELCACHE_RELOAD_INTERVAL": "0.5"}, tmp_path / "log"
    )
    try:
        fetch({**env, "MODELCACHE_FACE": "none"})  # the downloader rewrites the lock: watch notices
        deadline = time.monotonic() + 30
        while "yunet" in health(service)["models"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "yunet" not in health(service)["models"] and health(service)["last_reload"]["trigger"] == "watch"
        fetch(env)
        os.kill(service.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "yunet" not in health(service)["models"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "yunet" in health(service)["models"]
        assert health(service)["last_reload"]["trigger"] in ("SIGHUP", "watch")
    finally:
        service.stop()


def test_a_service_serving_a_subset_keeps_it_on_reload(volume, tmp_path) -> None:
    _root, env = volume
    service = start_service({**env, "MODELCACHE_VISION": "none", "MODELCACHE_FACE": "none"}, tmp_path / "log")
    try:
        assert set(health(service)["models"]) == {MINILM}
        fetch({**env, "MODELCACHE_TEXT_EMBEDDING": f"{MINILM},{TINY_BERT}"})  # the shared volume grows
        answer = service.admin("reload", timeout=300)
        assert answer.status_code == 200 and set(health(service)["models"]) == {MINILM}
    finally:
        service.stop()


def test_model_control_answers_to_its_own_key_and_never_to_the_api_key(volume, tmp_path) -> None:
    _root, env = volume
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    service = start_service({**env, "MODELCACHE_API_KEY_FILE": str(key)}, tmp_path / "log")  # and ADMIN_KEY
    api = {"Authorization": "Bearer s3cret"}
    try:
        for path in ("reload", f"models/{SIGLIP}/unload", f"models/{SIGLIP}/load"):
            anonymous = httpx2.post(f"{service.url}/admin/{path}")
            assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_admin_key"
            inference = httpx2.post(f"{service.url}/admin/{path}", headers=api)
            assert inference.status_code == 403, inference.text
            assert inference.json()["error"] == {
                "message": "the API key does not open /admin/*: send the admin key (the one in MODELCACHE_ADMIN_KEY_FILE)",
                "type": "permission_error",
                "param": None,
                "code": "admin_key_required",
            }
        assert health(service)["models"][SIGLIP]["state"] == "loaded"  # none of those refusals unloaded it
        ok = service.admin("reload", timeout=120)
        assert ok.status_code == 200 and ok.json()["added"] == [] and ok.json()["removed"] == []
        # the admin key is for model control only
        assert (
            httpx2.get(f"{service.url}/v1/models", headers={"Authorization": "Bearer admin-key-for-tests"}).status_code
            == 401
        )
        assert httpx2.get(f"{service.url}/v1/models", headers=api).status_code == 200
    finally:
        service.stop()


def test_without_an_admin_key_model_control_is_off_and_sighup_still_reloads(volume, tmp_path) -> None:
    _root, env = volume
    empty = tmp_path / "admin_key"
    empty.write_text("\n")  # like a /dev/null secret: none
    service = start_service({**env, "MODELCACHE_ADMIN_KEY_FILE": str(empty)}, tmp_path / "log")
    try:
        assert "model control over HTTP is off (/admin/* answers 403)" in service.output()
        for path in ("reload", f"models/{SIGLIP}/unload", f"models/{SIGLIP}/load"):
            refused = service.admin(path)
            assert refused.status_code == 403, refused.text
            error = refused.json()["error"]
            assert error["code"] == "admin_disabled" and error["type"] == "permission_error"
            for remedy in ("MODELCACHE_ADMIN_KEY_FILE", "SIGHUP", "MODELCACHE_RELOAD=watch"):
                assert remedy in error["message"]
        assert health(service)["last_reload"] is None
        os.kill(service.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while health(service)["last_reload"] is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health(service)["last_reload"]["trigger"] == "SIGHUP" and health(service)["last_reload"]["ok"] is True
    finally:
        service.stop()


def test_admin_key_files_that_cannot_serve_stop_the_service_before_any_model_loads(volume, tmp_path) -> None:
    _root, env = volume
    api = tmp_path / "api_key"
    api.write_text("same\n")
    same = tmp_path / "admin_key"
    same.write_text("same\n")
    reused = run_serve({**env, "MODELCACHE_API_KEY_FILE": str(api), "MODELCACHE_ADMIN_KEY_FILE": str(same)})
    assert reused.returncode == 2, reused.stderr
    assert f"MODELCACHE_ADMIN_KEY_FILE: {same} holds the same key as MODELCACHE_API_KEY_FILE" in reused.stderr
    missing = run_serve({**env, "MODELCACHE_ADMIN_KEY_FILE": str(tmp_path / "nowhere")})
    assert missing.returncode == 2, missing.stderr
    assert f"MODELCACHE_ADMIN_KEY_FILE: cannot read {tmp_path / 'nowhere'}" in missing.stderr
    assert "loaded" not in reused.stderr + missing.stderr


def test_model_state_is_described(volume, tmp_path) -> None:
    _root, env = volume
    service = start_service({**env, "MODELCACHE_MEMORY_BUDGET": "8g"}, tmp_path / "log")
    try:
        embed(service)
        described = httpx2.get(f"{service.url}/v1/models/{MINILM}").json()
        assert described["state"] == "loaded" and described["last_used"] and described["memory_bytes"] > 50 * MIB
        assert described["load_seconds"] > 0 and re.fullmatch(r"[0-9a-f]{40}", described["revision"])
    finally:
        service.stop()
