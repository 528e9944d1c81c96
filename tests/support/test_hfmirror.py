"""The test Hub (tests/support/hfmirror.py) against the real huggingface_hub client.

Everything goes through 127.0.0.1. The client gets the mirror through ``endpoint=`` (HfApi,
hf_hub_download, snapshot_download, hf_hub_url) or through ``HF_ENDPOINT`` in a subprocess:
``huggingface_hub.constants`` reads ``HF_ENDPOINT`` once, at import time, and ``hf_hub_url`` only
swaps in ``endpoint=`` when its URL template still starts with ``constants.ENDPOINT``, so
monkeypatching ``constants.ENDPOINT`` alone would make hf_hub_download go to huggingface.co.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx2
import httpx2  # huggingface_hub's own HTTP stack
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.support.hfmirror import HFMirror, git_blob_id, lfs_pointer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
REPO = "org/tiny"
CONFIG = b'{"model_type": "tiny", "hidden_size": 8}\n'
VOCAB = b"hello\nworld\n"
WEIGHTS = hashlib.sha256(b"seed").digest() * 8192  # 256 KiB, deterministic
SHA256 = hashlib.sha256(WEIGHTS).hexdigest()


@pytest.fixture(autouse=True)
def _hf_env(monkeypatch, tmp_path):
    # Nothing from the developer's machine (token, cache, offline mode) leaks into the client.
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


@pytest.fixture
def mirror():
    with HFMirror() as m:
        m.commit = m.add_repo(
            REPO, {"config.json": CONFIG, "tokenizer/vocab.txt": VOCAB, "model.safetensors": WEIGHTS}
        )
        yield m


def _storage(cache: pathlib.Path) -> pathlib.Path:
    return cache / "models--org--tiny"


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


def test_model_info_with_files_metadata(mirror):
    api = HfApi(endpoint=mirror.url, token=False)
    info = api.model_info(REPO, files_metadata=True)
    assert info.id == REPO and info.sha == mirror.commit
    assert info.private is False and info.gated is False
    siblings = {s.rfilename: s for s in info.siblings}
    assert sorted(siblings) == ["config.json", "model.safetensors", "tokenizer/vocab.txt"]

    config = siblings["config.json"]
    assert config.size == len(CONFIG)
    assert config.blob_id == git_blob_id(CONFIG) == hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert config.lfs is None

    weights = siblings["model.safetensors"]
    assert weights.size == len(WEIGHTS)
    assert weights.lfs is not None
    assert weights.lfs.sha256 == SHA256 and weights.lfs.size == len(WEIGHTS)
    # Like git and the Hub: an LFS file's blob id is that of its pointer file.
    pointer = lfs_pointer(SHA256, len(WEIGHTS))
    assert weights.lfs.pointer_size == len(pointer)
    assert weights.blob_id == git_blob_id(pointer)

    plain = api.model_info(REPO)
    assert {s.rfilename for s in plain.siblings} == set(siblings)
    assert all(s.size is None and s.lfs is None for s in plain.siblings)
    assert api.model_info(REPO, revision=mirror.commit).sha == mirror.commit


def test_tree_paths_info_refs(mirror):
    api = HfApi(endpoint=mirror.url, token=False)
    assert api.list_repo_files(REPO) == ["config.json", "model.safetensors", "tokenizer/vocab.txt"]

    top = {e.path: e for e in api.list_repo_tree(REPO)}
    assert sorted(top) == ["config.json", "model.safetensors", "tokenizer"]
    assert type(top["tokenizer"]).__name__ == "RepoFolder"
    assert top["model.safetensors"].lfs.sha256 == SHA256

    sub = list(api.list_repo_tree(REPO, path_in_repo="tokenizer", revision=mirror.commit))
    assert [(e.path, e.size, e.blob_id) for e in sub] == [("tokenizer/vocab.txt", len(VOCAB), git_blob_id(VOCAB))]

    infos = api.get_paths_info(REPO, ["config.json", "model.safetensors", "tokenizer", "missing.txt"])
    by_path = {e.path: e for e in infos}
    assert sorted(by_path) == ["config.json", "model.safetensors", "tokenizer"]
    assert by_path["model.safetensors"].lfs.size == len(WEIGHTS)

    refs = api.list_repo_refs(REPO)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", mirror.commit)]
    assert api.file_exists(REPO, "config.json") and not api.file_exists(REPO, "nope.json")


def test_get_hf_file_metadata(mirror):
    lfs = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", endpoint=mirror.url), token=False)
    assert (lfs.commit_hash, lfs.etag, lfs.size) == (mirror.commit, SHA256, len(WEIGHTS))
    assert lfs.location.startswith(mirror.url)
    assert lfs.xet_file_data is None

    regular = get_hf_file_metadata(hf_hub_url(REPO, "tokenizer/vocab.txt", endpoint=mirror.url), token=False)
    assert (regular.commit_hash, regular.etag, regular.size) == (mirror.commit, git_blob_id(VOCAB), len(VOCAB))

    head = httpx2.head(f"{mirror.url}/{REPO}/resolve/main/model.safetensors")
    assert head.status_code == 200
    assert head.headers["ETag"] == head.headers["X-Linked-Etag"] == f'"{SHA256}"'
    assert head.headers["X-Linked-Size"] == head.headers["Content-Length"] == str(len(WEIGHTS))
    assert head.headers["Accept-Ranges"] == "bytes"
    assert head.headers["Content-Type"] == "application/octet-stream"
    assert head.headers["X-Repo-Commit"] == mirror.commit


# --------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------


def test_hf_hub_download_cache_layout(mirror, tmp_path):
    cache = tmp_path / "cache"
    path = hf_hub_download(REPO, "model.safetensors", cache_dir=cache, endpoint=mirror.url, token=False)
    storage = _storage(cache)
    assert pathlib.Path(path) == storage / "snapshots" / mirror.commit / "model.safetensors"
    assert pathlib.Path(path).read_bytes() == WEIGHTS
    assert pathlib.Path(path).resolve() == (storage / "blobs" / SHA256).resolve()
    assert (storage / "refs" / "main").read_text() == mirror.commit

    config = hf_hub_download(REPO, "config.json", cache_dir=cache, endpoint=mirror.url, token=False)
    assert pathlib.Path(config).read_bytes() == CONFIG
    assert (storage / "blobs" / git_blob_id(CONFIG)).read_bytes() == CONFIG


def test_snapshot_download_and_verify(mirror, tmp_path):
    cache = tmp_path / "cache"
    folder = pathlib.Path(snapshot_download(REPO, cache_dir=cache, endpoint=mirror.url, token=False))
    storage = _storage(cache)
    assert folder == storage / "snapshots" / mirror.commit
    assert (folder / "config.json").read_bytes() == CONFIG
    assert (folder / "tokenizer" / "vocab.txt").read_bytes() == VOCAB
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert sorted(p.name for p in (storage / "blobs").iterdir()) == sorted(
        [SHA256, git_blob_id(CONFIG), git_blob_id(VOCAB)]
    )
    # huggingface_hub 2.x also caches the tree listing of the commit next to blobs/refs/snapshots.
    assert (storage / "trees" / f"{mirror.commit}.json").is_file()

    result = HfApi(endpoint=mirror.url, token=False).verify_repo_checksums(REPO, cache_dir=cache)
    assert result.checked_count == 3 and not result.mismatches and not result.missing_paths

    served = mirror.bytes_served("*/resolve/*")
    assert served == len(CONFIG) + len(VOCAB) + len(WEIGHTS)


def test_several_revisions(mirror, tmp_path):
    new_config = b'{"model_type": "tiny", "hidden_size": 16}\n'
    dev = mirror.add_repo(REPO, {"config.json": new_config, "model.safetensors": WEIGHTS}, branch="dev")
    pinned = mirror.add_repo(REPO, {"config.json": b"{}"}, branch="old", commit="ab" * 20)
    assert pinned == "ab" * 20 and dev != mirror.commit
    api = HfApi(endpoint=mirror.url, token=False)
    assert api.model_info(REPO).sha == mirror.commit  # main stays the default
    assert api.model_info(REPO, revision="dev").sha == dev
    assert api.list_repo_files(REPO, revision="old") == ["config.json"]

    cache = tmp_path / "cache"
    kw = dict(cache_dir=cache, endpoint=mirror.url, token=False)
    assert pathlib.Path(hf_hub_download(REPO, "config.json", revision="dev", **kw)).read_bytes() == new_config
    assert pathlib.Path(hf_hub_download(REPO, "config.json", revision=mirror.commit, **kw)).read_bytes() == CONFIG
    assert (_storage(cache) / "refs" / "dev").read_text() == dev
    # URL-quoted revisions are accepted.
    r = httpx2.get(f"{mirror.url}/{REPO}/resolve/refs%2Fheads%2Fdev/config.json")
    assert r.status_code == 200 and r.content == new_config


def test_repo_from_directory_and_paths(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\n")
    (src / "README.md").write_bytes(b"# readme\n")
    (src / "sub" / "big.dat").write_bytes(b"x" * 5000)  # LFS by size (lfs_min_size below)
    (src / "tokenizer.model").write_bytes(b"spm")  # LFS by suffix
    with HFMirror() as m:
        commit = m.add_repo("org/dir", src, lfs_min_size=4096)
        api = HfApi(endpoint=m.url, token=False)
        info = {s.rfilename: s for s in api.model_info("org/dir", files_metadata=True).siblings}
        assert sorted(info) == ["README.md", "sub/big.dat", "tokenizer.model"]
        assert info["README.md"].lfs is None
        assert info["sub/big.dat"].lfs.sha256 == hashlib.sha256(b"x" * 5000).hexdigest()
        assert info["tokenizer.model"].lfs is not None
        # Deterministic default commit; file Paths are streamed from disk.
        assert m.add_repo("org/dir", src, lfs_min_size=4096, branch="again") == commit
        path = hf_hub_download("org/dir", "sub/big.dat", cache_dir=tmp_path / "c", endpoint=m.url, token=False)
        assert pathlib.Path(path).read_bytes() == b"x" * 5000


def test_range_requests(mirror):
    url = f"{mirror.url}/{REPO}/resolve/main/model.safetensors"
    size = len(WEIGHTS)
    with httpx2.Client() as client:
        r = client.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == WEIGHTS[10:20]
        assert r.headers["Content-Range"] == f"bytes 10-19/{size}"
        r = client.get(url, headers={"Range": f"bytes={size - 100}-"})
        assert r.status_code == 206 and r.content == WEIGHTS[-100:]
        r = client.get(url, headers={"Range": "bytes=-7"})
        assert r.status_code == 206 and r.content == WEIGHTS[-7:]
        r = client.get(url, headers={"Range": f"bytes={size}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
        r = client.get(url)  # same keep-alive connection still fine after the 416
        assert r.status_code == 200 and r.content == WEIGHTS
    assert [rec.range for rec in mirror.requests][:2] == ["bytes=10-19", f"bytes={size - 100}-"]


def test_static_files(mirror):
    data = bytes(range(256)) * 10
    url = mirror.add_file("whisper/abc123/tiny.en.pt", data)
    assert url == f"{mirror.url}/whisper/abc123/tiny.en.pt"
    head = httpx2.head(url)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
    assert head.headers["Accept-Ranges"] == "bytes"
    assert httpx2.get(url).content == data
    r = httpx2.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert httpx2.get(f"{mirror.url}/whisper/abc123/other.pt").status_code == 404


# --------------------------------------------------------------------------------------------
# Errors and auth
# --------------------------------------------------------------------------------------------


def test_not_found_errors_map_to_client_exceptions(mirror, tmp_path):
    api = HfApi(endpoint=mirror.url, token=False)
    kw = dict(cache_dir=tmp_path / "cache", endpoint=mirror.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json", **kw)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch", **kw)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="no-such-branch", **kw)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.json", **kw)
    # The client remembers the missing entry under .no_exist/<commit>/ thanks to X-Repo-Commit.
    assert (_storage(tmp_path / "cache") / ".no_exist" / mirror.commit / "missing.json").exists()

    r = httpx2.get(f"{mirror.url}/org/missing/resolve/main/config.json")
    assert r.status_code == 404 and r.headers["X-Error-Code"] == "RepoNotFound"
    assert r.json() == {"error": "Repository not found"}


def test_token_enforced(tmp_path):
    with HFMirror(token="s3cret") as m:
        m.add_repo(REPO, {"config.json": CONFIG})
        assert httpx2.get(f"{m.url}/api/models/{REPO}").status_code == 401
        assert httpx2.head(f"{m.url}/{REPO}/resolve/main/config.json").status_code == 401
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=m.url, token="wrong").model_info(REPO)
        assert err.value.response.status_code == 401
        with pytest.raises(HfHubHTTPError) as err:
            hf_hub_download(REPO, "config.json", cache_dir=tmp_path / "a", endpoint=m.url, token=False)
        assert err.value.response.status_code == 401

        assert HfApi(endpoint=m.url, token="s3cret").model_info(REPO).id == REPO
        path = hf_hub_download(REPO, "config.json", cache_dir=tmp_path / "b", endpoint=m.url, token="s3cret")
        assert pathlib.Path(path).read_bytes() == CONFIG
        assert all(rec.status in (200, 401) for rec in m.requests)


# --------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------


def _raw_get(url: str, timeout: float = 5.0, extra: str = "") -> tuple[bytes, bytes, Exception | None]:
    """GET over a bare socket: (headers, body bytes received, error that ended the read)."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    path = "/" + url.split("//", 1)[1].split("/", 1)[1]
    data, error = b"", None
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError as e:  # ConnectionResetError, TimeoutError
            error = e
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body, error


def test_fault_status(mirror):
    url = f"{mirror.url}/{REPO}/resolve/main/model.safetensors"
    mirror.inject("*/resolve/*/model.safetensors", "status", status=503)
    assert httpx2.head(url).status_code == 200  # HEAD is never faulted
    r = httpx2.get(url)
    assert r.status_code == 503 and WEIGHTS[:16] not in r.content
    assert httpx2.get(url).status_code == 200  # count=1: gone

    mirror.inject("*/model.safetensors", "status", status=500, count=-1)
    assert [httpx2.get(url).status_code for _ in range(3)] == [500, 500, 500]
    assert httpx2.get(f"{mirror.url}/api/models/{REPO}").status_code == 200  # /api/ is never faulted
    mirror.clear_faults()
    assert httpx2.get(url).status_code == 200


def test_fault_reset(mirror):
    url = f"{mirror.url}/{REPO}/resolve/main/model.safetensors"
    mirror.inject("*/model.safetensors", "reset", after_bytes=1000)
    head, body, error = _raw_get(url)
    assert b" 200 " in head.split(b"\r\n")[0]
    assert body == WEIGHTS[:1000]
    assert isinstance(error, ConnectionResetError)
    assert mirror.requests[-1].body_bytes == 1000

    mirror.inject("*/model.safetensors", "reset", after_bytes=5000)
    with pytest.raises(httpx2.TransportError):
        httpx2.get(url)


def test_client_resumes_a_truncated_body_with_range(mirror, tmp_path):
    # A clean close before Content-Length is reached is an httpx2.RemoteProtocolError, which
    # huggingface_hub's http_get retries (after a 1 s sleep) with "Range: bytes=<kept>-". It reads
    # the body with iter_bytes(chunk_size=10 MiB), so only whole 10 MiB chunks are kept.
    big = WEIGHTS * 48  # 12 MiB
    mirror.add_repo("org/big", {"model.safetensors": big})
    cut = 11 * 1024 * 1024
    mirror.inject("*/model.safetensors", "truncate", after_bytes=cut)
    path = hf_hub_download("org/big", "model.safetensors", cache_dir=tmp_path, endpoint=mirror.url, token=False)
    assert pathlib.Path(path).read_bytes() == big
    kept = 10 * 1024 * 1024
    gets = [r for r in mirror.requests if r.method == "GET" and r.path.endswith("model.safetensors")]
    assert [(r.status, r.range, r.body_bytes) for r in gets] == [
        (200, None, cut),
        (206, f"bytes={kept}-", len(big) - kept),
    ]


def test_client_does_not_retry_a_reset(mirror, tmp_path):
    # A TCP RST mid-body is an httpx2.ReadError, which huggingface_hub 2.4 does NOT retry:
    # hf_hub_download raises and leaves no partial file behind; the caller has to retry.
    mirror.inject("*/model.safetensors", "reset", after_bytes=100_000)
    kw = dict(cache_dir=tmp_path, endpoint=mirror.url, token=False)
    with pytest.raises(httpx2.ReadError):
        hf_hub_download(REPO, "model.safetensors", **kw)
    assert not list(tmp_path.rglob("*.incomplete"))
    assert pathlib.Path(hf_hub_download(REPO, "model.safetensors", **kw)).read_bytes() == WEIGHTS


def test_fault_stall(mirror):
    url = f"{mirror.url}/{REPO}/resolve/main/model.safetensors"
    mirror.inject("*/model.safetensors", "stall", after_bytes=2048, stall_s=1.0)
    received = 0
    start = time.monotonic()
    with pytest.raises(httpx2.ReadTimeout):
        with httpx2.stream("GET", url, timeout=httpx2.Timeout(5.0, read=0.3)) as r:
            for chunk in r.iter_raw():
                received += len(chunk)
    assert received == 2048 and time.monotonic() - start < 1.0
    # Once the stall is over the server closes the connection: the body stays short.
    mirror.inject("*/model.safetensors", "stall", after_bytes=10, stall_s=0.2)
    head, body, error = _raw_get(url)
    assert body == WEIGHTS[:10] and error is None


def test_fault_corrupt(mirror, tmp_path):
    url = f"{mirror.url}/{REPO}/resolve/main/model.safetensors"
    mirror.inject("*/model.safetensors", "corrupt", after_bytes=5000)
    bad = httpx2.get(url).content
    assert len(bad) == len(WEIGHTS) and bad != WEIGHTS
    expected = bytearray(WEIGHTS)
    for i in range(5000, 5016):
        expected[i] ^= 0xFF
    assert bad == bytes(expected)

    # Offsets are relative to the file, not to the start of a Range.
    mirror.inject("*/model.safetensors", "corrupt", after_bytes=5000)
    part = httpx2.get(url, headers={"Range": "bytes=4990-5030"}).content
    assert part == bytes(expected[4990:5031])

    # huggingface_hub does not check the sha256 of a plain HTTP download: corruption lands in the cache.
    mirror.inject("*/model.safetensors", "corrupt", after_bytes=0)
    path = hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path, endpoint=mirror.url, token=False)
    assert hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest() != SHA256


def test_fault_truncate(mirror):
    url = f"{mirror.url}/{REPO}/resolve/main/model.safetensors"
    mirror.inject("*/model.safetensors", "truncate", after_bytes=3000)
    head, body, error = _raw_get(url)
    assert f"Content-Length: {len(WEIGHTS)}".encode() in head
    assert body == WEIGHTS[:3000] and error is None  # clean close, short body
    mirror.inject("*/model.safetensors", "truncate", after_bytes=3000)
    with pytest.raises(httpx2.RemoteProtocolError):
        httpx2.get(url)
    assert httpx2.get(url).content == WEIGHTS


def test_faults_on_static_files(mirror):
    url = mirror.add_file("whisper/sha/tiny.en.pt", WEIGHTS)
    mirror.inject("/whisper/*", "truncate", after_bytes=10)
    with pytest.raises(httpx2.RemoteProtocolError):
        httpx2.get(url)
    assert httpx2.get(url).content == WEIGHTS


# --------------------------------------------------------------------------------------------
# Log, throttle, lifecycle
# --------------------------------------------------------------------------------------------


def test_request_log_and_bytes_served(mirror, tmp_path):
    hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path, endpoint=mirror.url, token=False)
    assert mirror.bytes_served("*/model.safetensors") == len(WEIGHTS)
    methods = [(r.method, r.status) for r in mirror.requests if r.path.endswith("model.safetensors")]
    assert methods == [("HEAD", 200), ("GET", 200)]
    mirror.reset_log()
    assert mirror.requests == [] and mirror.bytes_served() == 0


def test_throttle_and_stop_during_transfer(mirror):
    mirror.throttle_bps = 400_000
    url = f"{mirror.url}/{REPO}/resolve/main/model.safetensors"
    start = time.monotonic()
    assert httpx2.get(url).content == WEIGHTS
    assert time.monotonic() - start >= 0.5  # 256 KiB at 400 kB/s

    # A client that goes away mid-body is handled quietly and logged with what was sent.
    with httpx2.stream("GET", url) as r:
        next(r.iter_raw())
    time.sleep(0.3)
    assert 0 < mirror.requests[-1].body_bytes < len(WEIGHTS)

    # stop() does not wait for a slow transfer to finish.
    mirror.throttle_bps = 1000
    t = threading.Thread(target=lambda: pytest.raises(httpx2.TransportError, httpx2.get, url), daemon=True)
    t.start()
    time.sleep(0.2)
    start = time.monotonic()
    mirror.stop()
    assert time.monotonic() - start < 2
    t.join(3)
    assert not t.is_alive()


def _start_cli(root: pathlib.Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.hfmirror", "--port", "0", "--root", str(root), *extra],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("listening on http://127.0.0.1:"), line + proc.stderr.read()
    return proc, line.split()[-1]


def test_cli_serves_logs_and_stops_on_sigterm(tmp_path):
    root = tmp_path / "root"
    (root / "models" / "org" / "tiny" / "tokenizer").mkdir(parents=True)
    (root / "models" / "org" / "tiny" / "config.json").write_bytes(CONFIG)
    (root / "models" / "org" / "tiny" / "model.safetensors").write_bytes(WEIGHTS)
    (root / "models" / "org" / "tiny" / "tokenizer" / "vocab.txt").write_bytes(VOCAB)
    (root / "files" / "whisper" / "abc").mkdir(parents=True)
    (root / "files" / "whisper" / "abc" / "tiny.en.pt").write_bytes(b"pt" * 1000)

    proc, url = _start_cli(root, "--throttle-bps", "2000000")
    try:
        assert httpx2.get(f"{url}/whisper/abc/tiny.en.pt").content == b"pt" * 1000
        cache = tmp_path / "cache"
        folder = snapshot_download(REPO, cache_dir=cache, endpoint=url, token=False)
        assert (pathlib.Path(folder) / "model.safetensors").read_bytes() == WEIGHTS
        # A client that disconnects mid-body must not produce a traceback.
        with httpx2.stream("GET", f"{url}/{REPO}/resolve/main/model.safetensors") as r:
            next(r.iter_raw())
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err
    lines = out.splitlines()
    assert "GET /whisper/abc/tiny.en.pt 200 2000" in lines
    assert f"GET /org/tiny/resolve/{folder.rsplit('/', 1)[-1]}/model.safetensors 200 {len(WEIGHTS)}" in lines
    assert any(line.startswith("HEAD /org/tiny/resolve/") for line in lines)
    assert lines[-1] == "stopped"


def test_hf_cli_download_with_hf_endpoint(mirror, tmp_path):
    hf = pathlib.Path(sys.executable).parent / "hf"
    if not hf.exists():
        pytest.skip("no `hf` command next to the interpreter")
    env = dict(os.environ, HF_ENDPOINT=mirror.url, HF_HUB_DISABLE_UPDATE_CHECK="1", HF_HUB_DISABLE_TELEMETRY="1")
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [str(hf), "download", REPO, "--cache-dir", str(cache)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    folder = _storage(cache) / "snapshots" / mirror.commit
    assert f"path: {folder}" in proc.stdout
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "tokenizer" / "vocab.txt").read_bytes() == VOCAB
