"""modelcache.testing on a real Docker engine: the tiny set through the real downloader and
service, a kept (warm) volume, an API key, and failed starts that leave nothing behind.

Skipped without a Docker engine or the images, unless MODELCACHE_REQUIRE_DOCKER=1 (CI).
"""

from __future__ import annotations

import io
import os
import subprocess
import uuid
import wave
from collections.abc import Iterator

import httpx2
import pytest

from modelcache.testing import (
    DOWNLOADER_IMAGE,
    SERVICE_IMAGE,
    TINY_TEXT_EMBEDDING,
    TINY_VISION,
    TINY_WHISPER,
    ModelCacheStack,
    StackError,
)
from modelcache.testing.stack import LABEL
from tests.support.docker import docker_unavailable

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    reason = docker_unavailable((DOWNLOADER_IMAGE, SERVICE_IMAGE))
    if reason:
        if os.environ.get("MODELCACHE_REQUIRE_DOCKER") == "1":
            pytest.fail(f"the testing kit tests are required here but cannot run: {reason}")
        pytest.skip(f"testing kit tests skipped: {reason}")


def leftovers(stack_id: str) -> list[str]:
    """Containers, networks and volumes still labelled with this stack's id."""
    found = []
    for kind in ("container", "network", "volume"):
        args = ["docker", kind, "ls", "-q", "--filter", f"label={LABEL}={stack_id}"]
        if kind == "container":
            args.insert(3, "-a")
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
        found += [f"{kind} {name}" for name in out]
    return found


def silence_wav(seconds: float = 1.0) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * int(16000 * seconds))
    return out.getvalue()


@pytest.fixture
def kept_volume() -> Iterator[str]:
    name = f"modelcache-kit-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True)


def test_offline_stack_serves_the_tiny_set_and_removes_everything() -> None:
    with ModelCacheStack(offline=True) as stack:
        assert stack.hub_started and not stack.volume_existed
        assert stack.base_url.startswith("http://127.0.0.1:")
        client = stack.openai_client()
        assert {m.id for m in client.models.list().data} == {TINY_WHISPER, TINY_TEXT_EMBEDDING, TINY_VISION}
        vectors = client.embeddings.create(model=TINY_TEXT_EMBEDDING, input=["a cat on a chair", "rain at night"])
        assert [len(d.embedding) for d in vectors.data] == [64, 64]
        assert vectors.data[0].embedding != vectors.data[1].embedding
        text = client.audio.transcriptions.create(model="whisper-1", file=("s.wav", silence_wav()))
        assert text.text == ""  # the tiny Whisper ends every decoding at once
        # the downloader really fetched and verified, and the service verified the volume
        assert "lock written" in stack.logs("model-downloader")
        assert "volume verified" in stack.logs("model-service")
        # the port is published on 127.0.0.1 only
        ports = subprocess.run(
            ["docker", "port", f"modelcache-test-{stack.id}-service", "8000/tcp"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports
        stack_id = stack.id
        assert leftovers(stack_id)
    assert leftovers(stack_id) == []
    assert "listening on" in stack.logs("model-service")  # kept after the containers are gone


def test_kept_volume_is_warm_and_api_key_is_required(kept_volume: str) -> None:
    with ModelCacheStack(offline=True, volume=kept_volume, models={"MODELCACHE_VISION": "none"}) as cold:
        assert cold.hub_started and not cold.volume_existed
        assert [m.id for m in cold.openai_client().models.list().data] == [TINY_WHISPER, TINY_TEXT_EMBEDDING]
    assert subprocess.run(["docker", "volume", "inspect", kept_volume], capture_output=True).returncode == 0
    with ModelCacheStack(
        offline=True, volume=kept_volume, models={"MODELCACHE_VISION": "none"}, api_key="sk-kit-test"
    ) as warm:
        assert warm.volume_existed and not warm.hub_started  # no Hub needed: nothing to fetch
        assert warm.downloader_seconds < cold.downloader_seconds + 5
        assert "lock written" not in warm.logs("model-downloader")
        client = warm.openai_client()
        assert len(client.embeddings.create(model=TINY_TEXT_EMBEDDING, input="hi").data[0].embedding) == 64
        anonymous = httpx2.post(f"{warm.base_url}/v1/embeddings", json={"model": TINY_TEXT_EMBEDDING, "input": "hi"})
        assert anonymous.status_code == 401
        stack_id = warm.id
    assert leftovers(stack_id) == []
    assert subprocess.run(["docker", "volume", "inspect", kept_volume], capture_output=True).returncode == 0


def test_downloader_failure_carries_its_message_and_exit_code() -> None:
    stack = ModelCacheStack(offline=True, models={"MODELCACHE_TEXT_EMBEDDING": "acme/no-such-model"})
    with pytest.raises(StackError) as failed:
        stack.start()
    error = failed.value
    assert error.container == "model-downloader"
    assert error.container_exit_code == 2
    rendered = error.render()
    assert "model-downloader exited with code 2" in rendered
    assert "acme/no-such-model" in rendered  # the downloader's own message, from its log
    assert leftovers(stack.id) == []


def test_service_failure_carries_its_message_and_exit_code(kept_volume: str) -> None:
    models = {"MODELCACHE_VISION": "none", "MODELCACHE_WHISPER": "none"}
    with ModelCacheStack(offline=True, volume=kept_volume, models=models):
        pass
    stack = ModelCacheStack(
        offline=True,
        volume=kept_volume,
        models=models,
        env={"MODELCACHE_MEMORY_BUDGET": "1g", "MODELCACHE_PIN": "no-such-model"},
    )
    with pytest.raises(StackError) as failed:
        stack.start()
    error = failed.value
    assert error.container == "model-service"
    assert error.container_exit_code == 2
    assert "no-such-model" in error.render()
    assert "MODELCACHE_PIN" in error.render()
    assert leftovers(stack.id) == []


def test_a_missing_image_is_named_before_anything_starts() -> None:
    stack = ModelCacheStack(offline=True, service_image="modelcache-service:no-such-tag")
    with pytest.raises(StackError) as failed:
        stack.start()
    assert "image modelcache-service:no-such-tag is not on this Docker engine and could not be pulled" in str(
        failed.value
    )
    assert "scripts/build-images" in str(failed.value)
    assert leftovers(stack.id) == []
