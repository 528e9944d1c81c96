"""models_lock.py: the models.lock format on its own (no network)."""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path

import pytest

from modelcache.errors import ConfigError
from modelcache.models_lock import Lockfile, Pin, PinnedFile, read_lockfile, render, write_lockfile
from modelcache.plan import build_plan
from modelcache.settings import Settings

SHA = "ab" * 32
GIT = "cd" * 20
COMMIT = "ef" * 20
ENV = {"MODELCACHE_WHISPER": "none", "MODELCACHE_VISION": "none", "MODELCACHE_FACE": "none"}


def sample() -> Lockfile:
    plan = build_plan(Settings.from_env(ENV))
    (artifact,) = plan.artifacts
    files = tuple(PinnedFile(f"file_{i:02d}.json", 100 + i, git=GIT) for i in range(20))
    files += (PinnedFile("model.safetensors", 90_000_000, sha256=SHA),)
    pin = Pin(artifact.name, artifact.kind, artifact.spec, artifact.source, "main", COMMIT, files)
    return Lockfile(plan.digest, (pin,))


def test_render_then_read_gives_the_same_lockfile(tmp_path: Path) -> None:
    path = tmp_path / "models.lock"
    write_lockfile(path, sample())
    again = read_lockfile(path)
    assert again == sample() and again.digest == sample().digest
    text = path.read_text()
    assert text.startswith("# models.lock") and "version = 1" in text
    assert render(again) == text  # stable: reading and writing changes nothing


def test_one_changed_file_is_a_one_line_diff() -> None:
    before = sample()
    pin = before.pins[0]
    files = tuple(replace(f, size=999, sha256="12" * 32) if f.path == "model.safetensors" else f for f in pin.files)
    after = replace(before, pins=(replace(pin, files=files),))
    diff = [
        line
        for line in difflib.unified_diff(render(before).splitlines(), render(after).splitlines(), n=0)
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
    ]
    assert len(diff) == 2 and all("model.safetensors" in line for line in diff)
    assert before.digest != after.digest


def test_comments_do_not_change_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "models.lock"
    write_lockfile(path, sample())
    path.write_text("# reviewed by ops\n" + path.read_text())
    assert read_lockfile(path).digest == sample().digest


def test_an_empty_file_means_no_lockfile(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_text("")
    assert read_lockfile(path) is None
    assert read_lockfile(Path("/dev/null")) is None  # what compose mounts for "none"


def test_stale_against_the_configuration() -> None:
    lockfile = sample()
    assert lockfile.stale(build_plan(Settings.from_env(ENV))) == []
    other = build_plan(Settings.from_env({**ENV, "MODELCACHE_FACE": "yunet"}))
    problems = lockfile.stale(other)
    assert problems == ["opencv/face_detection_yunet@main (face) is configured but not pinned"]
    moved = build_plan(Settings.from_env({**ENV, "MODELCACHE_TEXT_EMBEDDING": "BAAI/bge-small-en-v1.5"}))
    assert len(lockfile.stale(moved)) == 2  # one not pinned, one pinned but gone


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("version = 2\nplan = 'x'\n", "unsupported lockfile version 2"),
        ("version = 1\n", "'plan' is missing"),
        ("version = 1\nplan = 'x'\n[[artifact]]\nname = 'a'\n", "'kind' is missing"),
        (
            "version = 1\nplan = 'x'\n[[artifact]]\nname='a'\nkind='hf'\nspec='s'\nsource='a'\ncommit='nope'\nfiles=[]\n",
            "commit 'nope'",
        ),
        (
            "version = 1\nplan = 'x'\n[[artifact]]\nname='a'\nkind='hf'\nspec='s'\nsource='a'\nfiles=[]\n",
            "at least one file",
        ),
        (
            "version = 1\nplan = 'x'\n[[artifact]]\nname='a'\nkind='hf'\nspec='s'\nsource='a'\n"
            "files=[{path='../x', size=1, git='" + GIT + "'}]\n",
            "not a relative path",
        ),
        (
            "version = 1\nplan = 'x'\n[[artifact]]\nname='a'\nkind='hf'\nspec='s'\nsource='a'\n"
            "files=[{path='x', size=1}]\n",
            "pinned by 'sha256' or 'git'",
        ),
        (
            "version = 1\nplan = 'x'\n[[artifact]]\nname='a'\nkind='hf'\nspec='s'\nsource='a'\n"
            "files=[{path='x', size=-1, sha256='" + SHA + "'}]\n",
            "whole number of bytes",
        ),
        ("this is = not [toml", "not valid TOML"),
    ],
    ids=["version", "plan", "kind", "commit", "no-files", "dotdot", "no-hash", "size", "toml"],
)
def test_bad_lockfiles_are_clear_configuration_errors(tmp_path: Path, text: str, expect: str) -> None:
    path = tmp_path / "models.lock"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_lockfile(path)
    assert expect in info.value.message and "MODELCACHE_LOCKFILE" in info.value.message
    assert info.value.remedy


def test_a_missing_lockfile_and_a_folder_in_its_place(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_lockfile(tmp_path / "nope.lock")
    assert "file not found" in info.value.message and "modelcache lock" in info.value.remedy
    (tmp_path / "dir.lock").mkdir()
    with pytest.raises(ConfigError) as info:
        read_lockfile(tmp_path / "dir.lock")
    assert "is a directory" in info.value.message
