"""The test Hub (modelcache/testing/hfmirror.py) against the real huggingface_hub client.

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
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import httpx2  # huggingface_hub's own HTTP stack
import huggingface_hub.constants
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from modelcache.testing.hfmirror import HFMirror, RequestRecord, git_blob_id, lfs_pointer

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
        m.commit = m.add_repo(REPO, {"config.json": CONFIG, "tokenizer/vocab.txt": VOCAB, "model.safetensors": WEIGHTS})
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
    kw = {"cache_dir": cache, "endpoint": mirror.url, "token": False}
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
    kw = {"cache_dir": tmp_path / "cache", "endpoint": mirror.url, "token": False}
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
    kw = {"cache_dir": tmp_path, "endpoint": mirror.url, "token": False}
    with pytest.raises(httpx2.ReadError):
        hf_hub_download(REPO, "model.safetensors", **kw)
    assert not list(tmp_path.rglob("*.incomplete"))
    assert pathlib.Path(hf_hub_download(REPO, "model.safetensors", **kw)).read_bytes() == WEIGHTS


def test_fault_stall(mirror):
    url = f"{mirror.url}/{REPO}/resolve/main/model.safetensors"
    mirror.inject("*/model.safetensors", "stall", after_bytes=2048, stall_s=1.0)
    received = 0
    start = time.monotonic()
    with pytest.raises(httpx2.ReadTimeout), httpx2.stream("GET", url, timeout=httpx2.Timeout(5.0, read=0.3)) as r:
        for chunk in r.iter_raw():
            received += len(chunk)
    assert received == 2048 and time.monotonic() - start < 1.0
    # Once the stall is over the server closes the connection: the body stays short.
    mirror.inject("*/model.safetensors", "stall", after_bytes=10, stall_s=0.2)
    _head, body, error = _raw_get(url)
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

    def slow_get() -> None:
        with pytest.raises(httpx2.TransportError):
            httpx2.get(url)

    t = threading.Thread(target=slow_get, daemon=True)
    t.start()
    time.sleep(0.2)
    start = time.monotonic()
    mirror.stop()
    assert time.monotonic() - start < 2
    t.join(3)
    assert not t.is_alive()


def _start_cli(root: pathlib.Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelcache.testing.hfmirror", "--port", "0", "--root", str(root), *extra],
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
    assert "GET /whisper/abc/tiny.en.pt 200 2000 role=hub auth=no" in lines
    commit = folder.rsplit("/", 1)[-1]
    assert f"GET /org/tiny/resolve/{commit}/model.safetensors 200 {len(WEIGHTS)} role=hub auth=no" in lines
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


# --------------------------------------------------------------------------------------------
# CDN redirect
# --------------------------------------------------------------------------------------------

TOKEN = "hf_s3cret"


@pytest.fixture
def cdn_mirror():
    with HFMirror(cdn=True) as m:
        m.commit = m.add_repo(REPO, {"config.json": CONFIG, "tokenizer/vocab.txt": VOCAB, "model.safetensors": WEIGHTS})
        yield m


@pytest.fixture
def xet_mirror():
    with HFMirror(cdn=True, xet=True) as m:
        m.commit = m.add_repo(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
        yield m


@pytest.fixture
def xet_disabled(monkeypatch):
    # huggingface_hub reads HF_HUB_DISABLE_XET into `constants` at import time, but
    # is_xet_available() looks the constant up on every call: patching it is enough in-process.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)


def _cdn_location(m: HFMirror, filename: str = "model.safetensors") -> str:
    r = httpx2.head(f"{m.url}/{REPO}/resolve/main/{filename}")
    assert r.status_code == 302
    return r.headers["Location"]


def test_cdn_redirects_lfs_files(cdn_mirror):
    m = cdn_mirror
    assert re.fullmatch(r"http://localhost:\d+", m.cdn_url) and m.url.startswith("http://127.0.0.1:")
    url = f"{m.url}/{REPO}/resolve/main/model.safetensors"
    for method in ("HEAD", "GET"):
        r = httpx2.request(method, url)
        assert r.status_code == 302
        location = r.headers["Location"]
        assert location.startswith(f"{m.cdn_url}/{REPO}/resolve/{m.commit}/model.safetensors?expires=")
        assert re.search(r"&signature=[0-9a-f]{64}$", location)
        assert r.headers["X-Repo-Commit"] == m.commit
        assert r.headers["ETag"] == r.headers["X-Linked-Etag"] == f'"{SHA256}"'
        assert r.headers["X-Linked-Size"] == str(len(WEIGHTS))
        assert "X-Xet-Hash" not in r.headers and "Link" not in r.headers
        body = f"Found. Redirecting to {location}".encode()
        assert r.headers["Content-Length"] == str(len(body)) and r.content == (body if method == "GET" else b"")
    expires = int(urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["expires"][0])
    assert 3500 < expires - time.time() <= 3600

    r = httpx2.get(url, follow_redirects=True)
    assert r.status_code == 200 and r.content == WEIGHTS
    assert r.headers["ETag"] == f'"{SHA256}"' and r.headers["Accept-Ranges"] == "bytes"
    # Regular files are still served by the hub itself.
    r = httpx2.get(f"{m.url}/{REPO}/resolve/main/config.json")
    assert r.status_code == 200 and r.content == CONFIG

    roles = [(rec.role, rec.method, rec.status, rec.host.split(":")[0]) for rec in m.requests]
    assert roles[-3:] == [
        ("hub", "GET", 302, "127.0.0.1"),
        ("cdn", "GET", 200, "localhost"),
        ("hub", "GET", 200, "127.0.0.1"),
    ]
    assert sum(rec.body_bytes for rec in m.requests if rec.role == "cdn") == len(WEIGHTS)


def test_get_hf_file_metadata_through_cdn(cdn_mirror):
    m = cdn_mirror
    meta = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", endpoint=m.url), token=False)
    assert (meta.commit_hash, meta.etag, meta.size) == (m.commit, SHA256, len(WEIGHTS))
    assert meta.location.startswith(f"{m.cdn_url}/{REPO}/resolve/{m.commit}/model.safetensors?")
    assert meta.xet_file_data is None
    # The client stops at the redirect to another origin: the CDN never saw the HEAD.
    assert {rec.role for rec in m.requests} == {"hub"}


def test_hf_hub_download_through_cdn_keeps_the_token_on_the_hub(tmp_path):
    with HFMirror(token=TOKEN, cdn=True) as m:
        commit = m.add_repo(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
        kw = {"cache_dir": tmp_path, "endpoint": m.url, "token": TOKEN}
        path = hf_hub_download(REPO, "model.safetensors", **kw)
        assert pathlib.Path(path).read_bytes() == WEIGHTS
        assert pathlib.Path(path).resolve().name == SHA256
        assert pathlib.Path(hf_hub_download(REPO, "config.json", **kw)).read_bytes() == CONFIG
        folder = snapshot_download(REPO, cache_dir=tmp_path / "snap", endpoint=m.url, token=TOKEN)
        assert (pathlib.Path(folder) / "model.safetensors").read_bytes() == WEIGHTS

        assert m.auth_by_role() == {"hub": {f"Bearer {TOKEN}"}, "cdn": {None}}
        cdn_gets = [r for r in m.requests if r.role == "cdn"]
        assert [(r.method, r.status, r.body_bytes) for r in cdn_gets] == [("GET", 200, len(WEIGHTS))] * 2
        assert all(r.path == f"/{REPO}/resolve/{commit}/model.safetensors" for r in cdn_gets)
        # The client went to the CDN URL straight from the HEAD's Location: no GET on the hub's resolve.
        assert not [r for r in m.requests if r.role == "hub" and r.method == "GET" and "safetensors" in r.path]


def test_cdn_signature_checks(cdn_mirror):
    m = cdn_mirror
    location = _cdn_location(m)
    assert httpx2.get(location).status_code == 200
    base, _, query = location.partition("?")
    params = urllib.parse.parse_qs(query)
    bad_sig = f"{base}?expires={params['expires'][0]}&signature={'0' * 64}"
    longer = f"{base}?expires={int(params['expires'][0]) + 1}&signature={params['signature'][0]}"
    other_path = location.replace("model.safetensors", "config.json")
    for url in (base, bad_sig, longer, other_path, f"{base}?expires=soon&signature=x"):
        r = httpx2.get(url)
        assert r.status_code == 403 and b"AccessDenied" in r.content, url
    expired = m.signed_cdn_url(REPO, m.commit, "model.safetensors", ttl_s=-5)
    assert httpx2.get(expired).status_code == 403
    fresh = m.signed_cdn_url(REPO, m.commit, "model.safetensors")
    assert httpx2.get(fresh).content == WEIGHTS
    # A valid signature only opens LFS files that exist.
    assert httpx2.get(m.signed_cdn_url(REPO, m.commit, "config.json")).status_code == 404
    assert httpx2.get(m.signed_cdn_url(REPO, m.commit, "nope.bin")).status_code == 404
    assert httpx2.post(fresh).status_code == 405
    # The CDN is not the hub: no API there.
    assert httpx2.get(f"{m.cdn_url}/api/models/{REPO}").status_code == 403


def test_cdn_range_faults_and_throttle(cdn_mirror):
    m = cdn_mirror
    location = _cdn_location(m)
    size = len(WEIGHTS)
    with httpx2.Client() as client:
        r = client.get(location, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == WEIGHTS[10:20]
        assert r.headers["Content-Range"] == f"bytes 10-19/{size}"
        assert client.get(location, headers={"Range": "bytes=-7"}).content == WEIGHTS[-7:]
        r = client.get(location, headers={"Range": f"bytes={size}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
        assert client.get(location).content == WEIGHTS

    # Existing globs on the resolve path hit the bytes on the CDN, not the hub's redirect.
    m.inject("*/org/tiny/resolve/*/model.safetensors", "status", status=503)
    r = httpx2.get(f"{m.url}/{REPO}/resolve/main/model.safetensors", follow_redirects=True)
    assert r.status_code == 503
    assert [(rec.role, rec.status) for rec in m.requests[-2:]] == [("hub", 302), ("cdn", 503)]
    m.inject("*/model.safetensors", "truncate", after_bytes=3000)
    head, body, _error = _raw_get(location)
    assert b" 200 " in head.split(b"\r\n")[0] and body == WEIGHTS[:3000]
    m.inject("*/model.safetensors", "corrupt", after_bytes=0)
    assert httpx2.get(location).content[16:] == WEIGHTS[16:]
    assert m.requests[-1].role == "cdn"

    m.throttle_bps = 400_000
    start = time.monotonic()
    assert httpx2.get(location).content == WEIGHTS
    assert time.monotonic() - start >= 0.5


def test_cdn_ignores_range(cdn_mirror):
    m = cdn_mirror
    location = _cdn_location(m)
    m.cdn_ignores_range = True
    r = httpx2.get(location, headers={"Range": "bytes=100-"})
    assert r.status_code == 200 and r.content == WEIGHTS and "Content-Range" not in r.headers
    assert m.requests[-1].range == "bytes=100-"
    # The hub still honours Range for the files it serves.
    r = httpx2.get(f"{m.url}/{REPO}/resolve/main/config.json", headers={"Range": "bytes=0-1"})
    assert r.status_code == 206
    m.clear_faults()
    assert httpx2.get(location, headers={"Range": "bytes=100-"}).status_code == 206


# --------------------------------------------------------------------------------------------
# Xet advertising and the CAS
# --------------------------------------------------------------------------------------------


def test_xet_headers_on_the_redirect(xet_mirror):
    m = xet_mirror
    head = httpx2.head(f"{m.url}/{REPO}/resolve/main/model.safetensors")
    assert head.status_code == 302
    assert head.headers["X-Linked-Size"] == str(len(WEIGHTS))
    assert head.headers["X-Linked-Etag"] == f'"{SHA256}"'
    xet_hash = head.headers["X-Xet-Hash"]
    assert re.fullmatch(r"[0-9a-f]{64}", xet_hash) and xet_hash != SHA256
    token_url = f"{m.url}/api/models/{REPO}/xet-read-token/{m.commit}"
    assert head.headers["Link"] == f'<{token_url}>; rel="xet-auth"'
    assert head.links["xet-auth"]["url"] == token_url
    assert httpx2.head(f"{m.url}/{REPO}/resolve/{m.commit}/model.safetensors").headers["X-Xet-Hash"] == xet_hash
    assert "X-Xet-Hash" not in httpx2.head(f"{m.url}/{REPO}/resolve/main/config.json").headers

    meta = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", endpoint=m.url), token=False)
    assert meta.xet_file_data is not None
    assert (meta.xet_file_data.file_hash, meta.xet_file_data.refresh_route) == (xet_hash, token_url)
    assert meta.size == len(WEIGHTS) and meta.location.startswith(m.cdn_url)

    # Like the Hub, listings name the Xet hash of LFS files.
    entries = {e.path: e for e in HfApi(endpoint=m.url, token=False).list_repo_tree(REPO)}
    assert entries["model.safetensors"].xet_hash == xet_hash and entries["config.json"].xet_hash is None


def test_xet_read_token_route(xet_mirror):
    m = xet_mirror
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", m.cas_url)
    r = httpx2.get(f"{m.url}/api/models/{REPO}/xet-read-token/main")
    assert r.status_code == 200
    assert r.headers["X-Xet-Cas-Url"] == m.cas_url
    token, exp = r.headers["X-Xet-Access-Token"], int(r.headers["X-Xet-Token-Expiration"])
    assert len(token) >= 16 and 3590 < exp - time.time() <= 3600
    assert r.json() == {"casUrl": m.cas_url, "accessToken": token, "exp": exp}
    assert httpx2.get(f"{m.url}/api/models/{REPO}/xet-read-token/main").headers["X-Xet-Access-Token"] != token
    assert httpx2.get(f"{m.url}/api/models/{REPO}/xet-read-token/nope").status_code == 404
    # "unreachable": nothing listens there.
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(m.cas_url, timeout=2)
    m.cas_url = "http://cas.example:1"
    assert httpx2.get(f"{m.url}/api/models/{REPO}/xet-read-token/main").json()["casUrl"] == "http://cas.example:1"

    with HFMirror(token=TOKEN, cdn=True, xet=True) as private:
        private.add_repo(REPO, {"model.safetensors": WEIGHTS})
        route = f"{private.url}/api/models/{REPO}/xet-read-token/main"
        assert httpx2.get(route).status_code == 401
        assert httpx2.get(route, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_hf_hub_download_with_xet_advertised_and_disabled_in_the_client(tmp_path, xet_disabled):
    with HFMirror(token=TOKEN, cdn=True, xet=True) as m:
        commit = m.add_repo(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
        path = hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path, endpoint=m.url, token=TOKEN)
        assert pathlib.Path(path).read_bytes() == WEIGHTS
        # With Xet metadata the client keeps the hub URL and lets httpx follow the 302, which
        # drops the Authorization header on the way to the other origin.
        weights = [(r.role, r.method, r.status) for r in m.requests if r.path.endswith("model.safetensors")]
        assert weights == [("hub", "HEAD", 302), ("hub", "GET", 302), ("cdn", "GET", 200)]
        assert m.requests[-1].path == f"/{REPO}/resolve/{commit}/model.safetensors"
        assert m.auth_by_role() == {"hub": {f"Bearer {TOKEN}"}, "cdn": {None}}


def test_cas_garbage(xet_mirror):
    m = xet_mirror
    unreachable = m.cas_url
    m.cas_mode = "garbage"
    assert m.cas_mode == "garbage" and m.cas_url != unreachable
    assert httpx2.get(f"{m.url}/api/models/{REPO}/xet-read-token/main").json()["casUrl"] == m.cas_url
    for method in ("GET", "POST", "PUT", "HEAD", "OPTIONS"):
        r = httpx2.request(method, f"{m.cas_url}/v1/reconstructions/{'a' * 64}", content=b"x" * 10, timeout=2)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
        if method != "HEAD":
            with pytest.raises(ValueError):
                r.json()
    records = [r for r in m.requests if r.role == "cas"]
    assert [r.method for r in records] == ["GET", "POST", "PUT", "HEAD", "OPTIONS"]
    assert records[0].path == f"/v1/reconstructions/{'a' * 64}" and records[0].host == m.cas_url.split("//")[1]
    m.cas_mode = "unreachable"
    assert m.cas_url == unreachable
    with pytest.raises(ValueError):
        m.cas_mode = "flaky"


def test_cas_blackhole():
    with HFMirror(cdn=True, xet=True, cas_mode="blackhole") as m:
        m.add_repo(REPO, {"model.safetensors": WEIGHTS})
        start = time.monotonic()
        with pytest.raises(httpx2.ReadTimeout):
            httpx2.get(f"{m.cas_url}/v1/reconstructions/x", headers={"Authorization": "Bearer xet"}, timeout=0.5)
        assert time.monotonic() - start < 2
        record = m.requests[-1]
        assert (record.role, record.method, record.status, record.authorization) == ("cas", "GET", 0, "Bearer xet")
        host, port = m.cas_url.split("//")[1].split(":")
        idle = socket.create_connection((host, int(port)), timeout=5)  # accepted, never answered
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        start = time.monotonic()
    assert time.monotonic() - start < 2  # stop() did not wait for the held connections
    assert idle.recv(10) == b""  # ... and closed them
    idle.close()


# --------------------------------------------------------------------------------------------
# Listings, gated, renamed and one-segment repos
# --------------------------------------------------------------------------------------------


def test_tree_pagination(tmp_path):
    files = {f"f/{i:04d}.txt": str(i).encode() for i in range(1500)}
    with HFMirror() as m:
        m.add_repo("org/many", files)
        api = HfApi(endpoint=m.url, token=False)
        entries = list(api.list_repo_tree("org/many", recursive=True))
        assert len(entries) == 1501  # the folder and its 1500 files
        assert sorted(e.path for e in entries if e.path != "f") == sorted(files)
        assert len(list(api.list_repo_tree("org/many", path_in_repo="f"))) == 1500
        assert len(api.list_repo_files("org/many")) == 1500
        pages = [r for r in m.requests if "/tree/" in r.path]
        assert len(pages) == 6

        first = httpx2.get(f"{m.url}/api/models/org/many/tree/main/f?expand=false")
        assert len(first.json()) == 1000
        link = first.links["next"]["url"]
        assert link.startswith(f"{m.url}/api/models/org/many/tree/main/f?recursive=false&expand=false&cursor=")
        second = httpx2.get(link)
        assert len(second.json()) == 500 and "Link" not in second.headers
        assert [e["path"] for e in first.json() + second.json()] == sorted(files)

        m.page_size = 2
        r = httpx2.get(f"{m.url}/api/models/org/many/tree/main?recursive=true")
        assert [e["path"] for e in r.json()] == ["f", "f/0000.txt"] and "cursor=" in r.headers["Link"]
        assert httpx2.get(f"{m.url}/api/models/org/many/tree/main?cursor=bogus").status_code == 400


def test_gated_repo(tmp_path):
    with HFMirror() as m:
        commit = m.add_repo(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS}, gated=True)
        api = HfApi(endpoint=m.url, token=False)
        assert api.model_info(REPO).gated == "manual"
        assert api.list_repo_files(REPO) == ["config.json", "model.safetensors"]
        assert len(api.get_paths_info(REPO, ["config.json"])) == 1
        assert api.list_repo_refs(REPO).branches[0].target_commit == commit

        url = f"{m.url}/{REPO}/resolve/main/config.json"
        r = httpx2.get(url)
        assert r.status_code == 401 and r.headers["X-Error-Code"] == "GatedRepo"
        assert r.headers["X-Error-Message"] == (
            f"Access to model {REPO} is restricted. You must have access to it and be authenticated to access it. "
            "Please log in."
        )
        r = httpx2.head(url, headers={"Authorization": "Bearer someone-else"})
        assert r.status_code == 403 and r.headers["X-Error-Code"] == "GatedRepo"
        assert r.headers["X-Error-Message"] == (
            f"Access to model {REPO} is restricted and you are not in the authorized list. "
            f"Visit https://huggingface.co/{REPO} to ask for access."
        )
        assert httpx2.get(f"{m.url}/api/models/{REPO}/xet-read-token/main").status_code == 401

        kw = {"cache_dir": tmp_path, "endpoint": m.url}
        with pytest.raises(GatedRepoError) as err:
            hf_hub_download(REPO, "config.json", token=False, **kw)
        assert err.value.response.status_code == 401
        with pytest.raises(GatedRepoError) as err:
            hf_hub_download(REPO, "model.safetensors", token="someone-else", **kw)
        assert err.value.response.status_code == 403

        m.grant(REPO, TOKEN)
        path = hf_hub_download(REPO, "model.safetensors", token=TOKEN, **kw)
        assert pathlib.Path(path).read_bytes() == WEIGHTS
        assert httpx2.get(url, headers={"Authorization": "Bearer someone-else"}).status_code == 403
        m.add_repo(REPO, {"config.json": CONFIG}, branch="dev")  # gated=None: still gated
        assert httpx2.get(url).status_code == 401
        m.add_repo(REPO, {"config.json": CONFIG}, branch="dev", gated=False)
        assert httpx2.get(url).status_code == 200 and api.model_info(REPO).gated is False
        with pytest.raises(ValueError):
            m.grant("org/missing", TOKEN)


def test_renamed_repo(tmp_path):
    with HFMirror(cdn=True) as m:
        commit = m.add_repo("org/old", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
        m.rename("org/old", "org/new")
        r = httpx2.get(f"{m.url}/api/models/org/old/tree/main?recursive=true")
        assert r.status_code == 307 and r.headers["Location"] == "/api/models/org/new/tree/main?recursive=true"
        r = httpx2.head(f"{m.url}/org/old/resolve/main/config.json")
        assert r.status_code == 307 and r.headers["Location"] == "/org/new/resolve/main/config.json"

        api = HfApi(endpoint=m.url, token=False)
        info = api.model_info("org/old")
        assert (info.id, info.sha) == ("org/new", commit)
        assert [e.path for e in api.list_repo_tree("org/old")] == ["config.json", "model.safetensors"]
        assert [e.path for e in api.get_paths_info("org/old", ["config.json"])] == ["config.json"]  # POST too
        for name, data in (("config.json", CONFIG), ("model.safetensors", WEIGHTS)):
            path = hf_hub_download("org/old", name, cache_dir=tmp_path, endpoint=m.url, token=False)
            assert pathlib.Path(path).read_bytes() == data
        assert (tmp_path / "models--org--old" / "refs" / "main").read_text() == commit

        with pytest.raises(ValueError):
            m.rename("org/missing", "org/x")
        m.add_repo("org/other", {"a.txt": b"a"})
        with pytest.raises(ValueError):
            m.rename("org/new", "org/other")


def test_one_segment_repo_ids(tmp_path):
    with HFMirror() as m:
        gpt2 = m.add_repo("gpt2", {"config.json": CONFIG, "tokenizer/vocab.txt": VOCAB})
        org_repo = m.add_repo("org", {"config.json": b"{}"})  # a one-segment id next to org/tiny
        tiny = m.add_repo(REPO, {"config.json": CONFIG})
        api = HfApi(endpoint=m.url, token=False)
        info = api.model_info("gpt2")
        assert (info.id, info.sha, info.author) == ("gpt2", gpt2, None)
        tree = [e.path for e in api.list_repo_tree("gpt2", recursive=True)]
        assert tree == ["config.json", "tokenizer", "tokenizer/vocab.txt"]
        assert api.model_info("gpt2", revision="main").sha == gpt2
        path = hf_hub_download("gpt2", "tokenizer/vocab.txt", cache_dir=tmp_path, endpoint=m.url, token=False)
        assert pathlib.Path(path).read_bytes() == VOCAB
        assert (tmp_path / "models--gpt2" / "refs" / "main").read_text() == gpt2

        # "a/b" when it is a repo, else "a" and the rest of the route.
        assert api.model_info("org").sha == org_repo and api.model_info(REPO).sha == tiny
        assert api.list_repo_files("org") == ["config.json"]
        assert httpx2.get(f"{m.url}/org/resolve/main/config.json").content == b"{}"
        assert httpx2.get(f"{m.url}/{REPO}/resolve/main/config.json").content == CONFIG
        assert httpx2.get(f"{m.url}/nope/resolve/main/config.json").headers["X-Error-Code"] == "RepoNotFound"
        with pytest.raises(ValueError):
            m.add_repo("a/b/c", {"x": b""})


# --------------------------------------------------------------------------------------------
# Misbehaviour knobs
# --------------------------------------------------------------------------------------------


def test_override_redirect(cdn_mirror, tmp_path):
    m = cdn_mirror
    url = f"{m.url}/{REPO}/resolve/main/model.safetensors"
    m.override_redirect("*/resolve/*/model.safetensors", url)  # a loop
    r = httpx2.head(url)
    assert r.status_code == 302 and r.headers["Location"] == url
    assert r.headers["X-Linked-Size"] == str(len(WEIGHTS)) and r.headers["X-Repo-Commit"] == m.commit
    with pytest.raises(httpx2.TooManyRedirects):
        hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path, endpoint=m.url, token=False)

    m.override_redirect("*/model.safetensors", "ftp://files.example/model.safetensors")  # newest wins
    assert httpx2.head(url).headers["Location"] == "ftp://files.example/model.safetensors"
    with pytest.raises(httpx2.UnsupportedProtocol):
        hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path, endpoint=m.url, token=False)
    # Other files are untouched.
    assert httpx2.head(f"{m.url}/{REPO}/resolve/main/config.json").status_code == 200
    m.clear_faults()
    assert httpx2.head(url).headers["Location"].startswith(m.cdn_url)


def test_override_linked_size(cdn_mirror, tmp_path):
    m = cdn_mirror
    m.override_linked_size("*/model.safetensors", len(WEIGHTS) + 1)
    assert httpx2.head(f"{m.url}/{REPO}/resolve/main/model.safetensors").headers["X-Linked-Size"] == str(
        len(WEIGHTS) + 1
    )
    # The CDN sends the real Content-Length: the client's consistency check catches the mismatch.
    with pytest.raises(OSError, match="Consistency check failed"):
        hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path, endpoint=m.url, token=False)
    m.clear_faults()
    path = hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path, endpoint=m.url, token=False)
    assert pathlib.Path(path).read_bytes() == WEIGHTS


def test_defaults_unchanged(mirror):
    assert not mirror.cdn and not mirror.xet and mirror.page_size == 1000 and mirror.cas_mode == "unreachable"
    r = httpx2.head(f"{mirror.url}/{REPO}/resolve/main/model.safetensors")
    assert r.status_code == 200 and "X-Xet-Hash" not in r.headers and "Link" not in r.headers
    assert "xetHash" not in httpx2.get(f"{mirror.url}/api/models/{REPO}/tree/main").json()[0]
    # Records built the old way still work; the new fields have defaults.
    assert RequestRecord("GET", "/x", 200, None, 0) == RequestRecord("GET", "/x", 200, None, 0, "hub", "", None)
    assert mirror.requests[0].role == "hub" and mirror.requests[0].host == mirror.url.split("//")[1]
    with pytest.raises(ValueError):
        HFMirror(xet=True)


# --------------------------------------------------------------------------------------------
# Command line with CDN and Xet
# --------------------------------------------------------------------------------------------


def test_cli_with_cdn_xet_and_pages(tmp_path, xet_disabled):
    root = tmp_path / "root"
    (root / "models" / "org" / "tiny").mkdir(parents=True)
    (root / "models" / "org" / "tiny" / "config.json").write_bytes(CONFIG)
    (root / "models" / "org" / "tiny" / "model.safetensors").write_bytes(WEIGHTS)
    (root / "models" / "org" / "tiny" / "vocab.txt").write_bytes(VOCAB)

    proc, url = _start_cli(root, "--token", TOKEN, "--cdn-port", "0", "--xet", "--page-size", "2")
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        head = httpx2.head(f"{url}/{REPO}/resolve/main/model.safetensors", headers=auth)
        assert head.status_code == 302 and re.match(r"http://localhost:\d+/org/tiny/resolve/", head.headers["Location"])
        assert head.links["xet-auth"]["url"].startswith(f"{url}/api/models/{REPO}/xet-read-token/")
        cas = httpx2.get(head.links["xet-auth"]["url"], headers=auth).headers["X-Xet-Cas-Url"]
        assert cas.startswith("http://127.0.0.1:")
        api = HfApi(endpoint=url, token=TOKEN)
        assert api.list_repo_files(REPO) == ["config.json", "model.safetensors", "vocab.txt"]  # two pages
        path = hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path / "c", endpoint=url, token=TOKEN)
        assert pathlib.Path(path).read_bytes() == WEIGHTS
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err
    assert re.search(r"^cdn on http://localhost:\d+$", err, re.M)
    lines = out.splitlines()
    assert sum("/tree/main" in line and line.endswith("role=hub auth=yes") for line in lines) == 2
    cdn = [line for line in lines if "role=cdn" in line]
    expected = rf"GET /org/tiny/resolve/[0-9a-f]{{40}}/model.safetensors 200 {len(WEIGHTS)} role=cdn auth=no"
    assert len(cdn) == 1 and re.fullmatch(expected, cdn[0])

    proc, url = _start_cli(root, "--cdn-port", "0", "--cdn-url", "http://cdn.hf-mirror:8081/")
    try:
        location = httpx2.head(f"{url}/{REPO}/resolve/main/model.safetensors").headers["Location"]
        assert location.startswith("http://cdn.hf-mirror:8081/org/tiny/resolve/")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)

    bad = subprocess.run(
        [sys.executable, "-m", "modelcache.testing.hfmirror", "--root", str(root), "--xet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "--cdn-port" in bad.stderr
