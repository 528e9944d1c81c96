"""docs/testing/example, run as a downstream project would run it.

The example is copied to a temporary folder; a fresh virtual environment (no system site
packages, so nothing of this checkout but the wheel is importable) gets a wheel built from
this checkout with its ``testing`` extra and pytest (from PyPI or the local pip cache); then
the example's own pytest runs against the real images on the real Docker engine, through
the plugin the wheel registers. Skipped without a Docker engine or the images, unless
MODELCACHE_REQUIRE_DOCKER=1 (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelcache.testing import DOWNLOADER_IMAGE, SERVICE_IMAGE
from modelcache.testing.stack import LABEL
from tests.conftest import ROOT
from tests.support.docker import docker_unavailable

pytestmark = [pytest.mark.docker, pytest.mark.slow]
EXAMPLE = ROOT / "docs" / "testing" / "example"


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_documented_example_passes_as_a_separate_project(tmp_path: Path) -> None:
    reason = docker_unavailable((DOWNLOADER_IMAGE, SERVICE_IMAGE))
    if reason:
        if os.environ.get("MODELCACHE_REQUIRE_DOCKER") == "1":
            pytest.fail(f"the downstream example is required here but cannot run: {reason}")
        pytest.skip(f"downstream example skipped: {reason}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST"))}
    before = _labelled()
    started = time.monotonic()

    wheels = tmp_path / "wheels"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        tmp_path,
        env,
        300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("modelcache-*.whl")

    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, 120).returncode == 0
    python = venv / "bin" / "python"
    installed = _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"modelcache[testing] @ {wheel.as_uri()}",
            "pytest",
        ],
        tmp_path,
        env,
        600,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    project = tmp_path / "consumer"
    shutil.copytree(EXAMPLE, project)
    # what the example sees: its own folder and the installed wheel, not this checkout
    isolated = _run([str(python), "-c", "import tests.support"], project, env, 60)
    assert isolated.returncode != 0
    setup_seconds = time.monotonic() - started

    result = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"], project, env, 900)
    output = result.stdout + result.stderr
    print(f"setup {setup_seconds:.1f}s, example {time.monotonic() - started - setup_seconds:.1f}s\n{output}")
    assert result.returncode == 0, output
    assert "2 passed" in output
    assert _labelled() == before  # the plugin's stack removed its containers, network and volume


def _labelled() -> set[str]:
    """Every container, network and volume that a ModelCacheStack made and that still exists."""
    found = set()
    for kind in ("container", "network", "volume"):
        args = ["docker", kind, "ls", "-q", "--filter", f"label={LABEL}"]
        if kind == "container":
            args.insert(3, "-a")
        found |= {f"{kind} {x}" for x in subprocess.run(args, capture_output=True, text=True).stdout.split()}
    return found
