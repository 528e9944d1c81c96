"""`modelcache lock` and `fetch` with a lockfile, against the hub-like mirror."""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from modelcache.errors import EXIT_CONFIG, EXIT_VERIFY, NetworkError
from modelcache.hashing import sha256_file
from modelcache.layout import Layout
from modelcache.models_lock import read_lockfile, write_lockfile
from modelcache.testing.hfmirror import HFMirror
from modelcache.volume_lock import read_lock
from tests.conftest import Volume
from tests.support import fixtures
from tests.support.fixtures import MINILM, SIGLIP, MirrorModels

SMALL = {"MODELCACHE_WHISPER": "none", "MODELCACHE_VISION": "none", "MODELCACHE_FACE": "none", "MODELCACHE_MLX": ""}


def transfers(mirror: HFMirror) -> list:
    """Requests that move a file's bytes (the Hub's answer or the CDN's)."""
    return [r for r in mirror.requests if "/resolve/" in r.path or r.path.startswith("/whisper/")]


def metadata(mirror: HFMirror) -> list:
    return [r for r in mirror.requests if r.path.startswith("/api/") or r.method == "HEAD"]


@pytest.fixture
def locked(tmp_path: Path, volume: Volume, models: MirrorModels) -> tuple[Volume, Path]:
    """A volume whose environment names a lockfile, and that lockfile, made from the mirror."""
    path = tmp_path / "models.lock"
    env = {**volume.env, "MODELCACHE_LOCKFILE": str(path)}
    made = Volume(volume.root, env).cli("lock", "--json")
    assert made.returncode == 0, made.stderr
    return Volume(volume.root, env), path


def test_lock_pins_everything_from_metadata_only(volume: Volume, models: MirrorModels, tmp_path: Path) -> None:
    path = tmp_path / "models.lock"
    proc = volume.cli("lock", "--json", MODELCACHE_LOCKFILE=str(path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["written"] and len(result["resolved"]) == 5 and result["kept"] == []
    # metadata only: no file's bytes, and the count it reports is the mirror's
    assert not [r for r in transfers(models.mirror) if r.method == "GET"]
    assert result["requests"] == len(models.mirror.requests) == len(metadata(models.mirror))
    lockfile = read_lockfile(path)
    minilm = lockfile.get(MINILM)
    assert minilm.commit == models.commits[MINILM] and len(minilm.files) == 13
    weights = next(f for f in minilm.files if f.path == "model.safetensors")
    assert weights.sha256 == sha256_file(fixtures.minilm_dir() / "model.safetensors") and weights.git is None
    config = next(f for f in minilm.files if f.path == "config.json")
    assert config.git is not None and config.sha256 is None  # small files: git's blob id, as the Hub lists them
    whisper = lockfile.get("whisper/tiny.en")
    assert whisper.files[0].sha256 == models.whisper_sha256 and whisper.files[0].size == len(models.whisper_bytes)


def test_lock_again_keeps_every_pin_and_asks_nothing(locked, models: MirrorModels) -> None:
    volume, path = locked
    before = path.read_bytes()
    models.mirror.reset_log()
    result = json.loads(volume.cli("lock", "--json").stdout)
    assert not result["written"] and len(result["kept"]) == 5 and result["requests"] == 0
    assert models.mirror.requests == [] and path.read_bytes() == before


@pytest.mark.slow
def test_a_moved_branch_stays_pinned_until_upgrade_which_is_a_small_diff(tmp_path: Path, models: MirrorModels) -> None:
    repo = f"acme/moving-{tmp_path.name[-10:]}"
    first = models.mirror.add_repo(
        repo, {"config.json": b'{"v": 1}\n', "model.safetensors": fixtures.noise(5000, 1), "README.md": b"# r\n"}
    )
    path = tmp_path / "models.lock"
    env = models.env(
        tmp_path / "models",
        **{**SMALL, "MODELCACHE_FACE": "yunet"},
        MODELCACHE_TEXT_EMBEDDING=repo,
        MODELCACHE_LOCKFILE=str(path),
    )
    volume = Volume(tmp_path / "models", env)
    assert volume.cli("lock").returncode == 0
    pinned = path.read_text()
    second = models.mirror.add_repo(
        repo, {"config.json": b'{"v": 2}\n', "model.safetensors": fixtures.noise(5000, 1), "README.md": b"# r\n"}
    )
    assert volume.fetch().lock.get(repo).commit == first  # the branch moved; the pin did not
    assert volume.cli("lock", "--check").returncode == 0  # the configuration did not change either
    assert volume.cli("lock").returncode == 0 and path.read_text() == pinned
    proc = volume.cli("lock", "--upgrade", repo, "--json")
    result = json.loads(proc.stdout)
    assert (
        result["moved"] == [repo] and result["resolved"] == [repo] and "opencv/face_detection_yunet" in result["kept"]
    )
    diff = [
        line
        for line in difflib.unified_diff(pinned.splitlines(), path.read_text().splitlines(), n=0)
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
    ]
    assert len(diff) == 4, diff  # the commit line and the one changed file, old and new
    assert any(second in line for line in diff) and any("config.json" in line for line in diff)
    # the volume was filled from the old lockfile: verify says so, fetch moves it
    check = volume.cli("verify")
    assert check.returncode == EXIT_VERIFY and "filled from another lockfile" in check.stdout
    assert volume.fetch().lock.get(repo).commit == second


def test_fetch_with_a_lockfile_asks_the_hub_nothing_but_bytes(locked, models: MirrorModels) -> None:
    volume, path = locked
    models.mirror.reset_log()
    result = volume.fetch()
    assert not result.warm and result.files_fetched == 24
    assert [r for r in models.mirror.requests if r.path.startswith("/api/") or r.method == "HEAD"] == []
    lock = read_lock(Layout(volume.root))
    assert lock.lockfile == read_lockfile(path).digest
    assert volume.cli("verify", "--deep").returncode == 0
    models.mirror.reset_log()
    assert volume.fetch().warm and models.mirror.requests == []  # warm: not one request


def test_fetch_refuses_what_the_lockfile_does_not_pin(locked, models: MirrorModels) -> None:
    volume, _ = locked
    models.mirror.reset_log()
    proc = volume.cli("fetch", MODELCACHE_VISION=fixtures.CLIP)
    assert proc.returncode == EXIT_CONFIG
    assert "does not pin" in proc.stderr and fixtures.CLIP in proc.stderr and "modelcache lock --upgrade" in proc.stderr
    assert models.mirror.requests == []  # refused before any request
    assert not Layout(volume.root).lock_file.exists()
    stale = volume.cli("lock", "--check", MODELCACHE_VISION=fixtures.CLIP)
    assert stale.returncode == EXIT_VERIFY and "STALE" in stale.stdout and "remedy:" in stale.stdout
    refresh = volume.cli("fetch", "--refresh")
    assert refresh.returncode == EXIT_CONFIG and "lock --upgrade" in refresh.stderr


def test_bytes_that_differ_from_the_pins_are_refused(tmp_path: Path, models: MirrorModels) -> None:
    repo = f"acme/swapped-{tmp_path.name[-10:]}"
    commit = models.mirror.add_repo(repo, {"config.json": b'{"a": 1}\n', "model.safetensors": fixtures.noise(9000, 3)})
    path = tmp_path / "models.lock"
    env = models.env(tmp_path / "models", **SMALL, MODELCACHE_TEXT_EMBEDDING=repo, MODELCACHE_LOCKFILE=str(path))
    volume = Volume(tmp_path / "models", env)
    assert volume.cli("lock").returncode == 0
    # the mirror now serves other bytes under the same commit (a bad mirror, a tampered cache)
    models.mirror.add_repo(
        repo, {"config.json": b'{"a": 1}\n', "model.safetensors": fixtures.noise(9000, 4)}, commit=commit
    )
    with pytest.raises(NetworkError) as info:
        volume.fetch()
    text = info.value.render()
    assert f"{repo}/model.safetensors" in text and "the lockfile's pin of" in text and "X-Linked-Etag" in text
    assert not (Layout(volume.root).snapshot(repo, commit) / "model.safetensors").exists()


@pytest.mark.slow
def test_two_volumes_from_one_lockfile_and_two_mirrors_are_identical(
    locked, tmp_path: Path, _direct_mirror_models: MirrorModels
) -> None:
    volume, path = locked
    volume.fetch()
    other_root = tmp_path / "other" / "models"
    # the Hub repos from another mirror; the whisper checkpoint is a URL, and a URL is part of the pin
    other = Volume(
        other_root,
        {
            **_direct_mirror_models.env(other_root),
            "MODELCACHE_LOCKFILE": str(path),
            "MODELCACHE_WHISPER_URL": volume.env["MODELCACHE_WHISPER_URL"],
        },
    )
    assert _direct_mirror_models.mirror.url != volume.env["HF_ENDPOINT"]
    other.fetch()
    assert _tree(volume.root) == _tree(other_root)


def _tree(root: Path) -> dict[str, tuple]:
    """Every path under the volume (the state folder aside): link target, or size and sha256."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel.startswith(".modelcache/"):
                continue
            out[rel] = ("link", os.readlink(path)) if path.is_symlink() else (path.stat().st_size, sha256_file(path))
    return out


def test_lockfile_problems_are_configuration_errors(volume: Volume, tmp_path: Path) -> None:
    missing = volume.cli("fetch", MODELCACHE_LOCKFILE=str(tmp_path / "nope.lock"))
    assert (
        missing.returncode == EXIT_CONFIG and "file not found" in missing.stderr and "modelcache lock" in missing.stderr
    )
    (tmp_path / "dir.lock").mkdir()
    folder = volume.cli("fetch", MODELCACHE_LOCKFILE=str(tmp_path / "dir.lock"))
    assert folder.returncode == EXIT_CONFIG and "is a directory" in folder.stderr
    assert volume.cli("lock", SIGLIP).returncode == EXIT_CONFIG  # names only with --upgrade
    unknown = volume.cli("lock", "--upgrade", "acme/nope", MODELCACHE_LOCKFILE=str(tmp_path / "x.lock"))
    assert unknown.returncode == EXIT_CONFIG and "acme/nope" in unknown.stderr


def test_lock_print_writes_nothing(volume: Volume, tmp_path: Path) -> None:
    path = tmp_path / "models.lock"
    proc = volume.cli("lock", "--print", MODELCACHE_LOCKFILE=str(path))
    assert proc.returncode == 0 and proc.stdout.startswith("# models.lock") and not path.exists()
    path.write_text(proc.stdout)
    assert read_lockfile(path).get(MINILM) is not None


@pytest.fixture
def saved_environment():
    """The gate sets the offline variables in this process: put the environment back afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_the_service_gate_refuses_a_volume_from_another_lockfile(locked, tmp_path: Path, saved_environment) -> None:
    from modelcache.service.startup import StartupError, check

    volume, path = locked
    volume.fetch()
    check(volume.settings())  # fine
    pins = read_lockfile(path)
    readme = replace(pins.pins[0].files[0], size=1)
    moved = replace(pins, pins=(replace(pins.pins[0], files=(readme, *pins.pins[0].files[1:])), *pins.pins[1:]))
    other = tmp_path / "other.lock"
    write_lockfile(other, moved)
    with pytest.raises(StartupError) as info:
        check(volume.settings(MODELCACHE_LOCKFILE=str(other)))
    assert "filled from another lockfile" in info.value.render()
