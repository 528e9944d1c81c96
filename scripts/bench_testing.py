#!/usr/bin/env python3
"""A downstream project's smoke test: modelcache's pytest plugin vs the same test by hand.

    .venv/bin/python scripts/bench_testing.py [--json out.json] [--quick]

Two throwaway projects, each run with ``python -m pytest`` in a process of its own (wall time
of the whole run, interpreter start to exit), side by side in one run, in turns:

- *plugin*: docs/testing/example's test file, unchanged, with the plugin's ini settings
  (``modelcache_offline``, text embedding only); warm runs add ``--modelcache-volume``.
- *by hand*: the same two tests with a session fixture on testcontainers' ``DockerCompose``
  and the compose file a user would write for the same stack: the tiny Hub (the service
  image running modelcache.testing's tinyset.py, with a healthcheck), the downloader after
  it, the service after the downloader, ``up --wait``; warm runs keep the volume.

*cold*: a new volume (the tiny models built, served, downloaded, verified, loaded); *warm*:
the volume of a previous run kept (the downloader finds it complete). Both serve the same
models through the same images. Needs the Docker engine and the images.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import benchlib  # noqa: E402  (also puts the project on sys.path)

EXAMPLE_TEST = ROOT / "docs" / "testing" / "example" / "tests" / "test_smoke.py"
PACKAGE = ROOT / "services" / "modelcache" / "testing"
MODELS = {"MODELCACHE_VISION": "none", "MODELCACHE_WHISPER": "none"}

PLUGIN_INI = """[pytest]
modelcache_offline = true
modelcache_models =
    MODELCACHE_VISION=none
    MODELCACHE_WHISPER=none
"""

# what a user writes without the plugin: the same tests, on DockerCompose
BY_HAND_TEST = """import os

import pytest
from openai import OpenAI
from testcontainers.compose import DockerCompose

TEXT = "modelcache-tiny/bert-embedder"


@pytest.fixture(scope="session")
def client():
    keep = os.environ.get("KEEP_VOLUME") == "1"
    compose = DockerCompose(".", compose_file_name="compose.yml", pull=False, build=False, wait=True, keep_volumes=keep)
    compose.start()
    try:
        host, port = compose.get_service_host_and_port("model-service", 8000)
        yield OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    finally:
        compose.stop()


def test_models_are_served(client):
    assert {m.id for m in client.models.list()} == {TEXT}


def test_embeddings(client):
    answer = client.embeddings.create(model=TEXT, input=["hello", "world"])
    assert [len(item.embedding) for item in answer.data] == [64, 64]
"""

BY_HAND_COMPOSE = """services:
  tiny-hub:
    image: modelcache-service:0.1.0
    entrypoint: ["python", "/kit/tinyset.py", "--root", "/tmp/tinyset"]
    volumes: ["${KIT}:/kit:ro"]
    healthcheck:
      test: ["CMD", "python", "-c", "import urllib.request as u; u.urlopen('http://localhost:8080/api/models/modelcache-tiny/bert-embedder/revision/main')"]
      interval: 1s
      retries: 120
  model-downloader:
    image: modelcache-downloader:0.1.0
    environment: &models
      HF_ENDPOINT: http://tiny-hub:8080
      MODELCACHE_DIR: /models
      MODELCACHE_TEXT_EMBEDDING: modelcache-tiny/bert-embedder
      MODELCACHE_WHISPER: none
      MODELCACHE_VISION: none
      MODELCACHE_FACE: none
      MODELCACHE_MLX: ""
    volumes: [models:/models]
    depends_on:
      tiny-hub: {condition: service_healthy}
  model-service:
    image: modelcache-service:0.1.0
    environment:
      <<: *models
      MODELCACHE_HOST: 0.0.0.0
    volumes: [models:/models:ro]
    read_only: true
    tmpfs: [/tmp]
    ports: ["127.0.0.1::8000"]
    healthcheck:
      test: ["CMD", "python", "-m", "modelcache.service.healthcheck"]
      interval: 1s
      retries: 600
    depends_on:
      model-downloader: {condition: service_completed_successfully}
volumes:
  models:
    name: ${VOLUME}
"""


def code_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


def run(project: Path, args: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0 or "2 passed" not in done.stdout:
        raise RuntimeError(f"the smoke test failed in {project}:\n{done.stdout}\n{done.stderr}")
    return seconds


def bench(quick: bool) -> dict:
    rounds = 1 if quick else 2
    base = Path(tempfile.mkdtemp(prefix="mc-bench-testing-"))
    plugin, by_hand = base / "plugin", base / "by-hand"
    (plugin / "tests").mkdir(parents=True)
    (by_hand / "tests").mkdir(parents=True)
    shutil.copy(EXAMPLE_TEST, plugin / "tests" / "test_smoke.py")
    (plugin / "pytest.ini").write_text(PLUGIN_INI)
    (by_hand / "tests" / "test_smoke.py").write_text(BY_HAND_TEST)
    (by_hand / "compose.yml").write_text(BY_HAND_COMPOSE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    # the plugin's test names Whisper too: with none served it asks for the text model alone
    example = (plugin / "tests" / "test_smoke.py").read_text()
    (plugin / "tests" / "test_smoke.py").write_text(
        example.replace("{TINY_WHISPER, TINY_TEXT_EMBEDDING}", "{TINY_TEXT_EMBEDDING}")
    )
    warm_plugin = f"mc-bench-plugin-{uuid.uuid4().hex[:6]}"
    warm_hand = f"mc-bench-hand-{uuid.uuid4().hex[:6]}"
    times: dict[str, list[float]] = {k: [] for k in ("plugin_cold", "plugin_warm", "hand_cold", "hand_warm")}
    try:
        run(plugin, ["--modelcache-volume", warm_plugin], env)  # fill the kept volumes first
        hand_env = {**env, "KIT": str(PACKAGE), "KEEP_VOLUME": "1", "VOLUME": warm_hand}
        warm_env = {**hand_env, "COMPOSE_PROJECT_NAME": f"mcbench{warm_hand[-6:]}"}
        run(by_hand, [], warm_env)
        for _ in range(rounds):
            times["plugin_cold"].append(run(plugin, [], env))
            cold_volume = f"mc-bench-cold-{uuid.uuid4().hex[:6]}"
            cold_env = {**hand_env, "KEEP_VOLUME": "0", "VOLUME": cold_volume}
            times["hand_cold"].append(run(by_hand, [], {**cold_env, "COMPOSE_PROJECT_NAME": f"mcb{cold_volume[-6:]}"}))
            times["plugin_warm"].append(run(plugin, ["--modelcache-volume", warm_plugin], env))
            times["hand_warm"].append(run(by_hand, [], warm_env))
    finally:
        for volume in (warm_plugin, warm_hand):
            subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    plugin_lines = code_lines(example) + code_lines(PLUGIN_INI)
    hand_lines = code_lines(BY_HAND_TEST) + code_lines(BY_HAND_COMPOSE)
    return {
        "seconds": times,
        "rounds": rounds,
        "plugin_lines": plugin_lines,
        "by_hand_lines": hand_lines,
        "host": {"cpus": os.cpu_count()},
    }


def report(r: dict) -> str:
    med = statistics.median
    t = r["seconds"]
    rows = []
    for kind, what in (
        ("cold", "a new volume: tiny models built, fetched, verified, loaded"),
        ("warm", "the volume kept"),
    ):
        mine, anchor = med(t[f"plugin_{kind}"]), med(t[f"hand_{kind}"])
        rows.append(
            (
                f"smoke test, {kind} ({what}): `pytest` wall time, median of {r['rounds']} (goal ≤ 1.0x)",
                f"{mine:.1f} s",
                f"by hand on DockerCompose: {anchor:.1f} s",
                f"{mine / anchor:.2f}x",
            )
        )
    rows.append(
        (
            "lines the user writes (test file + settings; by hand: + compose file), blank and comment lines not counted (goal ≤ 15)",
            str(r["plugin_lines"]),
            str(r["by_hand_lines"]),
            f"{r['plugin_lines'] / r['by_hand_lines']:.2f}x",
        )
    )
    return benchlib.table(rows)


if __name__ == "__main__":
    benchlib.cli(__doc__ or "", bench, report)
