"""`fetch --from` through a misbehaving network: the real registry behind a fault proxy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache.errors import EXIT_CONFIG, EXIT_DISK_FULL, EXIT_NETWORK
from modelcache.layout import Layout
from modelcache.volume_lock import read_lock
from tests.conftest import Volume, run_cli
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.fixtures import MirrorModels
from tests.support.registry import Registry
from tests.test_oci import tree

REPO = "site/faults"


@pytest.fixture(scope="module")
def published(registry: Registry, _warm_template: Path, _mirror_models: MirrorModels) -> str:
    ref = registry.ref(REPO, "v1")
    proc = run_cli("push", ref, "--json", env={**_mirror_models.env(_warm_template), **registry.env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["digest"]


@pytest.fixture
def proxy(registry: Registry, published: str) -> Iterator[FaultProxy]:
    p = FaultProxy(f"http://{registry.host}").start()
    yield p
    p.stop()


def through(proxy: FaultProxy, tmp_path: Path, models: MirrorModels, **extra: str) -> Volume:
    root = tmp_path / "models"
    env = models.env(root, MODELCACHE_INSECURE_REGISTRIES=proxy.host, MODELCACHE_FROM=f"oci://{proxy.host}/{REPO}:v1")
    return Volume(root, {**env, **extra})


def biggest_blob(template: Path) -> str:
    lock = read_lock(Layout(template))
    assert lock is not None
    return max(lock.files, key=lambda f: f.size).sha256


@pytest.mark.slow
def test_5xx_on_a_blob_and_the_manifest_are_retried(
    proxy: FaultProxy, tmp_path: Path, models: MirrorModels, _warm_template: Path
) -> None:
    sha = biggest_blob(_warm_template)
    proxy.faults += [Fault("/manifests/", "status", times=1, status=502), Fault(sha, "status", times=2, status=503)]
    volume = through(proxy, tmp_path, models)
    proc = volume.cli("fetch", "--plain")
    assert proc.returncode == 0, proc.stderr
    assert [k for k, _ in proxy.hits] == ["status", "status", "status"]
    assert "HTTP 502" in proc.stderr and "HTTP 503" in proc.stderr  # each retry is said
    assert tree(volume.root) == tree(_warm_template)


@pytest.mark.slow
def test_a_connection_reset_mid_blob_resumes_from_where_it_broke(
    proxy: FaultProxy, tmp_path: Path, models: MirrorModels, _warm_template: Path, registry: Registry
) -> None:
    sha = biggest_blob(_warm_template)
    cut = 20 * 1024 * 1024
    proxy.faults.append(Fault(f"/blobs/sha256:{sha}", "reset", after=cut))
    volume = through(proxy, tmp_path, models)
    mark = registry.mark()
    proc = volume.cli("fetch", "--plain")
    assert proc.returncode == 0, proc.stderr
    assert tree(volume.root) == tree(_warm_template)
    gets = [r for r in registry.requests(mark) if r.method == "GET" and sha in r.path]
    assert len(gets) == 2 and gets[1].status == 206  # the second asked only for the rest
    size = (_warm_template / next(f.path for f in read_lock(Layout(_warm_template)).files if f.sha256 == sha)).stat()
    # what had arrived before the reset was kept (a reset drops what sat unread in socket buffers)
    assert gets[1].bytes <= size.st_size - cut + 4 * 1024 * 1024


@pytest.mark.slow
def test_a_stalled_blob_is_abandoned_and_fetched_again(
    proxy: FaultProxy, tmp_path: Path, models: MirrorModels, _warm_template: Path
) -> None:
    sha = biggest_blob(_warm_template)
    proxy.faults.append(Fault(f"/blobs/sha256:{sha}", "stall", after=1024 * 1024, seconds=20))
    volume = through(proxy, tmp_path, models, MODELCACHE_STALL_TIMEOUT="1")
    proc = volume.cli("fetch", "--plain", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "stall" in proc.stderr.lower() or "Timeout" in proc.stderr
    assert tree(volume.root) == tree(_warm_template)


def test_a_registry_that_keeps_failing_is_a_network_error_with_a_remedy(
    proxy: FaultProxy, tmp_path: Path, models: MirrorModels
) -> None:
    proxy.faults.append(Fault("/manifests/", "status", times=100, status=503))
    volume = through(proxy, tmp_path, models, MODELCACHE_RETRIES="2")
    proc = volume.cli("fetch", "--plain")
    assert proc.returncode == EXIT_NETWORK, proc.stderr
    assert "did not answer (HTTP 503)" in proc.stderr
    assert "remedy:" in proc.stderr
    assert not (volume.root / ".modelcache/lock.json").exists()


@pytest.mark.slow
def test_a_volume_too_small_for_the_artifact_is_refused_before_the_first_weight(
    registry: Registry, published: str, tmp_path: Path, models: MirrorModels
) -> None:
    from tests.fetch.test_runner import small_tmpfs

    with small_tmpfs(tmp_path / "small", "40m") as small:
        root = small / "models"
        volume = Volume(root, {**models.env(root), **registry.env})
        mark = registry.mark()
        proc = volume.cli("fetch", "--from", registry.ref(REPO, "v1"))
        assert proc.returncode == EXIT_DISK_FULL, proc.stderr
        assert "free but the plan needs" in proc.stderr
        weights = [
            r for r in registry.requests(mark) if r.method == "GET" and "/blobs/" in r.path and r.bytes > 100_000
        ]
        assert weights == []
        assert not (root / ".modelcache/lock.json").exists()


def test_a_blob_refused_with_401_names_the_registry_not_the_hub_token(
    proxy: FaultProxy, tmp_path: Path, models: MirrorModels, _warm_template: Path
) -> None:
    sha = biggest_blob(_warm_template)
    proxy.faults.append(Fault(f"/blobs/sha256:{sha}", "status", times=100, status=401))
    volume = through(proxy, tmp_path, models)
    proc = volume.cli("fetch", "--plain")
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert f"the registry refused blob sha256:{sha[:12]}" in proc.stderr and "HTTP 401" in proc.stderr
    assert f"docker login {proxy.host}" in proc.stderr and "MODELCACHE_HF_TOKEN_FILE" not in proc.stderr
    assert not (volume.root / ".modelcache/lock.json").exists()


@pytest.mark.slow
def test_a_token_that_expires_during_a_long_fetch_is_renewed(
    tmp_path: Path, models: MirrorModels, _warm_template: Path, _mirror_models: MirrorModels
) -> None:
    """Bearer auth with tokens that lapse after 3 s (a real token service and the registry's
    own token checks); the fetch takes longer, one blob after another: a blob refused with
    401 gets a fresh token and the fetch completes."""
    from tests.support.registry import TokenServer, start_registry

    pytest.importorskip("jwt")
    tokens = TokenServer(tmp_path, lifetime=3)
    reg = start_registry(tmp_path / "reg", tokens=tokens)
    proxy = FaultProxy(f"http://{reg.host}", rate_bps=30_000_000).start()
    try:
        pushed = run_cli(
            "push",
            f"oci://{reg.host}/{REPO}:v1",
            env={**_mirror_models.env(_warm_template), "MODELCACHE_INSECURE_REGISTRIES": reg.host},
        )
        assert pushed.returncode == 0, pushed.stderr
        volume = through(proxy, tmp_path, models, MODELCACHE_WORKERS="1")
        mark = reg.mark()
        issued = tokens.issued
        proc = volume.cli("fetch", "--plain", timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "the registry's token expired; renewed, resuming" in proc.stderr
        assert tokens.issued >= issued + 2  # the first token, and at least one renewal
        blob_answers = [r.status for r in reg.requests(mark) if r.method == "GET" and "/blobs/" in r.path]
        assert 401 in blob_answers and blob_answers[-1] in (200, 206)
        assert tree(volume.root) == tree(_warm_template)
    finally:
        proxy.stop()
        reg.process.terminate()
        reg.process.wait(10)
        tokens.stop()
