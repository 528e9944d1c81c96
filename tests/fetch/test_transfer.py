"""fetch/transfer.py on its own: one stream and parallel ranged segments, against the mirror."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from modelcache.errors import NetworkError, VerificationError
from modelcache.fetch.policy import Cancelled, Policy
from modelcache.fetch.transfer import Expected, Segmenting, download, resumable_bytes, sidecar_path
from modelcache.hashing import sha256_file
from modelcache.testing.hfmirror import HFMirror
from tests.conftest import ROOT
from tests.support import fixtures

SIZE = 6 * 1024 * 1024 + 123  # not a multiple of the segment count
SEGMENTS = Segmenting(count=4, min_bytes=1024 * 1024)


@pytest.fixture(scope="module")
def content() -> bytes:
    return fixtures.noise(SIZE, 99)


@pytest.fixture
def mirror(content: bytes) -> Iterator[HFMirror]:
    with HFMirror() as mirror:
        mirror.add_file("big/file.bin", content)
        yield mirror


def expected(content: bytes) -> Expected:
    return Expected(size=len(content), sha256=hashlib.sha256(content).hexdigest(), pin="the test")


def fetch(mirror: HFMirror, part: Path, content: bytes, *, segmenting: Segmenting | None = SEGMENTS, **policy):
    notes: list[str] = []
    policy.setdefault("retries", 3)
    policy.setdefault("stall_timeout", 2.0)
    policy.setdefault("backoff_base", 0.01)
    with httpx2.Client() as client:
        result = download(
            client,
            f"{mirror.url}/big/file.bin",
            part,
            expected(content),
            Policy(notify=notes.append, **policy),
            label="big/file.bin",
            segmenting=segmenting,
        )
    return result, notes


def ranges(mirror: HFMirror) -> list[str | None]:
    return sorted((r.range or "") for r in mirror.requests if r.method == "GET" and r.path == "/big/file.bin")


def test_a_big_file_comes_in_four_ranged_segments_hashed_in_order(
    tmp_path: Path, mirror: HFMirror, content: bytes
) -> None:
    part = tmp_path / "f.part"
    result, _ = fetch(mirror, part, content)
    assert result.sha256 == hashlib.sha256(content).hexdigest() and result.transferred == SIZE
    assert part.read_bytes() == content and not sidecar_path(part).exists()
    bounds = [SIZE * i // 4 for i in range(5)]
    assert ranges(mirror) == sorted(f"bytes={bounds[i]}-{bounds[i + 1] - 1}" for i in range(4))


def test_below_the_threshold_one_stream(tmp_path: Path, mirror: HFMirror, content: bytes) -> None:
    fetch(mirror, tmp_path / "f.part", content, segmenting=Segmenting(4, SIZE + 1))
    assert ranges(mirror) == [""]


def test_a_reset_segment_is_retried_alone_and_logged(tmp_path: Path, mirror: HFMirror, content: bytes) -> None:
    mirror.inject("/big/file.bin", "reset", count=1, after_bytes=100_000)
    part = tmp_path / "f.part"
    result, notes = fetch(mirror, part, content)
    assert part.read_bytes() == content
    assert result.transferred < SIZE + SIZE // 4  # only the broken segment's rest was asked again
    assert len([n for n in notes if "(segment " in n and "retry 1/3" in n]) == 1, notes


def test_wrong_bytes_in_a_segment_refetch_the_file_once(tmp_path: Path, mirror: HFMirror, content: bytes) -> None:
    mirror.inject("/big/file.bin", "corrupt", count=4, after_bytes=SIZE // 2 + 10)  # the first pass
    part = tmp_path / "f.part"
    _, notes = fetch(mirror, part, content)
    assert part.read_bytes() == content
    assert any("sha256 mismatch" in n and "downloading it again" in n for n in notes), notes


def test_the_same_wrong_bytes_twice_stop_with_the_pin(tmp_path: Path, mirror: HFMirror, content: bytes) -> None:
    mirror.inject("/big/file.bin", "corrupt", count=-1, after_bytes=10)
    part = tmp_path / "f.part"
    with pytest.raises(VerificationError) as info:
        fetch(mirror, part, content, retries=5)
    assert "the same bytes twice" in info.value.message and "the test expects" in info.value.message
    assert not part.exists() and not sidecar_path(part).exists()
    assert len(ranges(mirror)) == 8  # two passes of four segments, no third


def test_a_server_without_ranges_falls_back_to_one_verified_stream(tmp_path: Path, content: bytes) -> None:
    with _NoRangeServer(content) as url:
        part = tmp_path / "f.part"
        notes: list[str] = []
        with httpx2.Client() as client:
            result = download(
                client, url, part, expected(content), Policy(notify=notes.append), label="x", segmenting=SEGMENTS
            )
    assert part.read_bytes() == content and result.sha256 == hashlib.sha256(content).hexdigest()
    assert any("ignores Range" in n for n in notes), notes


def test_an_earlier_single_stream_partial_is_kept_when_segments_take_over(
    tmp_path: Path, mirror: HFMirror, content: bytes
) -> None:
    part = tmp_path / "f.part"
    part.write_bytes(content[: SIZE // 3])
    result, _ = fetch(mirror, part, content)
    assert part.read_bytes() == content
    assert result.transferred == SIZE - SIZE // 3


def test_a_sidecar_that_does_not_fit_the_file_is_ignored(tmp_path: Path, mirror: HFMirror, content: bytes) -> None:
    part = tmp_path / "f.part"
    part.write_bytes(b"\0" * 10)
    sidecar_path(part).write_text(json.dumps({"size": SIZE + 1, "segments": [[0, SIZE + 1, SIZE + 1]]}))
    fetch(mirror, part, content)
    assert part.read_bytes() == content


def test_cancel_stops_every_segment_at_once_and_keeps_their_progress(
    tmp_path: Path, mirror: HFMirror, content: bytes
) -> None:
    mirror.throttle_bps = 400_000  # per request: about 4 s for a quarter of the file
    part = tmp_path / "f.part"
    policy = Policy(retries=0, stall_timeout=5)
    errors: list[BaseException] = []

    def run() -> None:
        with httpx2.Client() as client:
            try:
                download(
                    client,
                    f"{mirror.url}/big/file.bin",
                    part,
                    expected(content),
                    policy,
                    label="x",
                    segmenting=Segmenting(4, 1024),
                )
            except BaseException as exc:
                errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(1.5)
    started = time.monotonic()
    policy.cancel.set()
    worker.join(5)
    assert not worker.is_alive() and time.monotonic() - started < 1.5
    assert len(errors) == 1 and isinstance(errors[0], Cancelled)
    kept = resumable_bytes(part)
    assert 1_000_000 < kept < SIZE
    # every byte the record counts is really there
    segments = json.loads(sidecar_path(part).read_text())["segments"]
    data = part.read_bytes()
    for start, _end, done in segments:
        assert data[start : start + done] == content[start : start + done]
    mirror.throttle_bps = None
    mirror.reset_log()
    result, _ = fetch(mirror, part, content, segmenting=Segmenting(4, 1024))
    assert part.read_bytes() == content and result.transferred == SIZE - kept


def test_kill_9_during_segments_then_resume(tmp_path: Path, mirror: HFMirror, content: bytes) -> None:
    """A real process killed mid-transfer: the next one resumes each segment where it was recorded."""
    part = tmp_path / "f.part"
    mirror.throttle_bps = 1_000_000
    code = (
        "import hashlib, sys, httpx2\n"
        "from pathlib import Path\n"
        "import modelcache.fetch.transfer as t\n"
        "t.SIDECAR_EVERY = 256 * 1024  # record often: a 6 MiB file is small\n"
        "from modelcache.fetch.policy import Policy\n"
        "from modelcache.fetch.transfer import Expected, Segmenting, download\n"
        "size, sha = int(sys.argv[3]), sys.argv[4]\n"
        "with httpx2.Client() as c:\n"
        "    download(c, sys.argv[1], Path(sys.argv[2]), Expected(size, sha), Policy(), label='x',\n"
        "             segmenting=Segmenting(4, 1024))\n"
    )
    sha = hashlib.sha256(content).hexdigest()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, f"{mirror.url}/big/file.bin", str(part), str(SIZE), sha],
        env={"PYTHONPATH": str(ROOT / "services")},
    )
    try:
        deadline = time.monotonic() + 20
        while resumable_bytes(part) < SIZE // 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    kept = resumable_bytes(part)
    assert SIZE // 2 <= kept < SIZE, kept
    mirror.throttle_bps = None
    mirror.reset_log()
    result, _ = fetch(mirror, part, content, segmenting=Segmenting(4, 1024))
    # only what the record did not count is asked again, and the recorded bytes were right
    assert sha256_file(part) == sha and result.transferred == SIZE - kept


def test_a_stalled_segment_fails_within_its_bound(tmp_path: Path, mirror: HFMirror, content: bytes) -> None:
    mirror.inject("/big/file.bin", "stall", count=-1, after_bytes=1000, stall_s=20)
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        fetch(mirror, tmp_path / "f.part", content, retries=1, stall_timeout=0.5)
    assert time.monotonic() - started < 8
    assert "stalled" in info.value.message and "segment" in info.value.message


class _NoRangeServer:
    """A plain HTTP server that always answers 200 with the whole file (ignores Range)."""

    def __init__(self, content: bytes) -> None:
        import http.server

        body = content

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/file.bin"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
