"""Shared fixtures: one HF-compatible mirror on 127.0.0.1 filled with real and stand-in models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelcache.fetch import FetchResult, run_fetch
from modelcache.progress import PlainReporter
from modelcache.settings import Settings
from modelcache.testing.hfmirror import HFMirror
from tests.support.fixtures import MirrorModels, fill_mirror
from tests.support.whisper_ckpt import speak

pytest_plugins = ["tests.support.service", "tests.support.registry"]

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "The quick brown fox jumps over the lazy dog. Please call me tomorrow morning."


@pytest.fixture(scope="session")
def _mirror_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mirror-files")


@pytest.fixture(scope="session")
def _mirror_models(_mirror_files: Path) -> Iterator[MirrorModels]:
    """Behaves like huggingface.co today: LFS files answered with a redirect to a CDN host,
    Xet advertised for them, and the Xet storage host (CAS) unreachable."""
    with HFMirror(cdn=True, xet=True) as mirror:
        yield fill_mirror(mirror, _mirror_files)


@pytest.fixture(scope="session")
def _direct_mirror_models(_mirror_files: Path) -> Iterator[MirrorModels]:
    """The same repos, served the old way: every file straight from the Hub host."""
    with HFMirror() as mirror:
        yield fill_mirror(mirror, _mirror_files)


@pytest.fixture
def models(_mirror_models: MirrorModels) -> Iterator[MirrorModels]:
    """The shared mirror, with a clean request log and no faults or throttling."""
    mirror = _mirror_models.mirror
    mirror.clear_faults()
    mirror.throttle_bps = None
    mirror.cas_mode = "unreachable"
    mirror.reset_log()
    yield _mirror_models
    mirror.clear_faults()
    mirror.throttle_bps = None
    mirror.cas_mode = "unreachable"


@dataclass
class Volume:
    """A models directory plus the environment that points the downloader at the mirror."""

    root: Path
    env: dict[str, str]

    def settings(self, **overrides: str) -> Settings:
        return Settings.from_env({**self.env, **overrides})

    def fetch(self, *, refresh: bool = False, deep: bool = False, **overrides: str) -> FetchResult:
        return run_fetch(self.settings(**overrides), refresh=refresh, deep=deep, reporter=PlainReporter())

    def cli(self, *args: str, timeout: float = 120, **overrides: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env={**self.env, **overrides}, timeout=timeout)

    def popen(self, *args: str, **overrides: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "modelcache", *args],
            env=_cli_env({**self.env, **overrides}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def _cli_env(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MODELCACHE_", "HF_"))}
    return {**base, "PYTHONPATH": str(ROOT / "services"), **env}


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcache", *args],
        env=_cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def volume(tmp_path: Path, models: MirrorModels) -> Volume:
    root = tmp_path / "models"
    return Volume(root, models.env(root))


@pytest.fixture(scope="session")
def _warm_template(tmp_path_factory: pytest.TempPathFactory, _mirror_models: MirrorModels) -> Path:
    """One complete volume, fetched once per session; tests get copies of it."""
    root = tmp_path_factory.mktemp("template") / "models"
    run_fetch(Settings.from_env(_mirror_models.env(root)), reporter=PlainReporter())
    return root


@pytest.fixture
def warm(tmp_path: Path, models: MirrorModels, _warm_template: Path) -> Volume:
    """A complete, locked volume (a copy, symlinks kept), ready to be damaged."""
    root = tmp_path / "models"
    subprocess.run(["cp", "-a", str(_warm_template), str(root)], check=True)
    return Volume(root, models.env(root))


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """Known English speech (espeak-ng) as 16 kHz WAV bytes, and its text."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are needed to make test speech (.ci/run installs them)")
    wav = speak(SENTENCE, tmp_path_factory.mktemp("speech") / "speech.wav")
    return wav.read_bytes(), SENTENCE
