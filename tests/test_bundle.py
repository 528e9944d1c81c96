"""`modelcache export` / `import`: one verified, deterministic bundle, and every bad bundle refused."""

from __future__ import annotations

import hashlib
import io
import json
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelcache.errors import EXIT_CONFIG, EXIT_DISK_FULL, EXIT_VERIFY
from modelcache.layout import Layout
from modelcache.volume_lock import read_lock
from tests.conftest import Volume, _cli_env, run_cli
from tests.fetch.test_runner import assert_complete, small_tmpfs
from tests.support.fixtures import MINILM, MirrorModels

BUNDLE_LOCK = "modelcache-bundle.json"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, _warm_template: Path, _mirror_models: MirrorModels) -> Path:
    """A bundle of the session's complete volume."""
    out = tmp_path_factory.mktemp("bundle") / "models.tar"
    proc = run_cli("export", str(out), env=_mirror_models.env(_warm_template))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def empty(tmp_path: Path, models: MirrorModels) -> Volume:
    """An empty volume with the same configuration as the bundle's; no network used by import."""
    root = tmp_path / "models"
    return Volume(root, models.env(root, HF_ENDPOINT="http://127.0.0.1:9"))  # nothing listens there


def names(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


@pytest.mark.slow
def test_export_is_a_plain_deterministic_tar(bundle: Path, warm: Volume, tmp_path: Path) -> None:
    listing = subprocess.run(["tar", "-tvf", str(bundle)], capture_output=True, text=True, check=True).stdout
    lines = listing.splitlines()
    assert lines[0].split()[-1] == BUNDLE_LOCK
    assert all(" 0/0 " in line and "1970-01-01" in line for line in lines)
    assert any("whisper/tiny.en.pt" in line for line in lines)
    assert any(line.startswith("l") and "/snapshots/" in line and "-> ../../blobs/" in line for line in lines)
    again = tmp_path / "again.tar"
    assert warm.cli("export", str(again)).returncode == 0
    assert again.read_bytes() == bundle.read_bytes()  # the same volume (a copy, other mtimes) gives the same bytes
    piped = subprocess.run(
        [sys.executable, "-m", "modelcache", "export", "-"], env=_cli_env(warm.env), capture_output=True
    )
    assert piped.returncode == 0 and piped.stdout == bundle.read_bytes()
    header = json.loads(tarfile.open(bundle).extractfile(BUNDLE_LOCK).read())
    assert header["format"] == "modelcache-bundle" and header["lock"]["artifacts"]


def test_import_into_an_empty_volume_then_nothing_left_to_fetch(bundle: Path, empty: Volume) -> None:
    proc = empty.cli("import", str(bundle))
    assert proc.returncode == 0, proc.stderr
    assert "lock written" in proc.stderr
    assert_complete(empty)
    fetch = empty.cli("fetch")  # HF_ENDPOINT points nowhere: any request would fail
    assert fetch.returncode == 0 and "nothing to fetch" in fetch.stderr
    assert not list(Layout(empty.root).partial.iterdir())


def test_import_from_stdin_and_into_a_partly_filled_volume(bundle: Path, empty: Volume) -> None:
    proc = empty.cli("import", str(bundle))
    assert proc.returncode == 0
    layout = Layout(empty.root)
    lock = read_lock(layout)
    layout.lock_file.unlink()
    (layout.root / lock.get("whisper/tiny.en").files[0].path).unlink()
    again = subprocess.run(
        [sys.executable, "-m", "modelcache", "import", "-"],
        env=_cli_env(empty.env),
        stdin=open(bundle, "rb"),
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert "imported 1 file(s)" in again.stderr and "already present" in again.stderr
    assert_complete(empty)


def rewrite(bundle: Path, out: Path, change: Callable[[tarfile.TarInfo, bytes | None], list]) -> Path:
    """A copy of the bundle with members changed: ``change`` returns the (info, data) pairs to write."""
    with tarfile.open(bundle) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else None
            for new_info, new_data in change(info, data):
                dst.addfile(new_info, io.BytesIO(new_data) if new_data is not None else None)
    return out


def flip(info: tarfile.TarInfo, data: bytes | None) -> list:
    if info.name.endswith("tiny.en.pt"):
        raw = bytearray(data)
        raw[len(raw) // 2] ^= 1
        data = bytes(raw)
    return [(info, data)]


def extra(info: tarfile.TarInfo, data: bytes | None) -> list:
    out = [(info, data)]
    if info.name == BUNDLE_LOCK:
        smuggled = tarfile.TarInfo("whisper/evil.pt")
        smuggled.size = 3
        out.append((smuggled, b"bad"))
    return out


def missing(info: tarfile.TarInfo, data: bytes | None) -> list:
    return [] if info.name.endswith("tiny.en.pt") else [(info, data)]


def dotdot(info: tarfile.TarInfo, data: bytes | None) -> list:
    if info.name.endswith("tiny.en.pt"):
        info.name = "whisper/../../outside.pt"
    return [(info, data)]


def absolute(info: tarfile.TarInfo, data: bytes | None) -> list:
    if info.name.endswith("tiny.en.pt"):
        info.name = "/tmp/absolute.pt"
    return [(info, data)]


def escaping_link(info: tarfile.TarInfo, data: bytes | None) -> list:
    if info.issym() and info.name.endswith("/model.safetensors"):
        info.linkname = "../../../../../../../../etc/passwd"
    return [(info, data)]


def other_plan(info: tarfile.TarInfo, data: bytes | None) -> list:
    if info.name == BUNDLE_LOCK:
        header = json.loads(data)
        for artifact in header["lock"]["artifacts"]:
            if artifact["name"] == MINILM:
                artifact["spec"] = "0" * 64
        data = json.dumps(header).encode()
        info.size = len(data)
    return [(info, data)]


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (flip, "whisper/tiny.en.pt in the bundle is damaged"),
        (extra, "'whisper/evil.pt', which its lock does not name"),
        (missing, "the bundle lacks 1 file(s)"),
        (dotdot, "a path outside the volume"),
        (absolute, "a path outside the volume"),
        (escaping_link, "not a link to ../../blobs/"),
        (other_plan, "does not hold what this configuration asks for"),
    ],
    ids=["flipped-byte", "extra-member", "missing-member", "dotdot", "absolute", "link-outside", "other-settings"],
)
def test_bad_bundles_are_refused_and_nothing_half_written(
    bundle: Path, empty: Volume, tmp_path: Path, change, expect: str
) -> None:
    bad = rewrite(bundle, tmp_path / "bad.tar", change)
    proc = empty.cli("import", str(bad))
    assert proc.returncode == EXIT_VERIFY, proc.stderr
    assert expect in proc.stderr and "remedy:" in proc.stderr and "Traceback" not in proc.stderr
    layout = Layout(empty.root)
    assert not layout.lock_file.exists()
    assert not (tmp_path / "outside.pt").exists() and not Path("/tmp/absolute.pt").exists()
    # whatever is at a final path is complete and verified, never half a file
    reference = {f.path: f.sha256 for f in read_lock_of(bundle).files}
    for rel, sha in reference.items():
        path = layout.abs(rel)
        if path.exists():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert not layout.partial.exists() or not [p for p in layout.partial.iterdir() if p.suffix == ".part"]


def test_other_settings_name_the_artifact(bundle: Path, empty: Volume) -> None:
    proc = empty.cli("import", str(bundle), MODELCACHE_TEXT_EMBEDDING="BAAI/bge-small-en-v1.5")
    assert (
        proc.returncode == EXIT_VERIFY and "BAAI/bge-small-en-v1.5" in proc.stderr and "not in the lock" in proc.stderr
    )


def read_lock_of(bundle: Path):
    from modelcache.volume_lock import parse_lock

    with tarfile.open(bundle) as tar:
        return parse_lock(json.loads(tar.extractfile(BUNDLE_LOCK).read())["lock"])


def test_a_truncated_bundle_is_refused_and_a_complete_one_resumes(bundle: Path, empty: Volume, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size * 2 // 3])
    proc = empty.cli("import", str(cut))
    assert proc.returncode == EXIT_VERIFY and "the volume's lock was not written" in proc.stderr
    assert not Layout(empty.root).lock_file.exists()
    done = empty.cli("import", str(bundle))
    assert done.returncode == 0
    skipped = int(re.search(r"; (\d+) already present", done.stderr).group(1))
    assert skipped > 0  # what the cut bundle brought was kept
    assert_complete(empty)


@pytest.mark.slow
def test_kill_9_during_import_then_resume(bundle: Path, empty: Volume) -> None:
    """An import killed mid-stream (fed slowly through a pipe) leaves no lock; the next one resumes."""
    feeder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\n"
                "src = open(sys.argv[1], 'rb')\n"
                "while block := src.read(1 << 20):\n"
                "    sys.stdout.buffer.write(block); sys.stdout.flush(); time.sleep(0.02)\n"
            ),
            str(bundle),
        ],
        stdout=subprocess.PIPE,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelcache", "import", "-"],
        env=_cli_env(empty.env),
        stdin=feeder.stdout,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    feeder.kill()
    feeder.wait(10)
    assert proc.returncode == -signal.SIGKILL and not Layout(empty.root).lock_file.exists()
    done = empty.cli("import", str(bundle))
    assert done.returncode == 0, done.stderr
    assert int(re.search(r"; (\d+) already present", done.stderr).group(1)) > 0  # resumed, not redone
    assert_complete(empty)


def test_export_refuses_up_front_when_the_target_is_too_small(warm: Volume, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "20m") as small:
        proc = warm.cli("export", str(small / "models.tar"))
        assert proc.returncode == EXIT_DISK_FULL and "nothing was written" in proc.stderr
        assert list(small.iterdir()) == []


def test_export_of_a_damaged_volume_is_refused_and_leaves_no_bundle(warm: Volume, tmp_path: Path) -> None:
    target = Layout(warm.root).whisper / "tiny.en.pt"
    raw = bytearray(target.read_bytes())
    raw[100] ^= 1
    target.write_bytes(bytes(raw))
    proc = warm.cli("export", str(tmp_path / "m.tar"))
    assert proc.returncode == EXIT_VERIFY and "changed on disk" in proc.stderr and "fetch --deep" in proc.stderr
    assert not list(tmp_path.glob("*m.tar*"))


def test_export_and_import_say_what_is_wrong_with_their_arguments(volume: Volume, tmp_path: Path) -> None:
    assert volume.cli("export", str(tmp_path / "x.tar")).returncode == EXIT_VERIFY  # no lock: not complete
    assert volume.cli("import", str(tmp_path / "nope.tar")).returncode == EXIT_CONFIG
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    junk = volume.cli("import", str(tmp_path / "junk.tar"))
    assert junk.returncode == EXIT_VERIFY and "remedy:" in junk.stderr
