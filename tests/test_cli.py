"""The command line: help, machine-readable output, and exit codes."""

from __future__ import annotations

import json

import pytest

from modelcache.errors import EXIT_CONFIG, EXIT_NETWORK, EXIT_VERIFY
from modelcache.layout import Layout
from tests.conftest import Volume, run_cli
from tests.support.fixtures import MINILM, MLX_WHISPER, MirrorModels


def test_help_lists_every_command() -> None:
    proc = run_cli("--help", env={})
    assert proc.returncode == 0
    for command in ("fetch", "plan", "verify", "ls", "show", "doctor", "rm", "prune", "mlx"):
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


def test_show_one_artifact_in_lock_and_on_disk(warm: Volume, models: MirrorModels) -> None:
    data = json.loads(warm.cli("show", MINILM, "--json").stdout)
    assert data["source"] == MINILM and data["revision"] == "main" and data["commit"] == models.commits[MINILM]
    assert data["status"] == "locked" and data["role"] == "text-embedding"
    weights = next(f for f in data["files"] if f["path"].endswith("/model.safetensors"))
    assert weights["size"] > 90_000_000 and len(weights["sha256"]) == 64 and weights["on_disk"] == "ok"
    assert data["bytes"] == sum(f["size"] for f in data["files"])
    # damage one file: fast mode sees a size change, deep mode a flipped byte
    layout = Layout(warm.root)
    config = next(f for f in data["files"] if f["path"].endswith("/config.json"))
    target = layout.abs(config["path"]).resolve()
    raw = bytearray(target.read_bytes())
    raw[0] ^= 0xFF
    target.write_bytes(bytes(raw))
    fast = {f["path"]: f["on_disk"] for f in json.loads(warm.cli("show", MINILM, "--json").stdout)["files"]}
    deep = {f["path"]: f["on_disk"] for f in json.loads(warm.cli("show", MINILM, "--deep", "--json").stdout)["files"]}
    assert fast[config["path"]] == "ok" and deep[config["path"]] == "sha256"
    text = warm.cli("show", "whisper/tiny.en")
    assert text.returncode == 0 and "whisper/tiny.pt" not in text.stdout and "tiny.en.pt" in text.stdout
    assert "locked" in text.stdout


def test_show_of_a_configured_but_unfetched_and_of_an_unknown_artifact(volume: Volume) -> None:
    data = json.loads(volume.cli("show", MINILM, "--json").stdout)
    assert data["commit"] is None and data["files"] == [] and data["status"].startswith("not fetched")
    proc = volume.cli("show", "acme/nope")
    assert (
        proc.returncode == EXIT_CONFIG and "no artifact named 'acme/nope'" in proc.stderr and "remedy:" in proc.stderr
    )


def test_rm_and_prune_speak_json(warm: Volume) -> None:
    dry = json.loads(warm.cli("rm", MLX_WHISPER, "--dry-run", "--json").stdout)
    assert dry["dry_run"] is True and len(dry["removed"]) == 1 and dry["bytes"] > 1_000_000
    assert Layout(warm.root).repo_dir(MLX_WHISPER).exists()
    pruned = json.loads(warm.cli("prune", "--json", MODELCACHE_MLX="").stdout)
    assert pruned["dry_run"] is False
    assert [r["path"] for r in pruned["removed"]] == [dry["removed"][0]["path"]]
    assert not Layout(warm.root).repo_dir(MLX_WHISPER).exists()


def test_failing_verify_names_the_repair(warm: Volume) -> None:
    layout = Layout(warm.root)
    next(p for p in layout.whisper.iterdir()).unlink()
    proc = warm.cli("verify")
    assert proc.returncode == EXIT_VERIFY
    assert "remedy: run `modelcache fetch --deep`" in proc.stdout


@pytest.mark.parametrize(
    "env",
    [
        {"MODELCACHE_WORKERS": "-1"},
        {"MODELCACHE_WORKERS": "abc"},
        {"MODELCACHE_WHISPER_SHA256": "xyz"},
        {"MODELCACHE_STALL_TIMEOUT": "nan"},
        {"MODELCACHE_RETRIES": "1000"},
        {"MODELCACHE_TEXT_EMBEDDING": "sentence-transformers/all-MiniLM-L6-v2@my branch"},
        {"MODELCACHE_TRANSFER": "client"},
        {"MODELCACHE_SEGMENTS": "0"},
        {"MODELCACHE_MLX": "mlx-community/a none"},
    ],
    ids=lambda env: "-".join(f"{k}={v}" for k, v in env.items()),
)
def test_every_configuration_error_ends_with_a_remedy(volume: Volume, env: dict[str, str]) -> None:
    proc = volume.cli("fetch", **env)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("modelcache: configuration error:") and next(iter(env)) in lines[0]
    assert lines[-1].startswith("remedy: ") and "Traceback" not in proc.stderr


def test_a_whisper_url_answering_404_is_a_network_error_with_a_remedy(volume: Volume, models: MirrorModels) -> None:
    proc = volume.cli(
        "fetch",
        "--plain",
        MODELCACHE_WHISPER_URL=models.mirror.url + "/nowhere/tiny.en.pt",
        MODELCACHE_WHISPER_SHA256="0" * 64,
    )
    assert proc.returncode == EXIT_NETWORK, proc.stderr
    assert "HTTP 404" in proc.stderr and "/nowhere/tiny.en.pt" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("remedy: ") and "MODELCACHE_WHISPER_URL" in proc.stderr


@pytest.mark.slow
def test_retries_print_one_line_each(volume: Volume, models: MirrorModels) -> None:
    models.mirror.inject("*/all-MiniLM-L6-v2/resolve/*/vocab.txt", "status", count=2, status=503)
    proc = volume.cli("fetch", "--plain")
    assert proc.returncode == 0, proc.stderr
    retries = [line for line in proc.stderr.splitlines() if "all-MiniLM-L6-v2/vocab.txt: HTTP 503; retry" in line]
    assert [r.split("; retry ")[1].split(" in ")[0] for r in retries] == ["1/4", "2/4"], proc.stderr


def test_an_unreachable_hub_is_not_silent(volume: Volume) -> None:
    from tests.support.service import free_port

    proc = volume.cli("fetch", "--plain", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", MODELCACHE_RETRIES="2")
    assert proc.returncode == EXIT_NETWORK
    retries = [line for line in proc.stderr.splitlines() if "ConnectError" in line and "; retry " in line]
    assert len(retries) == 2, proc.stderr
    assert "cannot reach the Hub" in proc.stderr and "remedy:" in proc.stderr
