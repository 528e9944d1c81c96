"""The fail-fast gate: every damaged-volume case stops the service before it listens,
with exit code 4, every problem named, and the remedy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelcache.errors import EXIT_VERIFY
from modelcache.layout import Layout
from modelcache.volume_lock import read_lock
from tests.conftest import _cli_env
from tests.support.fixtures import MINILM, SIGLIP
from tests.support.service import run_serve

pytestmark = pytest.mark.slow  # each test starts `modelcache serve`


def blob_of(root: Path, repo: str, name: str) -> tuple[Path, str]:
    layout = Layout(root)
    lock = read_lock(layout)
    entry = next(f for f in lock.get(repo).files if f.path.endswith("/" + name))
    return layout.abs(entry.path).resolve(), entry.path


def assert_refused(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == EXIT_VERIFY, proc.stderr
    assert "cannot start" in proc.stderr and "remedy:" in proc.stderr
    assert "docker compose run --rm model-downloader" in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert "listening on" not in proc.stderr and "Traceback" not in proc.stderr


def test_missing_file(damaged) -> None:
    root, env = damaged
    blob, rel = blob_of(root, MINILM, "model.safetensors")
    blob.unlink()
    assert_refused(run_serve(env), rel, "missing")


def test_every_problem_is_named_in_one_message(damaged) -> None:
    root, env = damaged
    blob, rel = blob_of(root, MINILM, "model.safetensors")
    blob.unlink()
    (root / "whisper" / "tiny.en.pt").unlink()
    tokenizer, tok_rel = blob_of(root, MINILM, "tokenizer.json")
    os.truncate(tokenizer, 10)
    assert_refused(run_serve(env), rel, "whisper/tiny.en.pt", tok_rel, "3 problem(s)")


def test_truncated_file(damaged) -> None:
    root, env = damaged
    blob, rel = blob_of(root, SIGLIP, "model.safetensors")
    os.truncate(blob, blob.stat().st_size - 1)
    assert_refused(run_serve(env), rel, "size")


def test_wrong_sha256_in_deep_mode(damaged) -> None:
    root, env = damaged
    blob, rel = blob_of(root, MINILM, "model.safetensors")
    with open(blob, "r+b") as fh:
        fh.seek(1_000_000)
        fh.write(b"\x00\x01\x02\x03")
    assert_refused(run_serve({**env, "MODELCACHE_VERIFY": "deep"}), rel, "sha256", "deep check")


def test_no_lock(damaged) -> None:
    root, env = damaged
    Layout(root).lock_file.unlink()
    assert_refused(run_serve(env), "no-lock", ".modelcache/lock.json")


def test_empty_volume(tmp_path: Path, damaged) -> None:
    _root, env = damaged
    assert_refused(run_serve({**env, "MODELCACHE_DIR": str(tmp_path / "empty")}), "no-lock")


def test_config_drift_is_reported_and_the_lock_is_served(damaged, tmp_path) -> None:
    """The container's environment asks for a model the volume's lock does not hold (after a
    hot reload, it is stale by design): the lock wins, the difference is reported."""
    import httpx2

    from tests.support.service import start_service

    _root, env = damaged
    service = start_service({**env, "MODELCACHE_VISION": "google/siglip-so400m-patch14-384"}, tmp_path / "log")
    try:
        health = httpx2.get(f"{service.url}/health").json()
        assert any("google/siglip-so400m-patch14-384" in line and "does not hold" in line for line in health["drift"])
        assert "google/siglip-base-patch16-224" in health["models"]  # what the lock holds
        assert "note: the configuration asks for google/siglip-so400m-patch14-384" in service.output()
    finally:
        service.stop()


def test_corrupt_weights_that_fail_to_load(damaged) -> None:
    """Same size, so the fast check passes: the load itself must stop startup."""
    root, env = damaged
    blob, _rel = blob_of(root, MINILM, "model.safetensors")
    size = blob.stat().st_size
    blob.write_bytes(b"\xff" * size)
    proc = run_serve(env)
    assert_refused(proc, "failed to load", MINILM, "verify --deep")
    assert "models--sentence-transformers--all-MiniLM-L6-v2/snapshots/" in proc.stderr


def test_the_gate_imports_no_heavy_library(damaged) -> None:
    root, env = damaged
    blob_of(root, MINILM, "model.safetensors")[0].unlink()
    code = (
        "import sys, json\nfrom modelcache.service.main import serve\n"
        "try:\n    serve()\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'cv2', 'whisper', 'faster_whisper', 'numpy', "
        "'huggingface_hub', 'fastapi') if m in sys.modules)\n"
        "print(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_cli_env(env), capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"code": EXIT_VERIFY, "heavy": []}


def test_port_in_use_is_refused_before_loading(damaged) -> None:
    import socket

    _root, env = damaged
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "modelcache", "serve"],
            capture_output=True,
            text=True,
            timeout=60,
            env=_cli_env({**env, "MODELCACHE_HOST": "127.0.0.1", "MODELCACHE_PORT": str(port)}),
        )
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "loaded" not in proc.stderr  # refused before any model was loaded


def test_missing_api_key_file_is_refused_before_loading(damaged, tmp_path: Path) -> None:
    _root, env = damaged
    proc = run_serve({**env, "MODELCACHE_API_KEY_FILE": str(tmp_path / "nope")})
    assert proc.returncode == 2 and "MODELCACHE_API_KEY_FILE" in proc.stderr and "loaded" not in proc.stderr


def test_nothing_to_serve_is_refused(damaged) -> None:
    _root, env = damaged
    proc = run_serve(
        {
            **env,
            "MODELCACHE_WHISPER": "none",
            "MODELCACHE_TEXT_EMBEDDING": "none",
            "MODELCACHE_VISION": "none",
            "MODELCACHE_FACE": "none",
        }
    )
    assert proc.returncode == EXIT_VERIFY and "no model to serve" in proc.stderr
    # the lock does hold models: the message says the configuration switched them off, and names them
    assert "the configuration switches every model off" in proc.stderr
    assert "sentence-transformers/all-MiniLM-L6-v2 (text-embedding)" in proc.stderr and "remedy:" in proc.stderr
