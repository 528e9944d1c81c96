"""A small Hugging Face Hub compatible HTTP server for tests and benchmarks.

Standard library only, so it can be copied into a container and run there as is.

It serves model repositories (several revisions per repo: branch -> commit map) through the
endpoints that ``huggingface_hub`` uses to download (``/api/models/...``, ``paths-info``,
``tree``, ``refs`` and ``/{org}/{name}/resolve/{rev}/{path}``), plain static files, and it can
inject faults (HTTP errors, connection resets, stalls, corrupted and truncated bodies) into file
downloads. Every request is recorded in :attr:`HFMirror.requests`.

Python use::

    with HFMirror() as mirror:
        commit = mirror.add_repo("org/tiny", {"config.json": b"{}", "model.safetensors": blob})
        mirror.inject("*/resolve/*/model.safetensors", "reset", after_bytes=4096)
        hf_hub_download("org/tiny", "model.safetensors", endpoint=mirror.url, cache_dir=tmp)

Command line (``--root`` holds ``models/<org>/<name>/...`` repos served at branch ``main`` and
``files/...`` served as static files at ``/<path below files>``)::

    python -m tests.support.hfmirror --host 127.0.0.1 --port 8080 --root DIR

It prints ``listening on URL`` and then one access-log line per request on stdout:
``METHOD PATH STATUS BODY_BYTES``. SIGTERM (or SIGINT) stops it cleanly.

Differences from the real Hub worth knowing: LFS files are served directly (no redirect to a
CDN), no Xet headers are ever sent (so clients always use plain HTTP downloads), only model
repositories exist, and a listing never paginates.
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import hashlib
import http.server
import json
import os
import pathlib
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Iterator

__all__ = ["HFMirror", "RequestRecord", "git_blob_id", "lfs_pointer"]

CHUNK_SIZE = 64 * 1024
LFS_MIN_SIZE = 10 * 1024 * 1024
LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt", ".pth", ".model", ".h5", ".npz", ".gguf")
LAST_MODIFIED = "2026-01-01T00:00:00.000Z"
FAULT_KINDS = ("status", "reset", "stall", "corrupt", "truncate")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HASH_BLOCK = 1024 * 1024


# --------------------------------------------------------------------------------------------
# Content model
# --------------------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One request as the server saw it. ``path`` is URL-decoded and has no query string;
    ``body_bytes`` counts the body bytes written to the socket.

    The record is appended to :attr:`HFMirror.requests` when the response headers go out and
    ``body_bytes`` is raised before each block is written, so whatever a client has received is
    already accounted for when it looks at the log (a failed write is taken back out).
    """

    method: str
    path: str
    status: int
    range: str | None
    body_bytes: int


def git_blob_id(content: bytes) -> str:
    """Git object id of a blob (what the Hub calls ``blobId`` / ``oid`` for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class _Content:
    """Bytes held in memory or a file on disk, streamed in chunks."""

    def __init__(self, source: bytes | pathlib.Path):
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.data: bytes | None = bytes(source)
            self.path: pathlib.Path | None = None
            self.size = len(self.data)
        else:
            self.path = pathlib.Path(source)
            self.data = None
            self.size = self.path.stat().st_size

    def iter_range(self, start: int, end: int, chunk: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield bytes [start, end) in chunks of at most ``chunk`` bytes."""
        if self.data is not None:
            view = memoryview(self.data)
            for pos in range(start, end, chunk):
                yield bytes(view[pos : min(end, pos + chunk)])
            return
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                block = f.read(min(chunk, end - pos))
                if not block:  # file shrank underneath us
                    return
                pos += len(block)
                yield block


_HASH_CACHE: dict[tuple[str, int, int], tuple[str, str]] = {}
_HASH_CACHE_LOCK = threading.Lock()


def _hashes(content: _Content) -> tuple[str, str]:
    """(git blob sha1 of the content, sha256 of the content); files are read in blocks."""
    if content.data is not None:
        return git_blob_id(content.data), hashlib.sha256(content.data).hexdigest()
    assert content.path is not None
    st = content.path.stat()
    key = (os.path.realpath(content.path), st.st_size, st.st_mtime_ns)
    with _HASH_CACHE_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    sha1 = hashlib.sha1(b"blob %d\0" % st.st_size)
    sha256 = hashlib.sha256()
    with open(content.path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            sha1.update(block)
            sha256.update(block)
    result = (sha1.hexdigest(), sha256.hexdigest())
    with _HASH_CACHE_LOCK:
        _HASH_CACHE[key] = result
    return result


@dataclass(frozen=True)
class _RepoFile:
    path: str
    content: _Content
    size: int
    sha1: str  # git blob sha1 of the content itself
    sha256: str
    lfs: bool

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, self.size)

    @property
    def blob_id(self) -> str:
        """What git (and the Hub) stores: for LFS files, the blob id of the pointer file."""
        return git_blob_id(self.pointer) if self.lfs else self.sha1

    @property
    def etag(self) -> str:
        """Unquoted ETag of ``/resolve``: sha256 for LFS files, git blob id otherwise; this is also
        the name of the blob in a huggingface_hub cache."""
        return self.sha256 if self.lfs else self.sha1

    def lfs_info(self) -> dict | None:
        if not self.lfs:
            return None
        return {"sha256": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}

    def tree_entry(self) -> dict:
        entry: dict = {"type": "file", "oid": self.blob_id, "size": self.size, "path": self.path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}
        return entry


class _Commit:
    def __init__(self, sha: str, files: dict[str, _RepoFile]):
        self.sha = sha
        self.files = dict(sorted(files.items()))
        dirs: dict[str, list[str]] = {}
        for path in self.files:
            parts = path.split("/")
            for i in range(1, len(parts)):
                dirs.setdefault("/".join(parts[:i]), [])
        self.dirs = sorted(dirs)

    def tree_oid(self, directory: str) -> str:
        prefix = directory + "/"
        h = hashlib.sha1(b"tree\0" + directory.encode())
        for path, f in self.files.items():
            if path.startswith(prefix):
                h.update(f"{path}\0{f.blob_id}\n".encode())
        return h.hexdigest()

    def dir_entry(self, directory: str) -> dict:
        return {"type": "directory", "oid": self.tree_oid(directory), "size": 0, "path": directory}

    def is_dir(self, path: str) -> bool:
        return path == "" or path in self.dirs

    def tree(self, path: str, recursive: bool) -> list[dict]:
        prefix = path + "/" if path else ""
        out = []
        for d in self.dirs:
            if d.startswith(prefix) and (recursive or "/" not in d[len(prefix) :]):
                out.append((d, self.dir_entry(d)))
        for p, f in self.files.items():
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :]):
                out.append((p, f.tree_entry()))
        return [entry for _, entry in sorted(out, key=lambda kv: kv[0])]


class _Repo:
    def __init__(self, repo_id: str):
        self.repo_id = repo_id
        self.commits: dict[str, _Commit] = {}
        self.refs: dict[str, str] = {}  # branch -> commit
        self.default_branch: str | None = None

    def resolve(self, revision: str) -> _Commit | None:
        if revision.startswith("refs/heads/"):
            revision = revision[len("refs/heads/") :]
        if revision in self.refs:
            return self.commits[self.refs[revision]]
        return self.commits.get(revision.lower()) if _HEX40.match(revision.lower()) else None


@dataclass
class _Fault:
    glob: str
    kind: str
    count: int
    after_bytes: int
    stall_s: float
    status: int


@dataclass(frozen=True)
class _Static:
    content: _Content
    etag: str


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, handler, mirror: "HFMirror"):
        self.mirror = mirror
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def server_bind(self):
        # HTTPServer.server_bind calls socket.getfqdn(), which can hang on reverse DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) or (
            isinstance(exc, OSError) and exc.errno in (errno.EBADF, errno.ENOTCONN, errno.EPIPE)
        ):
            return
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HFMirror/1.0"
    timeout = 300  # idle keep-alive connections

    server: _Server

    # ---- plumbing ------------------------------------------------------------------------

    def setup(self):
        super().setup()
        self.server.mirror._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.mirror._track(self.connection, False)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        if os.environ.get("MIRROR_VERBOSE") == "1":
            sys.stderr.write("hfmirror: %s - %s\n" % (self.address_string(), format % args))

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except OSError as e:
            if e.errno not in (errno.EBADF, errno.ENOTCONN, errno.EPIPE):
                raise
            self.close_connection = True

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    # ---- request handling ----------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        mirror = self.server.mirror
        raw_path, _, query = self.path.partition("?")
        self._method = method
        self._logged_path = urllib.parse.unquote(raw_path)
        self._range = self.headers.get("Range")
        self._record: RequestRecord | None = None
        self._request_body = b""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self._request_body = self.rfile.read(length)
        try:
            if mirror.token is not None:
                auth = self.headers.get("Authorization")
                if auth is None:
                    return self._error(401, None, "Authorization header is required")
                if auth != f"Bearer {mirror.token}":
                    return self._error(401, None, "Invalid credentials in Authorization header")
            self._route(method, raw_path, urllib.parse.parse_qs(query, keep_blank_values=True))
        finally:
            if self._record is not None:
                mirror._notify(self._record)

    def _route(self, method: str, raw_path: str, query: dict[str, list[str]]) -> None:
        mirror = self.server.mirror
        segs = raw_path.split("/")[1:]  # raw path starts with "/"

        static = mirror._static_get(urllib.parse.unquote(raw_path).lstrip("/"))
        if static is not None and method in ("GET", "HEAD"):
            return self._send_content(static.content, {"ETag": f'"{static.etag}"'}, allow_faults=True)

        if len(segs) >= 4 and segs[0] == "api" and segs[1] == "models":
            repo_id = urllib.parse.unquote(f"{segs[2]}/{segs[3]}")
            rest = segs[4:]
            repo = mirror._repo_get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found")
            get = method in ("GET", "HEAD")
            if get and not rest:
                return self._model_info(repo, None, query)
            if get and len(rest) >= 2 and rest[0] == "revision":
                return self._model_info(repo, urllib.parse.unquote("/".join(rest[1:])), query)
            if get and len(rest) >= 2 and rest[0] == "tree":
                rev = urllib.parse.unquote(rest[1])
                sub = urllib.parse.unquote("/".join(rest[2:])).strip("/")
                return self._tree(repo, rev, sub, query)
            if method == "POST" and len(rest) >= 2 and rest[0] == "paths-info":
                return self._paths_info(repo, urllib.parse.unquote("/".join(rest[1:])))
            if get and rest == ["refs"]:
                return self._refs(repo)
            return self._error(404, None, "Not found")

        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            repo = mirror._repo_get(urllib.parse.unquote(f"{segs[0]}/{segs[1]}"))
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found")
            # The revision is one quoted segment; accept unquoted slashes too (refs/heads/main).
            commit, filename = None, ""
            for i in range(4, len(segs)):
                commit = repo.resolve(urllib.parse.unquote("/".join(segs[3:i])))
                if commit is not None:
                    filename = urllib.parse.unquote("/".join(segs[i:]))
                    break
            if commit is None:
                return self._error(404, "RevisionNotFound", "Invalid rev id")
            return self._resolve(commit, filename)

        return self._error(404, None, "Not found")

    # ---- endpoints -----------------------------------------------------------------------

    def _model_info(self, repo: _Repo, revision: str | None, query: dict[str, list[str]]) -> None:
        commit = repo.resolve(revision if revision is not None else (repo.default_branch or "main"))
        if commit is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        blobs = query.get("blobs", ["false"])[-1].lower() in ("1", "true")
        siblings = []
        for f in commit.files.values():
            sibling: dict = {"rfilename": f.path}
            if blobs:
                sibling["size"] = f.size
                sibling["blobId"] = f.blob_id
                if f.lfs:
                    sibling["lfs"] = f.lfs_info()
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": LAST_MODIFIED,
            "createdAt": LAST_MODIFIED,
            "private": False,
            "disabled": False,
            "gated": False,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "library_name": None,
            "siblings": siblings,
            "usedStorage": sum(f.size for f in commit.files.values()),
        }
        self._json(200, info, {"X-Repo-Commit": commit.sha})

    def _tree(self, repo: _Repo, revision: str, path: str, query: dict[str, list[str]]) -> None:
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        if not commit.is_dir(path):
            return self._error(404, "EntryNotFound", f"{path} does not exist on \"{revision}\"")
        recursive = query.get("recursive", ["false"])[-1].lower() in ("1", "true")
        self._json(200, commit.tree(path, recursive), {"X-Repo-Commit": commit.sha})

    def _paths_info(self, repo: _Repo, revision: str) -> None:
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        paths: list[str] = []
        try:
            if ctype == "application/json":
                body = json.loads(self._request_body or b"{}")
                paths = body.get("paths") or []
                paths = [paths] if isinstance(paths, str) else list(paths)
            else:
                form = urllib.parse.parse_qs(self._request_body.decode(), keep_blank_values=True)
                paths = form.get("paths", []) + form.get("paths[]", [])
        except (ValueError, UnicodeDecodeError):
            return self._error(400, None, "Invalid body")
        out = []
        for p in paths:
            p = str(p).strip("/")
            if p in commit.files:
                out.append(commit.files[p].tree_entry())
            elif p and commit.is_dir(p):
                out.append(commit.dir_entry(p))
        self._json(200, out, {"X-Repo-Commit": commit.sha})

    def _refs(self, repo: _Repo) -> None:
        branches = [
            {"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in sorted(repo.refs.items())
        ]
        self._json(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _resolve(self, commit: _Commit, filename: str) -> None:
        f = commit.files.get(filename)
        if f is None:
            return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{f.etag}"'}
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(f.size)
        self._send_content(f.content, headers, allow_faults=True)

    # ---- responses -----------------------------------------------------------------------

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self._record = RequestRecord(self._method, self._logged_path, status, self._range, 0)
        self.server.mirror._append(self._record)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def _json(self, status: int, obj, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        hdrs = {"Content-Type": "application/json; charset=utf-8", "Content-Length": str(len(body))}
        hdrs.update(headers or {})
        self._start(status, hdrs)
        if self._method != "HEAD":
            self._write(body)

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        hdrs = {"X-Error-Message": message}
        if code:
            hdrs["X-Error-Code"] = code
        hdrs.update(headers or {})
        self._json(status, {"error": message}, hdrs)

    def _send_content(self, content: _Content, headers: dict[str, str], *, allow_faults: bool) -> None:
        mirror = self.server.mirror
        size = content.size
        start, end, status = 0, size, 200
        rng = _parse_range(self._range, size) if self._range else None
        if rng == "unsatisfiable":
            hdrs = {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"}
            hdrs.update(headers)
            return self._error(416, None, "Requested range not satisfiable", hdrs)
        if rng is not None:
            start, end = rng
            status = 206

        fault = None
        if allow_faults and self._method == "GET" and end > start:
            fault = mirror._take_fault(self._logged_path)
        if fault is not None and fault.kind == "status":
            return self._error(fault.status, None, f"Injected fault: HTTP {fault.status}")

        hdrs = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(end - start),
            "Accept-Ranges": "bytes",
        }
        if status == 206:
            hdrs["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        hdrs.update(headers)
        self._start(status, hdrs)
        if self._method == "HEAD":
            return

        limit = end - start  # number of body bytes to send before the fault kicks in
        if fault is not None and fault.kind in ("reset", "stall", "truncate"):
            limit = min(limit, max(0, fault.after_bytes))
        flip = None
        if fault is not None and fault.kind == "corrupt":
            flip = (fault.after_bytes, fault.after_bytes + 16)  # absolute file offsets

        throttle = mirror.throttle_bps
        chunk = CHUNK_SIZE if not throttle else max(1, min(CHUNK_SIZE, throttle // 8))
        t0 = time.monotonic()
        sent = 0
        for block in content.iter_range(start, start + limit, chunk):
            if mirror._stopping.is_set():
                self._reset_connection()
                return
            if flip is not None:
                block = _flip(block, start + sent, flip)
            self._write(block)
            sent += len(block)
            throttle = mirror.throttle_bps
            if throttle:
                delay = sent / throttle - (time.monotonic() - t0)
                if delay > 0 and mirror._stopping.wait(delay):
                    self._reset_connection()
                    return

        if fault is None or fault.kind == "corrupt":
            return
        if fault.kind == "reset":
            time.sleep(0.05)  # let the bytes reach the peer before the RST discards them
            self._reset_connection()
        elif fault.kind == "stall":
            mirror._stopping.wait(fault.stall_s)
            self._close_connection()
        elif fault.kind == "truncate":
            self._close_connection()

    def _write(self, block: bytes) -> None:
        record = self._record
        assert record is not None
        record.body_bytes += len(block)
        try:
            self.wfile.write(block)
        except BaseException:
            record.body_bytes -= len(block)
            raise

    def _close_connection(self) -> None:
        """Close cleanly (FIN) once this handler returns."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _reset_connection(self) -> None:
        """Abort the TCP connection with an RST."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.rfile.close()  # drop the makefile() reference so close() really closes the fd
        except OSError:
            pass
        self.connection.close()


def _parse_range(header: str, size: int):
    """Return (start, end_exclusive), None to ignore the header, or "unsatisfiable"."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # multiple ranges or garbage: serve the whole file
    first, last = m.group(1), m.group(2)
    if first == "":  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return (max(0, size - n), size)
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if start >= size or (last != "" and int(last) < start):
        return "unsatisfiable"
    return (start, end)


def _flip(block: bytes, offset: int, flip: tuple[int, int]) -> bytes:
    lo, hi = max(flip[0], offset), min(flip[1], offset + len(block))
    if lo >= hi:
        return block
    buf = bytearray(block)
    for i in range(lo - offset, hi - offset):
        buf[i] ^= 0xFF
    return bytes(buf)


class HFMirror:
    """A Hugging Face Hub compatible HTTP server (model repos, static files, fault injection)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None):
        self.host = host
        self.port = port
        self.token = token
        self.throttle_bps: int | None = None
        self.requests: list[RequestRecord] = []
        self.on_request: Callable[[RequestRecord], None] | None = None
        self.url = ""
        self._repos: dict[str, _Repo] = {}
        self._static: dict[str, _Static] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> "HFMirror":
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), _Handler, self)
        port = self._server.server_address[1]
        # Wildcard binds are reached through loopback from this machine.
        shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"http://{shown}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="hfmirror", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # wake up handlers blocked on idle keep-alive connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "HFMirror":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- content -------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | pathlib.Path] | pathlib.Path,
        *,
        branch: str = "main",
        commit: str | None = None,
        lfs_min_size: int = LFS_MIN_SIZE,
        lfs_suffixes: tuple[str, ...] = LFS_SUFFIXES,
    ) -> str:
        """Add a revision of a model repo (``org/name``) and point ``branch`` at it.

        ``files`` maps repo paths to bytes or to a file on disk (streamed, never loaded whole),
        or is a directory whose files (recursively, ``.git`` excluded) make up the repo. A file is
        stored in LFS when its suffix is in ``lfs_suffixes`` or its size is >= ``lfs_min_size``.
        ``commit`` defaults to a sha1 over the sorted (path, blob id) list. Returns the commit.
        """
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
        if isinstance(files, (str, pathlib.Path)):
            files = _collect_dir(pathlib.Path(files))
        suffixes = tuple(s.lower() for s in lfs_suffixes)
        entries: dict[str, _RepoFile] = {}
        for path, source in files.items():
            path = path.replace(os.sep, "/").strip("/")
            if not path or any(part in ("", ".", "..") for part in path.split("/")):
                raise ValueError(f"invalid repo path {path!r}")
            content = _Content(source)
            sha1, sha256 = _hashes(content)
            is_lfs = path.lower().endswith(suffixes) or content.size >= lfs_min_size
            entries[path] = _RepoFile(path, content, content.size, sha1, sha256, is_lfs)
        for path in entries:  # a path cannot be both a file and a directory
            parts = path.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in entries:
                    raise ValueError(f"{'/'.join(parts[:i])!r} is both a file and a directory")
        if commit is None:
            h = hashlib.sha1()
            for path in sorted(entries):
                h.update(f"{path}\0{entries[path].blob_id}\n".encode())
            commit = h.hexdigest()
        commit = commit.lower()
        if not _HEX40.match(commit):
            raise ValueError(f"commit must be 40 hex digits, got {commit!r}")
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                repo = self._repos[repo_id] = _Repo(repo_id)
            repo.commits[commit] = _Commit(commit, entries)
            repo.refs[branch] = commit
            if repo.default_branch is None or branch == "main":
                repo.default_branch = branch
        return commit

    def add_file(self, url_path: str, content: bytes | pathlib.Path) -> str:
        """Serve ``content`` at ``/<url_path>`` (HEAD, GET, Range). Returns the full URL (only the
        path when called before :meth:`start`, as the port is not known yet)."""
        url_path = url_path.lstrip("/")
        c = _Content(content)
        if c.data is not None:
            etag = hashlib.sha256(c.data).hexdigest()
        else:
            st = pathlib.Path(content).stat()  # type: ignore[arg-type]
            etag = f"{st.st_size:x}-{st.st_mtime_ns:x}"
        with self._lock:
            self._static[url_path] = _Static(c, etag)
        return f"{self.url}/{urllib.parse.quote(url_path)}"

    # ---- faults --------------------------------------------------------------------------

    def inject(
        self,
        path_glob: str,
        kind: str,
        *,
        count: int = 1,
        after_bytes: int = 0,
        stall_s: float = 30.0,
        status: int = 503,
    ) -> None:
        """Make the next ``count`` (-1: all) GET file downloads whose decoded URL path matches
        ``path_glob`` (fnmatch) fail with ``kind``: status, reset, stall, corrupt or truncate."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}, expected one of {FAULT_KINDS}")
        if count == 0 or count < -1:
            raise ValueError("count must be positive or -1")
        with self._lock:
            self._faults.append(_Fault(path_glob, kind, count, after_bytes, stall_s, status))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fnmatch.fnmatchcase(path, fault.glob):
                    if fault.count > 0:
                        fault.count -= 1
                        if fault.count == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # ---- request log ---------------------------------------------------------------------

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def bytes_served(self, path_glob: str = "*") -> int:
        with self._lock:
            records = list(self.requests)
        return sum(r.body_bytes for r in records if fnmatch.fnmatchcase(r.path, path_glob))

    def _append(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _notify(self, record: RequestRecord) -> None:
        callback = self.on_request
        if callback is not None:
            try:
                callback(record)
            except Exception:  # a broken logger must not break serving
                pass

    # ---- internals -----------------------------------------------------------------------

    def _repo_get(self, repo_id: str) -> _Repo | None:
        with self._lock:
            return self._repos.get(repo_id)

    def _static_get(self, url_path: str) -> _Static | None:
        with self._lock:
            return self._static.get(url_path)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)


def _collect_dir(root: pathlib.Path) -> dict[str, pathlib.Path]:
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    out: dict[str, pathlib.Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            full = pathlib.Path(dirpath) / name
            if full.is_file():
                out[full.relative_to(root).as_posix()] = full
    return out


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _load_root(mirror: HFMirror, root: pathlib.Path) -> None:
    models = root / "models"
    if models.is_dir():
        for org in sorted(p for p in models.iterdir() if p.is_dir()):
            for repo in sorted(p for p in org.iterdir() if p.is_dir()):
                commit = mirror.add_repo(f"{org.name}/{repo.name}", repo)
                print(f"repo {org.name}/{repo.name} main={commit}", file=sys.stderr, flush=True)
    files = root / "files"
    if files.is_dir():
        for rel, path in _collect_dir(files).items():
            mirror.add_file(rel, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hfmirror", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument("--root", type=pathlib.Path, required=True, help="DIR with models/<org>/<name>/ and files/")
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN'")
    parser.add_argument("--throttle-bps", type=int, default=None, help="cap body bytes/second per request")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    mirror = HFMirror(host=args.host, port=args.port, token=args.token)
    mirror.throttle_bps = args.throttle_bps
    out_lock = threading.Lock()

    def _print(record: RequestRecord) -> None:
        line = f"{record.method} {urllib.parse.quote(record.path, safe='/:@!$&()*+,;=~')} {record.status} {record.body_bytes}"
        with out_lock:
            print(line, flush=True)

    mirror.on_request = _print
    mirror.start()  # bind first so that the URL has the real port; content is served once loaded
    try:
        _load_root(mirror, args.root)
        print(f"bound to {args.host}:{mirror._server.server_address[1]}", file=sys.stderr, flush=True)
        print(f"listening on {mirror.url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        mirror.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
