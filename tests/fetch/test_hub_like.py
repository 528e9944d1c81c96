"""Fetch from a mirror that behaves like huggingface.co today: LFS and Xet-backed files
answered with a redirect to a CDN host, Xet advertised, the Xet storage host often out of
reach; gated, renamed and one-segment repos; long listings; servers that misbehave."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest

from modelcache.errors import EXIT_CONFIG, NetworkError
from modelcache.hashing import sha256_file
from modelcache.layout import Layout
from modelcache.testing.hfmirror import HFMirror
from modelcache.volume_lock import read_lock
from tests.conftest import Volume
from tests.fetch.test_runner import MINILM_WEIGHTS, _wait_for, assert_complete, final_paths
from tests.support import fixtures
from tests.support.fixtures import MINILM, MirrorModels

SMALL = {"MODELCACHE_WHISPER": "none", "MODELCACHE_VISION": "none", "MODELCACHE_FACE": "none", "MODELCACHE_MLX": ""}
TOKEN = "hf_test_secret_token"


def only(repo: str, **extra: str) -> dict[str, str]:
    """A plan of one text-embedding repo."""
    return {**SMALL, "MODELCACHE_TEXT_EMBEDDING": repo, **extra}


def weights_bytes(content: bytes) -> dict[str, bytes]:
    return {"config.json": b'{"a": 1}\n', "model.safetensors": content, "tokenizer.json": b"{}\n"}


@pytest.fixture
def private_mirror(tmp_path: Path) -> Iterator[tuple[HFMirror, Path]]:
    """A hub-like mirror that requires a token for everything, and a token file for it."""
    with HFMirror(token=TOKEN, cdn=True, xet=True) as mirror:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        yield mirror, token_file


def test_xet_advertised_files_come_through_the_cdn_redirect_verified(volume: Volume, models: MirrorModels) -> None:
    volume.fetch()
    assert_complete(volume)
    weights = [r for r in models.mirror.requests if fnmatch(r.path, MINILM_WEIGHTS) and r.method == "GET"]
    assert {(r.role, r.status) for r in weights} == {("hub", 302), ("cdn", 200)}
    # the default path never asks for a Xet token nor talks to the CAS
    assert not [r for r in models.mirror.requests if "xet-read-token" in r.path or r.role == "cas"]


def test_the_token_goes_to_the_hub_host_and_never_to_the_cdn(tmp_path: Path, private_mirror) -> None:
    mirror, token_file = private_mirror
    mirror.add_repo("acme/private", weights_bytes(fixtures.noise(300_000, 5)))
    root = tmp_path / "models"
    env = {
        "MODELCACHE_DIR": str(root),
        "HF_ENDPOINT": mirror.url,
        "MODELCACHE_HF_TOKEN_FILE": str(token_file),
        **only("acme/private"),
    }
    Volume(root, env).fetch()
    seen = mirror.auth_by_role()
    assert seen["hub"] == {f"Bearer {TOKEN}"}
    assert seen["cdn"] == {None}  # the CDN got requests, none with the token
    assert [r for r in mirror.requests if r.role == "cdn" and r.status == 200]


def test_xet_mode_with_the_cas_out_of_reach_falls_back_at_once(volume: Volume, models: MirrorModels) -> None:
    started = time.monotonic()
    proc = volume.cli("fetch", "--plain", MODELCACHE_TRANSFER="xet", **only(MINILM))
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 20  # hf_xet alone retries for minutes here
    assert "Xet transfer not used (the Xet storage host" in proc.stderr and "cannot be reached" in proc.stderr
    assert [r for r in models.mirror.requests if "xet-read-token" in r.path]
    assert_one_repo_complete(volume, MINILM)


@pytest.mark.parametrize("cas", ["garbage", "blackhole"])
@pytest.mark.slow
def test_xet_mode_with_a_broken_cas_falls_back_within_its_bound(
    volume: Volume, models: MirrorModels, cas: str, private_mirror
) -> None:
    mirror, token_file = private_mirror
    mirror.cas_mode = cas
    mirror.add_repo("acme/xet-model", weights_bytes(fixtures.noise(2_000_000, 6)))
    env = {
        **volume.env,
        "HF_ENDPOINT": mirror.url,
        "MODELCACHE_HF_TOKEN_FILE": str(token_file),
        **only("acme/xet-model"),
        "MODELCACHE_TRANSFER": "xet",
        "MODELCACHE_STALL_TIMEOUT": "3",
    }
    started = time.monotonic()
    proc = Volume(volume.root, env).cli("fetch", "--plain")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 40
    assert "Xet transfer not used" in proc.stderr and "fetching it over HTTP" in proc.stderr
    # hf_xet (or our probe) talked to the CAS, never with the Hub token
    assert f"Bearer {TOKEN}" not in mirror.auth_by_role().get("cas", set())
    assert f"Bearer {TOKEN}" not in mirror.auth_by_role()["cdn"]
    layout = Layout(volume.root)
    assert not layout.partial.exists() or not list(layout.partial.iterdir())  # no staging area left
    assert_one_repo_complete(Volume(volume.root, env), "acme/xet-model")


def assert_one_repo_complete(volume: Volume, repo: str) -> None:
    lock = read_lock(Layout(volume.root))
    assert lock is not None and lock.get(repo) is not None
    for entry in lock.files:
        assert sha256_file(Layout(volume.root).abs(entry.path)) == entry.sha256


def test_a_cdn_that_ignores_range_on_resume_restarts_the_file_verified(volume: Volume, models: MirrorModels) -> None:
    content = (fixtures.minilm_dir() / "model.safetensors").read_bytes()
    sha = sha256_file(fixtures.minilm_dir() / "model.safetensors")
    part = Layout(volume.root).hub_partial(MINILM, sha)
    part.parent.mkdir(parents=True)
    part.write_bytes(content[: len(content) // 3])
    models.mirror.cdn_ignores_range = True
    proc = volume.cli("fetch", "--plain", **only(MINILM))
    assert proc.returncode == 0, proc.stderr
    assert "ignored the Range request; restarting from zero" in proc.stderr
    cdn = [r for r in models.mirror.requests if fnmatch(r.path, MINILM_WEIGHTS) and r.role == "cdn"]
    assert [(r.status, r.range) for r in cdn] == [(200, f"bytes={len(content) // 3}-")]
    assert_one_repo_complete(volume, MINILM)


def test_a_linked_size_that_disagrees_is_refused_naming_the_file(volume: Volume, models: MirrorModels) -> None:
    models.mirror.override_linked_size(MINILM_WEIGHTS, 12345)
    with pytest.raises(NetworkError) as info:
        volume.fetch(**only(MINILM))
    text = info.value.render()
    assert "all-MiniLM-L6-v2/model.safetensors" in text and "X-Linked-Size" in text and "remedy:" in text
    assert not [r for r in models.mirror.requests if r.role == "cdn" and fnmatch(r.path, MINILM_WEIGHTS)]
    assert not (Layout(volume.root).snapshot(MINILM, models.commits[MINILM]) / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("location", "expect"),
    [("SELF", "more than 10 redirects"), ("ftp://files.example/model.safetensors", "not an http(s) address")],
    ids=["loop", "ftp"],
)
def test_bad_redirects_are_refused_naming_the_file(
    volume: Volume, models: MirrorModels, location: str, expect: str
) -> None:
    commit = models.commits[MINILM]
    self_url = f"{models.mirror.url}/{MINILM}/resolve/{commit}/model.safetensors"
    models.mirror.override_redirect(MINILM_WEIGHTS, self_url if location == "SELF" else location)
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        volume.fetch(**only(MINILM))
    assert time.monotonic() - started < 10  # not retried: another attempt meets the same answer
    assert expect in info.value.render() and "model.safetensors" in info.value.render()
    assert not (Layout(volume.root).snapshot(MINILM, commit) / "model.safetensors").exists()
    assert read_lock(Layout(volume.root)) is None


@pytest.mark.slow
def test_gated_repos_need_a_granted_token(tmp_path: Path, models: MirrorModels) -> None:
    mirror = models.mirror
    repo = f"acme/gated-{tmp_path.name[-12:]}"
    mirror.add_repo(repo, weights_bytes(fixtures.noise(200_000, 8)), gated=True)
    root = tmp_path / "models"
    volume = Volume(root, models.env(root, **only(repo)))
    token_file = tmp_path / "token"
    token_file.write_text("hf_not_granted\n")
    for token_env, status in (({}, "401"), ({"MODELCACHE_HF_TOKEN_FILE": str(token_file)}, "403")):
        proc = volume.cli("fetch", **token_env)
        assert proc.returncode == EXIT_CONFIG, proc.stderr
        assert f"HTTP {status}: the repo is gated" in proc.stderr and "accept the model's licence" in proc.stderr
    assert read_lock(Layout(root)) is None
    mirror.grant(repo, "hf_not_granted")
    assert volume.cli("fetch", MODELCACHE_HF_TOKEN_FILE=str(token_file)).returncode == 0


def test_a_renamed_repo_is_followed_and_cached_under_the_configured_name(tmp_path: Path, models: MirrorModels) -> None:
    old, new = f"acme/old-{tmp_path.name[-10:]}", f"acme2/new-{tmp_path.name[-10:]}"
    models.mirror.add_repo(old, weights_bytes(fixtures.noise(150_000, 9)))
    models.mirror.rename(old, new)
    root = tmp_path / "models"
    result = Volume(root, models.env(root, **only(old))).fetch()
    assert result.lock.get(old) is not None and len(result.lock.get(old).files) == 3
    assert Layout(root).repo_dir(old).is_dir()
    assert any(r.status == 307 for r in models.mirror.requests)


def test_two_repos_holding_the_same_file_are_fetched_at_once_without_a_clash(
    tmp_path: Path, models: MirrorModels
) -> None:
    # Same weights, same tokenizer: each file has one oid in both repos. Slowed down, the two
    # transfers overlap; each repo has its own partial file and both end verified.
    a, b = f"acme/twin-a-{tmp_path.name[-8:]}", f"acme/twin-b-{tmp_path.name[-8:]}"
    files = weights_bytes(fixtures.noise(3_000_000, 11))
    models.mirror.add_repo(a, files)
    models.mirror.add_repo(b, files)
    models.mirror.throttle_bps = 10_000_000
    root = tmp_path / "models"
    try:
        lock = Volume(root, models.env(root, **only(f"{a},{b}"), MODELCACHE_WORKERS="4")).fetch().lock
    finally:
        models.mirror.throttle_bps = None
    size = next(e.size for e in lock.get(a).files if e.path.endswith("/model.safetensors"))
    served = [models.mirror.bytes_served(f"*/{repo.split('/')[1]}/resolve/*/model.safetensors") for repo in (a, b)]
    assert all(size <= n < 2 * size for n in served), (served, size)  # each repo's copy came through once
    for repo in (a, b):
        entries = lock.get(repo).files
        assert sorted(Path(e.path).name for e in entries) == sorted(files)
        for entry in entries:
            assert sha256_file(Layout(root).abs(entry.path)) == entry.sha256
    assert not Layout(root).partial.exists() or not list(Layout(root).partial.iterdir())


def test_one_segment_repo_ids_are_fetched(tmp_path: Path, models: MirrorModels) -> None:
    name = f"gpt2x{tmp_path.name[-8:]}".replace("_", "")
    models.mirror.add_repo(name, weights_bytes(fixtures.noise(120_000, 10)))
    root = tmp_path / "models"
    lock = Volume(root, models.env(root, **only(name))).fetch().lock
    assert lock.get(name) is not None
    assert (root / "huggingface" / "hub" / f"models--{name}" / "snapshots").is_dir()


def test_listings_past_a_thousand_files_are_followed(tmp_path: Path, models: MirrorModels) -> None:
    repo = f"acme/many-{tmp_path.name[-10:]}"
    files = {f"shards/part_{i:04d}.txt": f"{i}\n".encode() for i in range(1500)}
    models.mirror.add_repo(repo, files)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'[[model]]\nrepo = "{repo}"\ninclude = ["shards/part_00*", "shards/part_149*"]\n')
    root = tmp_path / "models"
    lock = (
        Volume(root, models.env(root, **SMALL, MODELCACHE_TEXT_EMBEDDING="none", MODELCACHE_MANIFEST=str(manifest)))
        .fetch()
        .lock
    )
    names = sorted(f.path.rsplit("/", 1)[1] for f in lock.get(repo).files)
    assert len(names) == 110 and names[0] == "part_0000.txt" and names[-1] == "part_1499.txt"
    pages = [r for r in models.mirror.requests if "/tree/" in r.path and r.method == "GET"]
    assert len(pages) == 2


@pytest.mark.slow
def test_sigterm_during_a_big_transfer_exits_within_a_second_and_resumes(volume: Volume, models: MirrorModels) -> None:
    size = (fixtures.minilm_dir() / "model.safetensors").stat().st_size
    sha = sha256_file(fixtures.minilm_dir() / "model.safetensors")
    part = Layout(volume.root).hub_partial(MINILM, sha)
    models.mirror.throttle_bps = 20_000_000
    proc = volume.popen("fetch", "--plain", **only(MINILM))
    try:
        _wait_for(lambda: part.exists() and part.stat().st_size >= size // 4, 30)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and elapsed < 1.0, elapsed
    assert "interrupted" in proc.stderr.read()
    kept = part.stat().st_size
    assert kept >= size // 4 and read_lock(Layout(volume.root)) is None
    models.mirror.throttle_bps = None
    models.mirror.reset_log()
    assert volume.cli("fetch", **only(MINILM)).returncode == 0
    assert models.mirror.bytes_served(MINILM_WEIGHTS) <= size - kept + 1024  # + the 302's small body


def test_a_big_file_from_the_cdn_in_segments(volume: Volume, models: MirrorModels) -> None:
    volume.fetch(MODELCACHE_SEGMENT_MIN_MB="16", **only(MINILM))
    cdn = [r for r in models.mirror.requests if fnmatch(r.path, MINILM_WEIGHTS) and r.role == "cdn"]
    assert len(cdn) == 4 and all(r.status == 206 for r in cdn)
    hub = [r for r in models.mirror.requests if fnmatch(r.path, MINILM_WEIGHTS) and r.role == "hub"]
    assert len(hub) == 4 and all(r.status == 302 for r in hub)  # each segment asked the Hub for a fresh address
    assert_one_repo_complete(volume, MINILM)
    assert final_paths(volume.root)
    assert os.listdir(Layout(volume.root).partial) == []
