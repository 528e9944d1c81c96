"""The pytest plugin of modelcache.testing (entry point pytest11): options and ini settings become
ModelCacheStack's arguments; loading it costs nothing (no fixture runs, nothing heavy imported)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
from modelcache.testing.plugin import stack_options

def test_probe(pytestconfig):
    heavy = sorted(m for m in ("docker", "testcontainers", "openai", "modelcache.testing.stack") if m in sys.modules)
    print("OPTIONS=" + json.dumps({**stack_options(pytestconfig), "heavy": heavy}))
"""


def run(tmp_path: Path, *args: str, ini: str = "") -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n" + ini)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def options(result: subprocess.CompletedProcess[str]) -> dict:
    import json

    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if "OPTIONS=" in x)
    return json.loads(line.split("OPTIONS=", 1)[1])


def test_defaults_and_no_heavy_imports(tmp_path: Path) -> None:
    got = options(run(tmp_path))
    assert got == {
        "models": {},
        "offline": False,
        "volume": None,
        "api_key": None,
        "start_timeout": 600.0,
        "heavy": [],
    }


def test_ini_then_command_line(tmp_path: Path) -> None:
    ini = (
        "modelcache_offline = true\n"
        "modelcache_models =\n    MODELCACHE_WHISPER=none\n    MODELCACHE_VISION=none\n"
        "modelcache_volume = from-ini\n"
        "modelcache_service_image = svc:ini\n"
    )
    got = options(
        run(
            tmp_path,
            "--modelcache-model",
            "MODELCACHE_VISION=org/vision",
            "--modelcache-volume",
            "from-cli",
            "--modelcache-downloader-image",
            "dl:cli",
            "--modelcache-start-timeout",
            "90",
            ini=ini,
        )
    )
    assert got["offline"] is True
    assert got["models"] == {"MODELCACHE_WHISPER": "none", "MODELCACHE_VISION": "org/vision"}
    assert got["volume"] == "from-cli"
    assert (got["downloader_image"], got["service_image"]) == ("dl:cli", "svc:ini")
    assert got["start_timeout"] == 90.0


def test_a_setting_that_is_not_key_value_is_a_usage_error(tmp_path: Path) -> None:
    result = run(tmp_path, "--modelcache-model", "MODELCACHE_WHISPER")
    assert result.returncode != 0
    assert "--modelcache-model: 'MODELCACHE_WHISPER' is not KEY=VALUE" in result.stdout + result.stderr


def test_help_lists_the_options(tmp_path: Path) -> None:
    result = run(tmp_path, "--help")
    assert "--modelcache-offline" in result.stdout and "modelcache_models" in result.stdout


def test_tiny_names_match_the_set() -> None:
    from modelcache import testing
    from modelcache.testing import tinyset

    assert (testing.TINY_TEXT_EMBEDDING, testing.TINY_VISION) == (tinyset.TEXT_EMBEDDING, tinyset.VISION)
    assert f"whisper-{tinyset.WHISPER}" == testing.TINY_WHISPER
