"""End-to-end fetch against the HF-compatible mirror on 127.0.0.1, with the real client."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest

from modelcache.errors import EXIT_CONFIG, EXIT_DISK_FULL, EXIT_NETWORK, ConfigError, NetworkError, VerificationError
from modelcache.hashing import sha256_file
from modelcache.layout import Layout
from modelcache.plan import build_plan
from modelcache.verify import verify
from modelcache.volume_lock import read_lock
from tests.conftest import Volume
from tests.support import fixtures
from tests.support.fixtures import MINILM, SIGLIP, YUNET, MirrorModels

MINILM_WEIGHTS = "*/all-MiniLM-L6-v2/resolve/*/model.safetensors"
# MiniLM 13 + SigLIP 6 (of 9: foreign exports left out) + YuNet 1 (of 3) + MLX 3 + Whisper checkpoint 1
DEFAULT_PLAN_FILES = 24


def final_paths(root: Path) -> list[Path]:
    """Every file a consumer could open: snapshot paths (resolved), checkpoints, plain files."""
    layout = Layout(root)
    paths = [p for p in layout.hub.rglob("*") if "snapshots" in p.parts and p.is_file()]
    paths += [p for d in (layout.whisper, layout.files) if d.exists() for p in d.rglob("*") if p.is_file()]
    return paths


def assert_complete(volume: Volume) -> None:
    settings = volume.settings()
    report = verify(Layout(volume.root), build_plan(settings), deep=True)
    assert report.ok, [p.line() for p in report.problems]
    assert report.files == DEFAULT_PLAN_FILES


def test_cold_fetch_fills_a_standard_hub_cache(volume: Volume, models: MirrorModels) -> None:
    result = volume.fetch()
    assert not result.warm and result.files_fetched == DEFAULT_PLAN_FILES
    assert_complete(volume)
    layout = Layout(volume.root)
    lock = read_lock(layout)
    assert lock is not None and lock.plan_digest == build_plan(volume.settings()).digest
    minilm = lock.get(MINILM)
    assert minilm is not None and minilm.commit == models.commits[MINILM]
    # refs/main records the resolved commit, the standard way
    assert layout.ref(MINILM, "main").read_text() == models.commits[MINILM]
    # every lock entry's sha256 is the real content's
    for entry in lock.files:
        assert sha256_file(layout.abs(entry.path)) == entry.sha256
    # the real weights arrive byte for byte
    weights = layout.snapshot(MINILM, models.commits[MINILM]) / "model.safetensors"
    assert weights.is_symlink() and not os.path.isabs(os.readlink(weights))
    assert sha256_file(weights) == sha256_file(fixtures.minilm_dir() / "model.safetensors")
    # foreign weights are left out, the wanted YuNet file only
    siglip = {p.name for p in layout.snapshot(SIGLIP, models.commits[SIGLIP]).rglob("*")}
    assert "model.safetensors" in siglip and not {"pytorch_model.bin", "tf_model.h5", "model.onnx"} & siglip
    assert [p.name for p in layout.snapshot(YUNET, models.commits[YUNET]).iterdir()] == [
        "face_detection_yunet_2023mar.onnx"
    ]
    assert (layout.whisper / "tiny.en.pt").read_bytes() == models.whisper_bytes
    assert not list(layout.partial.iterdir())


def test_cache_reads_as_is_with_huggingface_hub_offline(volume: Volume, models: MirrorModels) -> None:
    volume.fetch()
    hub = str(Layout(volume.root).hub)
    code = f"""
import json, sys
from huggingface_hub import scan_cache_dir, snapshot_download, try_to_load_from_cache
info = scan_cache_dir({hub!r})
path = snapshot_download({MINILM!r}, cache_dir={hub!r}, local_files_only=True)
print(json.dumps({{
    "repos": sorted(r.repo_id for r in info.repos),
    "warnings": [str(w) for w in info.warnings],
    "config": try_to_load_from_cache({MINILM!r}, "config.json", cache_dir={hub!r}),
    "snapshot": path,
}}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    out = subprocess.run([os.sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["warnings"] == []
    assert data["repos"] == sorted(["mlx-community/whisper-tiny", MINILM, SIGLIP, YUNET])
    assert data["config"].endswith(f"{models.commits[MINILM]}/config.json")
    assert data["snapshot"].endswith(models.commits[MINILM])


def test_warm_fetch_makes_no_request_and_touches_nothing(warm: Volume, models: MirrorModels) -> None:
    before = {p: p.stat().st_mtime_ns for p in final_paths(warm.root)}
    result = warm.fetch()
    assert result.warm
    assert models.mirror.requests == []
    assert {p: p.stat().st_mtime_ns for p in final_paths(warm.root)} == before
    proc = warm.cli("fetch")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to fetch" in proc.stderr
    assert models.mirror.requests == []


def test_warm_fetch_does_not_import_http_libraries(warm: Volume) -> None:
    code = (
        "import sys; from modelcache.cli import main; sys.argv=['modelcache','fetch'];\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = [m for m in ('huggingface_hub', 'httpx', 'hf_xet') if m in sys.modules]\n"
        "print(heavy)"
    )
    env = {**os.environ, **warm.env, "PYTHONPATH": str(Path(__file__).parents[2] / "services")}
    out = subprocess.run([os.sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_changed_plan_fetches_only_the_difference(warm: Volume, models: MirrorModels) -> None:
    # the same volume, now also asked for the faster-whisper model: only its files move
    result = warm.fetch(MODELCACHE_ASR_ENGINE="faster-whisper", MODELCACHE_WHISPER_URL="")
    assert not result.warm
    served = {r.path.rsplit("/resolve/", 1)[0] for r in models.mirror.requests if "/resolve/" in r.path}
    assert served == {"/Systran/faster-whisper-tiny.en"}
    lock = read_lock(Layout(warm.root))
    assert lock is not None and lock.get(fixtures.FW_TINY_EN) is not None
    assert lock.get("whisper/tiny.en") is None  # the lock describes the current plan only


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("status", {"count": 2, "status": 503}),
        ("reset", {"count": 2, "after_bytes": 10_000_000}),
        ("stall", {"count": 1, "after_bytes": 5_000_000, "stall_s": 30}),
        ("corrupt", {"count": 1, "after_bytes": 50_000_000}),
        ("truncate", {"count": 1, "after_bytes": 30_000_000}),
    ],
)
@pytest.mark.slow
def test_transient_faults_are_survived(volume: Volume, models: MirrorModels, kind: str, options: dict) -> None:
    models.mirror.inject(MINILM_WEIGHTS, kind, **options)
    started = time.monotonic()
    result = volume.fetch(MODELCACHE_STALL_TIMEOUT="1")
    assert not result.warm
    assert_complete(volume)
    assert time.monotonic() - started < 25
    gets = [
        r for r in models.mirror.requests if r.method == "GET" and fnmatch(r.path, MINILM_WEIGHTS) and r.status != 302
    ]
    assert len(gets) >= 2  # the fault happened and the file was asked for again
    if kind in ("reset", "stall", "truncate"):
        # resumed with a Range request, not restarted from zero
        assert any(r.range and not r.range.startswith("bytes=0-") for r in gets[1:]), gets


@pytest.mark.slow
def test_persistent_failure_ends_with_a_clear_error(volume: Volume, models: MirrorModels) -> None:
    models.mirror.inject(MINILM_WEIGHTS, "status", count=-1, status=500)
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        volume.fetch(MODELCACHE_RETRIES="2")
    assert time.monotonic() - started < 30
    text = info.value.render()
    assert "model.safetensors" in text and "HTTP 500" in text and "lock was not written" in text
    assert read_lock(Layout(volume.root)) is None
    # nothing half-done at a final path: every visible file is complete and correct
    for path in final_paths(volume.root):
        assert path.stat().st_size > 0
    proc = volume.cli("fetch", MODELCACHE_RETRIES="1")
    assert proc.returncode == EXIT_NETWORK
    assert "remedy:" in proc.stderr


def test_wrong_bytes_every_time_fail_verification_and_never_land(volume: Volume, models: MirrorModels) -> None:
    models.mirror.inject(MINILM_WEIGHTS, "corrupt", count=-1, after_bytes=1000)
    with pytest.raises(VerificationError) as info:
        volume.fetch(MODELCACHE_RETRIES="5")
    text = info.value.render()
    # the same wrong bytes twice is final: no third download, and the message names the pin
    assert "the same bytes twice" in text and "the Hub's listing of sentence-transformers/all-MiniLM-L6-v2@" in text
    assert "remedy:" in text
    gets = [
        r for r in models.mirror.requests if fnmatch(r.path, MINILM_WEIGHTS) and r.method == "GET" and r.status == 200
    ]
    assert len(gets) == 2, gets
    layout = Layout(volume.root)
    commit = models.commits[MINILM]
    assert not (layout.snapshot(MINILM, commit) / "model.safetensors").exists()
    assert not list((layout.repo_dir(MINILM) / "blobs").glob("53aa*"))


@pytest.mark.slow
def test_total_time_is_bounded(volume: Volume, models: MirrorModels) -> None:
    models.mirror.inject(MINILM_WEIGHTS, "stall", count=-1, after_bytes=1000, stall_s=30)
    started = time.monotonic()
    with pytest.raises(NetworkError):
        volume.fetch(MODELCACHE_FETCH_TIMEOUT="4", MODELCACHE_STALL_TIMEOUT="1", MODELCACHE_RETRIES="50")
    assert time.monotonic() - started < 15


def _wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


@pytest.mark.slow
def test_kill_9_mid_file_resumes_with_at_most_55_percent_retransferred(volume: Volume, models: MirrorModels) -> None:
    size = (fixtures.minilm_dir() / "model.safetensors").stat().st_size
    sha = sha256_file(fixtures.minilm_dir() / "model.safetensors")
    part = Layout(volume.root).hub_partial(MINILM, sha)
    models.mirror.throttle_bps = 40_000_000
    proc = volume.popen("fetch")
    try:
        _wait_for(lambda: part.exists() and part.stat().st_size >= size // 2, 30)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert read_lock(Layout(volume.root)) is None
    weights = Layout(volume.root).snapshot(MINILM, models.commits[MINILM]) / "model.safetensors"
    assert not weights.exists()  # never a partial file at a final path
    models.mirror.throttle_bps = None
    models.mirror.reset_log()
    done = volume.cli("fetch")
    assert done.returncode == 0, done.stderr
    again = models.mirror.bytes_served(MINILM_WEIGHTS)
    assert again <= 0.55 * size, f"re-transferred {again / size:.0%}"
    assert_complete(volume)


@pytest.mark.slow
def test_two_fetches_at_once_share_the_work_safely(volume: Volume, models: MirrorModels) -> None:
    models.mirror.throttle_bps = 100_000_000
    first = volume.popen("fetch")
    time.sleep(0.3)
    second = volume.popen("fetch")
    _out1, err1 = first.communicate(timeout=120)
    _out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert "another downloader" in err1 + err2
    assert "nothing to fetch" in err1 + err2  # the waiter found the volume complete
    weights = [
        r for r in models.mirror.requests if r.method == "GET" and fnmatch(r.path, MINILM_WEIGHTS) and r.status != 302
    ]
    assert len(weights) == 1, weights
    assert_complete(volume)


def test_lock_timeout_has_its_own_exit_code(volume: Volume) -> None:
    from filelock import FileLock

    layout = Layout(volume.root)
    layout.state.mkdir(parents=True)
    with FileLock(str(layout.fetch_lock)):
        proc = volume.cli("fetch", MODELCACHE_LOCK_TIMEOUT="1")
    assert proc.returncode == 6
    assert "still holds" in proc.stderr


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``directory`` for the block; skips the test where mounting is not allowed."""
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


@pytest.mark.slow
def test_disk_full_is_refused_before_the_first_byte(tmp_path: Path, models: MirrorModels) -> None:
    with small_tmpfs(tmp_path / "small", "40m") as small:
        volume = Volume(small / "models", models.env(small / "models"))
        proc = volume.cli("fetch")
        assert proc.returncode == EXIT_DISK_FULL, proc.stderr
        assert "free but the plan needs" in proc.stderr
        assert not [r for r in models.mirror.requests if r.method == "GET" and "/resolve/" in r.path]
        assert final_paths(volume.root) == []
        # a plan that fits succeeds on the same small filesystem
        proc = volume.cli("fetch", MODELCACHE_TEXT_EMBEDDING="none", MODELCACHE_WHISPER="none")
        assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_disk_filling_up_mid_write_leaves_nothing_at_a_final_path(tmp_path: Path, models: MirrorModels) -> None:
    with small_tmpfs(tmp_path / "small", "190m") as small:
        volume = Volume(small / "models", models.env(small / "models"))
        try:
            models.mirror.throttle_bps = 60_000_000
            proc = volume.popen("fetch")
            part_dir = Layout(volume.root).partial
            _wait_for(lambda: part_dir.exists() and any(p.stat().st_size > 1_000_000 for p in part_dir.iterdir()), 30)
            filler = small / "filler"  # another tenant takes the space after the check
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=200"], capture_output=True)
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == EXIT_DISK_FULL, err
            assert "filled up" in err and "resumes" in err
            assert read_lock(Layout(volume.root)) is None
            weights = Layout(volume.root).snapshot(MINILM, models.commits[MINILM]) / "model.safetensors"
            assert not weights.exists()
        finally:
            models.mirror.throttle_bps = None


def test_branch_is_pinned_once_and_refresh_moves_it(tmp_path: Path, models: MirrorModels) -> None:
    repo = "acme/moving-model"
    first = models.mirror.add_repo(repo, {"config.json": b'{"v": 1}\n', "model.safetensors": fixtures.noise(9000, 1)})
    env = models.env(
        tmp_path / "models",
        MODELCACHE_TEXT_EMBEDDING=repo,
        MODELCACHE_VISION="none",
        MODELCACHE_FACE="none",
        MODELCACHE_MLX="",
        MODELCACHE_WHISPER="none",
    )
    volume = Volume(tmp_path / "models", env)
    assert volume.fetch().lock.get(repo).commit == first
    second = models.mirror.add_repo(repo, {"config.json": b'{"v": 2}\n', "model.safetensors": fixtures.noise(9000, 2)})
    Layout(volume.root).lock_file.unlink()  # an interrupted re-run must not drift to the new commit
    assert volume.fetch().lock.get(repo).commit == first
    assert volume.fetch(refresh=True).lock.get(repo).commit == second
    pinned = Volume(
        tmp_path / "pinned",
        {**env, "MODELCACHE_DIR": str(tmp_path / "pinned"), "MODELCACHE_TEXT_EMBEDDING": f"{repo}@{first}"},
    )
    assert pinned.fetch().lock.get(repo).commit == first


def test_token_comes_from_the_secret_file(tmp_path: Path, models: MirrorModels) -> None:
    from modelcache.testing.hfmirror import HFMirror

    with HFMirror(token="hf_secret") as private:
        private.add_repo("acme/private", {"config.json": b"{}\n", "model.safetensors": fixtures.noise(5000, 3)})
        env = models.env(
            tmp_path / "models",
            HF_ENDPOINT=private.url,
            MODELCACHE_TEXT_EMBEDDING="acme/private",
            MODELCACHE_VISION="none",
            MODELCACHE_FACE="none",
            MODELCACHE_MLX="",
            MODELCACHE_WHISPER="none",
        )
        volume = Volume(tmp_path / "models", env)
        with pytest.raises(ConfigError) as info:
            volume.fetch()
        assert "token" in info.value.render()
        token_file = tmp_path / "hf_token"
        token_file.write_text("hf_secret\n")
        result = volume.fetch(MODELCACHE_HF_TOKEN_FILE=str(token_file))
        assert result.lock.get("acme/private") is not None


def test_unknown_repo_is_a_configuration_error(volume: Volume) -> None:
    proc = volume.cli("fetch", MODELCACHE_VISION="acme/does-not-exist")
    assert proc.returncode == EXIT_CONFIG
    assert "acme/does-not-exist" in proc.stderr and "not found" in proc.stderr


def test_unreachable_endpoint_is_a_network_error(volume: Volume) -> None:
    proc = volume.cli("fetch", HF_ENDPOINT="http://127.0.0.1:9", MODELCACHE_RETRIES="1", timeout=60)
    assert proc.returncode == EXIT_NETWORK, proc.stderr
    assert "HF_ENDPOINT" in proc.stderr


def test_sigterm_stops_a_fetch_at_once_and_keeps_the_partial_file(volume: Volume, models: MirrorModels) -> None:
    sha = sha256_file(fixtures.minilm_dir() / "model.safetensors")
    part = Layout(volume.root).hub_partial(MINILM, sha)
    models.mirror.throttle_bps = 10_000_000
    proc = volume.popen("fetch")
    _wait_for(lambda: part.exists() and part.stat().st_size > 5_000_000, 30)
    stopped = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=20)
    assert time.monotonic() - stopped < 5
    assert proc.returncode == 130 and "interrupted" in err
    assert part.exists() and read_lock(Layout(volume.root)) is None
    served = models.mirror.bytes_served(MINILM_WEIGHTS)
    assert served < 0.9 * (fixtures.minilm_dir() / "model.safetensors").stat().st_size


def test_client_errors_are_not_retried(volume: Volume, models: MirrorModels) -> None:
    models.mirror.inject(MINILM_WEIGHTS, "status", count=-1, status=400)
    with pytest.raises(NetworkError) as info:
        volume.fetch(MODELCACHE_RETRIES="5")
    assert "HTTP 400" in info.value.render()
    gets = [
        r for r in models.mirror.requests if r.method == "GET" and fnmatch(r.path, MINILM_WEIGHTS) and r.status != 302
    ]
    assert len(gets) == 1


def test_offline_mode_is_refused_when_the_volume_needs_the_network(volume: Volume) -> None:
    proc = volume.cli("fetch", HF_HUB_OFFLINE="1")
    assert proc.returncode == EXIT_CONFIG and "HF_HUB_OFFLINE" in proc.stderr


def test_offline_mode_is_fine_on_a_complete_volume(warm: Volume) -> None:
    assert warm.cli("fetch", HF_HUB_OFFLINE="1").returncode == 0


def test_hf_token_variable_is_the_fallback_for_every_request(tmp_path: Path, models: MirrorModels) -> None:
    from modelcache.testing.hfmirror import HFMirror

    with HFMirror(token="hf_env_secret") as private:
        private.add_repo("acme/private", {"config.json": b"{}\n", "model.safetensors": fixtures.noise(5000, 4)})
        env = models.env(
            tmp_path / "models",
            HF_ENDPOINT=private.url,
            MODELCACHE_TEXT_EMBEDDING="acme/private",
            MODELCACHE_VISION="none",
            MODELCACHE_FACE="none",
            MODELCACHE_MLX="",
            MODELCACHE_WHISPER="none",
            HF_TOKEN="hf_env_secret",
        )
        proc = Volume(tmp_path / "models", env).cli("fetch")
        assert proc.returncode == 0, proc.stderr
