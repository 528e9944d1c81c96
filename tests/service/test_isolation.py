"""The service on a read-only volume as a non-root user, and in a network namespace with
no network at all: it needs neither write access nor the network."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.conftest import ROOT, _cli_env
from tests.support import fixtures
from tests.support.service import free_port, start_service

pytestmark = pytest.mark.slow  # each test starts `modelcache serve`

NOBODY = "65534"


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def readonly_volume(_warm_template: Path) -> Iterator[Path]:
    """A copy of the complete volume, bind-mounted read-only, readable by everyone."""
    base = Path(tempfile.mkdtemp(prefix="mc-ro-"))
    os.chmod(base, 0o755)
    source, mount = base / "source", base / "models"
    subprocess.run(["cp", "-a", str(_warm_template), str(source)], check=True)
    subprocess.run(["chmod", "-R", "a+rX,go-w", str(source)], check=True)
    mount.mkdir()
    bound = subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True, text=True)
    if bound.returncode != 0:
        shutil.rmtree(base)
        pytest.skip(f"cannot bind-mount here: {bound.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_read_only_volume_as_a_non_root_user(readonly_volume: Path, service_volume: dict, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    probe = subprocess.run(["touch", str(readonly_volume / "probe")], capture_output=True)
    assert probe.returncode != 0  # the mount really is read-only
    before = _tree_state(readonly_volume)
    log = Path(tempfile.mkdtemp(prefix="mc-log-")) / "service.log"
    os.chmod(log.parent, 0o777)
    env = {**service_volume, "MODELCACHE_DIR": str(readonly_volume), "HOME": "/nonexistent", "TMPDIR": "/tmp"}
    prefix = ["setpriv", "--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"]
    service = start_service(env, log, prefix=prefix)
    try:
        status = Path(f"/proc/{service.proc.pid}/status").read_text()  # setpriv execs the service in place
        assert re.search(rf"^Uid:\s+{NOBODY}\s", status, re.M)
        ok = httpx2.post(f"{service.url}/v1/embeddings", json={"model": fixtures.MINILM, "input": "read only"})
        assert ok.status_code == 200
        assert len(httpx2.get(f"{service.url}/health").json()["models_loaded"]) == 4
    finally:
        service.stop()
    assert _tree_state(readonly_volume) == before
    assert "Permission denied" not in service.output() and "Read-only file system" not in service.output()


def test_no_network_namespace(service_volume: dict, speech, tmp_path: Path) -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root, unshare and ip to make a network namespace")
    audio, text = speech
    (tmp_path / "speech.wav").write_bytes(audio)
    port = free_port()
    script = f"""
import json, subprocess, sys, time, httpx2
proc = subprocess.Popen([sys.executable, "-m", "modelcache", "serve"], stderr=open({str(tmp_path / "log")!r}, "w"))
url = "http://127.0.0.1:{port}"
for _ in range(600):
    try:
        if httpx2.get(url + "/health/ready", timeout=1).status_code == 200:
            break
    except httpx2.HTTPError:
        time.sleep(0.2)
result = {{}}
result["embedding"] = httpx2.post(url + "/v1/embeddings", json={{"model": {fixtures.MINILM!r}, "input": "offline"}},
                                  timeout=60).status_code
with open({str(tmp_path / "speech.wav")!r}, "rb") as fh:
    r = httpx2.post(url + "/v1/audio/transcriptions", files={{"file": ("s.wav", fh.read())}},
                    data={{"model": "whisper-1"}}, timeout=120)
result["transcription"] = r.json().get("text")
try:
    httpx2.get("{service_volume["HF_ENDPOINT"]}/api/models/x", timeout=2)
    result["outside"] = "reachable"
except httpx2.HTTPError as exc:
    result["outside"] = type(exc).__name__
proc.terminate(); proc.wait(20)
print(json.dumps(result))
"""
    env = _cli_env({**service_volume, "MODELCACHE_HOST": "127.0.0.1", "MODELCACHE_PORT": str(port)})
    out = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" -c "$1"', sys.executable, script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr + (tmp_path / "log").read_text()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["outside"] != "reachable"  # there is no network in there...
    assert result["embedding"] == 200  # ...and the service does not need one
    from tests.support.whisper_ckpt import wer

    assert wer(text, result["transcription"]) <= 0.3
