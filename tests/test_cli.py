"""The command line: help, machine-readable output, and exit codes."""

from __future__ import annotations

import json

from modelcache.errors import EXIT_CONFIG, EXIT_VERIFY
from tests.conftest import Volume, run_cli
from tests.support.fixtures import MINILM, MLX_WHISPER, MirrorModels


def test_help_lists_every_command() -> None:
    proc = run_cli("--help", env={})
    assert proc.returncode == 0
    for command in ("fetch", "plan", "verify", "ls", "doctor", "rm", "prune", "mlx"):
        assert command in proc.stdout


def test_plan_is_offline_and_shows_lock_status(volume: Volume, models: MirrorModels) -> None:
    proc = volume.cli("plan", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [a["status"] for a in data["artifacts"]] == ["to fetch"] * 5
    assert models.mirror.requests == []
    volume.fetch()
    data = json.loads(volume.cli("plan", "--json").stdout)
    minilm = next(a for a in data["artifacts"] if a["name"] == MINILM)
    assert minilm["status"] == "locked" and minilm["commit"] == models.commits[MINILM]
    assert minilm["bytes"] > 90_000_000


def test_ls_json_lists_files_with_hashes(warm: Volume) -> None:
    data = json.loads(warm.cli("ls", "--json").stdout)
    names = [a["name"] for a in data]
    assert MINILM in names and "whisper/tiny.en" in names
    files = next(a for a in data if a["name"] == MINILM)["files"]
    assert all(len(f["sha256"]) == 64 and f["size"] >= 0 for f in files)


def test_ls_without_a_lock_says_what_to_do(volume: Volume) -> None:
    proc = volume.cli("ls")
    assert proc.returncode == EXIT_VERIFY and "modelcache fetch" in proc.stderr
    assert volume.cli("ls", "--json").returncode == EXIT_VERIFY


def test_bad_configuration_exits_2_naming_the_variable(volume: Volume) -> None:
    for command in ("fetch", "verify", "plan"):
        proc = volume.cli(command, MODELCACHE_WHISPER="huge")
        assert proc.returncode == EXIT_CONFIG
        assert "MODELCACHE_WHISPER='huge'" in proc.stderr and "Traceback" not in proc.stderr


def test_mlx_prints_native_usage(warm: Volume) -> None:
    proc = warm.cli("mlx", "--host-path", "/Users/me/models")
    assert proc.returncode == 0
    assert 'export HF_HOME="/Users/me/models/huggingface"' in proc.stdout
    assert "HF_HUB_OFFLINE=1" in proc.stdout and MLX_WHISPER in proc.stdout


def test_unwritable_volume_is_a_clear_configuration_error(volume: Volume) -> None:
    volume.root.parent.mkdir(parents=True, exist_ok=True)
    blocker = volume.root
    blocker.write_text("a file where the volume should be")
    proc = volume.cli("fetch")
    assert proc.returncode == EXIT_CONFIG
    assert "not writable" in proc.stderr and "remedy:" in proc.stderr
