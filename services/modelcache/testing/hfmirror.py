"""A small Hugging Face Hub compatible HTTP server for tests and benchmarks.

Standard library only, so it can be copied into a container and run there as is.

It serves model repositories (several revisions per repo: branch -> commit map) through the
endpoints that ``huggingface_hub`` uses to download (``/api/models/...``, ``paths-info``,
``tree``, ``refs``, ``xet-read-token`` and ``/{repo}/resolve/{rev}/{path}``), plain static files,
and it can inject faults (HTTP errors, connection resets, stalls, corrupted and truncated bodies)
into file downloads. Every request is recorded in :attr:`HFMirror.requests`, with the server that
answered it (``role``: ``hub``, ``cdn`` or ``cas``), the Host header and the Authorization header.

Python use::

    with HFMirror() as mirror:
        commit = mirror.add_repo("org/tiny", {"config.json": b"{}", "model.safetensors": blob})
        mirror.inject("*/resolve/*/model.safetensors", "reset", after_bytes=4096)
        hf_hub_download("org/tiny", "model.safetensors", endpoint=mirror.url, cache_dir=tmp)

Behaviour of today's huggingface.co, opt-in (a mirror built as before behaves as before):

* ``HFMirror(cdn=True)``: a second server acts as the CDN, on ``cdn_url`` (host name ``cdn_host``,
  default ``localhost``, so clients see another origin than the hub's ``127.0.0.1``; or
  ``cdn_public_url`` when clients reach it under another name). ``resolve`` of an LFS file answers
  ``302`` to a signed, expiring CDN URL (``?expires=&signature=``) with ``X-Repo-Commit``,
  ``ETag``, ``X-Linked-Etag`` and ``X-Linked-Size``; the CDN serves the bytes (Range, faults and
  throttling apply there) without asking for a token, and answers ``403`` to a bad or expired
  signature. Non-LFS files are still served by the hub itself.
* ``xet=True`` (with the CDN): that ``302`` also carries ``X-Xet-Hash`` and a
  ``Link: <...xet-read-token/{commit}>; rel="xet-auth"``; the token route announces
  :attr:`HFMirror.cas_url`, which by :attr:`HFMirror.cas_mode` is ``unreachable`` (nothing listens),
  ``garbage`` (a server answering 200 with bytes that are not what was asked for) or ``blackhole``
  (accepts connections, never answers; such a request is logged with status 0). Tree and
  paths-info entries of LFS files carry ``xetHash``.
* Tree listings paginate like the Hub's: at most ``page_size`` entries (default 1000, as there)
  and a ``Link: <...&cursor=...>; rel="next"`` header while more remain.
* ``add_repo(..., gated=True)`` and :meth:`HFMirror.grant`: ``resolve`` (and ``xet-read-token``)
  answer 401/403 ``X-Error-Code: GatedRepo`` to callers without a granted token.
* :meth:`HFMirror.rename`: requests naming the old id answer ``307`` to the new one.
* Repo ids of one segment (``gpt2``) next to ``org/name`` ones.
* Misbehaviour knobs: :attr:`HFMirror.cdn_ignores_range`, :meth:`HFMirror.override_redirect`,
  :meth:`HFMirror.override_linked_size` (all reset by :meth:`HFMirror.clear_faults`).

Command line (``--root`` holds ``models/<org>/<name>/...`` repos served at branch ``main`` and
``files/...`` served as static files at ``/<path below files>``)::

    python -m modelcache.testing.hfmirror --host 127.0.0.1 --port 8080 --root DIR
        [--token TOKEN] [--throttle-bps N] [--page-size N]
        [--cdn-port PORT [--cdn-url URL] [--xet [--cas-url URL]]]

``--cdn-port PORT`` turns the CDN on (0: any free port), bound to the same ``--host``;
``--cdn-url URL`` is its base URL as clients reach it (default ``http://localhost:PORT``; in a
container, e.g. a network alias: ``http://cdn.hf-mirror:8081``); ``--xet`` advertises Xet on LFS
redirects (needs the CDN); ``--cas-url URL`` is what the token route announces (default: a
``127.0.0.1`` port where nothing listens); ``--page-size N`` caps tree listing pages.

It prints ``listening on URL`` and then one access-log line per request on stdout:
``METHOD PATH STATUS BODY_BYTES role=ROLE auth=yes|no``. SIGTERM (or SIGINT) stops it cleanly.

Differences from the real Hub worth knowing: only model repositories exist; by default LFS files
are served by the hub itself (no CDN redirect) and no Xet headers are sent; there is never a
working CAS (with ``xet=True`` a client that uses Xet, such as huggingface_hub with ``hf_xet``
installed, fails after its own retries: it must be run with ``HF_HUB_DISABLE_XET=1``, or with
``huggingface_hub.constants.HF_HUB_DISABLE_XET`` patched, to download over HTTP); gating is
all-or-nothing per token (no access requests, no ``auto`` approval); the ``Link`` URLs it builds use
the request's Host header, never https; the CDN signature is this mirror's own HMAC scheme.
"""

from __future__ import annotations

import argparse
import base64
import errno
import fnmatch
import hashlib
import hmac
import http.server
import json
import os
import pathlib
import re
import secrets
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

__all__ = ["CAS_MODES", "HFMirror", "RequestRecord", "git_blob_id", "lfs_pointer"]

CHUNK_SIZE = 64 * 1024
LFS_MIN_SIZE = 10 * 1024 * 1024
LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt", ".pth", ".model", ".h5", ".npz", ".gguf")
LAST_MODIFIED = "2026-01-01T00:00:00.000Z"
FAULT_KINDS = ("status", "reset", "stall", "corrupt", "truncate")
CAS_MODES = ("unreachable", "garbage", "blackhole")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HASH_BLOCK = 1024 * 1024


# --------------------------------------------------------------------------------------------
# Content model
# --------------------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One request as the server saw it. ``path`` is URL-decoded and has no query string;
    ``body_bytes`` counts the body bytes written to the socket; ``role`` names the server that got
    it (``hub``, ``cdn`` or ``cas``); ``host`` and ``authorization`` are the request's Host and
    Authorization headers as sent ("" and None when absent).

    The record is appended to :attr:`HFMirror.requests` when the response headers go out and
    ``body_bytes`` is raised before each block is written, so whatever a client has received is
    already accounted for when it looks at the log (a failed write is taken back out). A request
    to the ``blackhole`` CAS is never answered: it is logged with status 0 once its head arrived.
    """

    method: str
    path: str
    status: int
    range: str | None
    body_bytes: int
    role: str = "hub"
    host: str = ""
    authorization: str | None = None


def git_blob_id(content: bytes) -> str:
    """Git object id of a blob (what the Hub calls ``blobId`` / ``oid`` for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _xet_hash(sha256: str) -> str:
    """A stand-in Xet file hash (64 hex digits), fixed for given content. Not the real Xet
    merkle hash: nothing here can serve Xet content anyway."""
    return hashlib.sha256(b"xet-file\0" + sha256.encode()).hexdigest()


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

    @property
    def xet_hash(self) -> str:
        return _xet_hash(self.sha256)

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
        self.gated = False
        self.granted: set[str] = set()  # tokens that may download a gated repo

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

    def __init__(self, address, handler, mirror: HFMirror, role: str = "hub"):
        self.mirror = mirror
        self.role = role  # "hub", "cdn" or "cas": which routes it serves, and its log records
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
    """Serves the hub and the CDN (``self.server.role`` picks the routes) and the garbage CAS."""

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

    def log_message(self, format, *args):
        if os.environ.get("MIRROR_VERBOSE") == "1":
            sys.stderr.write(f"hfmirror: {self.address_string()} - {format % args}\n")

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
        self._raw_path = raw_path
        self._query = query
        self._logged_path = urllib.parse.unquote(raw_path)
        self._range = self.headers.get("Range")
        self._record: RequestRecord | None = None
        self._request_body = b""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self._request_body = self.rfile.read(length)
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        try:
            if self.server.role == "cas":
                return self._garbage()
            if self.server.role == "cdn":
                return self._route_cdn(method, raw_path, params)
            if mirror.token is not None:
                auth = self.headers.get("Authorization")
                if auth is None:
                    return self._error(401, None, "Authorization header is required")
                if auth != f"Bearer {mirror.token}":
                    return self._error(401, None, "Invalid credentials in Authorization header")
            self._route(method, raw_path, params)
        finally:
            if self._record is not None:
                mirror._notify(self._record)

    def _route(self, method: str, raw_path: str, query: dict[str, list[str]]) -> None:
        mirror = self.server.mirror
        segs = raw_path.split("/")[1:]  # raw path starts with "/"
        get = method in ("GET", "HEAD")

        static = mirror._static_get(urllib.parse.unquote(raw_path).lstrip("/"))
        if static is not None and get:
            return self._send_content(static.content, {"ETag": f'"{static.etag}"'}, allow_faults=True)

        if len(segs) >= 3 and segs[0] == "api" and segs[1] == "models":
            found, end = self._find_repo(segs, 2)
            if found is None:
                return self._error(404, "RepoNotFound", "Repository not found")
            if isinstance(found, str):
                return self._moved(segs, 2, end, found)
            return self._api(method, found, segs[end:], query)

        found, end = self._find_repo(segs, 0, then="resolve")
        if found is not None and get and len(segs) >= end + 3:
            if isinstance(found, str):
                return self._moved(segs, 0, end, found)
            return self._resolve_route(found, segs[end + 1 :])
        if get and ((len(segs) >= 5 and segs[2] == "resolve") or (len(segs) >= 4 and segs[1] == "resolve")):
            return self._error(404, "RepoNotFound", "Repository not found")

        return self._error(404, None, "Not found")

    def _find_repo(self, segs: list[str], start: int, *, then: str | None = None) -> tuple[_Repo | str | None, int]:
        """Match a known repo id at ``segs[start:]``, ``a/b`` before ``a`` (one-segment ids such as
        ``gpt2``); ``then`` is the segment that must follow the id. Returns (the repo, or the new id
        of a renamed one, or None; the index of the segment after the id)."""
        mirror = self.server.mirror
        for n in (2, 1):
            end = start + n
            if len(segs) < end or (then is not None and (len(segs) <= end or segs[end] != then)):
                continue
            found = mirror._lookup(urllib.parse.unquote("/".join(segs[start:end])))
            if found is not None:
                return found, end
        return None, start

    def _moved(self, segs: list[str], start: int, end: int, new_id: str) -> None:
        """307 to the same path and query with the repo id in ``segs[start:end]`` renamed."""
        path = "/" + "/".join([*segs[:start], urllib.parse.quote(new_id, safe="/"), *segs[end:]])
        location = f"{path}?{self._query}" if self._query else path
        self._text(307, f"Temporary Redirect. Redirecting to {location}", {"Location": location})

    def _api(self, method: str, repo: _Repo, rest: list[str], query: dict[str, list[str]]) -> None:
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
        if get and len(rest) >= 2 and rest[0] == "xet-read-token":
            return self._xet_read_token(repo, urllib.parse.unquote("/".join(rest[1:])))
        return self._error(404, None, "Not found")

    def _resolve_route(self, repo: _Repo, tail: list[str]) -> None:
        """``tail``: the raw segments after ``resolve`` (revision, then the file path)."""
        if self._gated_out(repo):
            return
        # The revision is one quoted segment; accept unquoted slashes too (refs/heads/main).
        commit, filename = None, ""
        for i in range(1, len(tail)):
            commit = repo.resolve(urllib.parse.unquote("/".join(tail[:i])))
            if commit is not None:
                filename = urllib.parse.unquote("/".join(tail[i:]))
                break
        if commit is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        return self._resolve(repo, commit, filename)

    def _gated_out(self, repo: _Repo) -> bool:
        """For a gated repo without a granted bearer token: answer 401/403 GatedRepo, return True."""
        if not repo.gated:
            return False
        auth = self.headers.get("Authorization")
        if auth is None:
            self._error(
                401,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in.",
            )
            return True
        if not self.server.mirror._granted(repo, auth):
            self._error(
                403,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted and you are not in the authorized list. "
                f"Visit https://huggingface.co/{repo.repo_id} to ask for access.",
            )
            return True
        return False

    def _hub_base(self) -> str:
        """Base URL of the hub as this client reached it (from the Host header)."""
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.server.mirror.url

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
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit.sha,
            "lastModified": LAST_MODIFIED,
            "createdAt": LAST_MODIFIED,
            "private": False,
            "disabled": False,
            "gated": "manual" if repo.gated else False,
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
            return self._error(404, "EntryNotFound", f'{path} does not exist on "{revision}"')
        recursive = query.get("recursive", ["false"])[-1].lower() in ("1", "true")
        offset = _decode_cursor(query.get("cursor", [""])[-1])
        if offset is None:
            return self._error(400, None, "Invalid cursor")
        entries = commit.tree(path, recursive)
        end = offset + max(1, self.server.mirror.page_size)
        headers = {"X-Repo-Commit": commit.sha}
        if end < len(entries):
            headers["Link"] = f'<{self._next_page_url(query, recursive, end)}>; rel="next"'
        self._json(200, [self._entry(e) for e in entries[offset:end]], headers)

    def _next_page_url(self, query: dict[str, list[str]], recursive: bool, offset: int) -> str:
        params = [("recursive", "true" if recursive else "false")]
        params += [(k, v) for k, vs in query.items() if k not in ("recursive", "cursor") for v in vs]
        params.append(("cursor", _encode_cursor(offset)))
        return f"{self._hub_base()}{self._raw_path}?{urllib.parse.urlencode(params)}"

    def _entry(self, entry: dict) -> dict:
        """A tree / paths-info entry as sent: LFS files carry ``xetHash`` when Xet is advertised."""
        if self.server.mirror.xet and "lfs" in entry:
            return dict(entry, xetHash=_xet_hash(entry["lfs"]["oid"]))
        return entry

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
                out.append(self._entry(commit.files[p].tree_entry()))
            elif p and commit.is_dir(p):
                out.append(commit.dir_entry(p))
        self._json(200, out, {"X-Repo-Commit": commit.sha})

    def _refs(self, repo: _Repo) -> None:
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in sorted(repo.refs.items())]
        self._json(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _xet_read_token(self, repo: _Repo, revision: str) -> None:
        if self._gated_out(repo):
            return
        if repo.resolve(revision) is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        cas_url, token, exp = self.server.mirror.cas_url, secrets.token_urlsafe(24), int(time.time()) + 3600
        headers = {"X-Xet-Cas-Url": cas_url, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(exp)}
        self._json(200, {"casUrl": cas_url, "accessToken": token, "exp": exp}, headers)

    def _resolve(self, repo: _Repo, commit: _Commit, filename: str) -> None:
        mirror = self.server.mirror
        f = commit.files.get(filename)
        if f is None:
            return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{f.etag}"'}
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(mirror._linked_size(self._logged_path, f.size))
        location = mirror._redirect_for(self._logged_path)
        if location is None and mirror.cdn and f.lfs:
            location = mirror.signed_cdn_url(repo.repo_id, commit.sha, f.path)
        if location is None:
            return self._send_content(f.content, headers, allow_faults=True)
        if f.lfs and mirror.xet:
            token_url = f"{self._hub_base()}/api/models/{urllib.parse.quote(repo.repo_id, safe='/')}"
            headers["X-Xet-Hash"] = f.xet_hash
            headers["Link"] = f'<{token_url}/xet-read-token/{commit.sha}>; rel="xet-auth"'
        headers["Location"] = location
        self._text(302, f"Found. Redirecting to {location}", headers)

    # ---- CDN and CAS ---------------------------------------------------------------------

    def _route_cdn(self, method: str, raw_path: str, query: dict[str, list[str]]) -> None:
        """The CDN: the bytes of LFS files at their signed ``/{repo}/resolve/{commit}/{path}``."""
        mirror = self.server.mirror
        if method not in ("GET", "HEAD"):
            return self._text(405, "Method Not Allowed", {"Allow": "GET, HEAD"})
        expires, signature = query.get("expires", [""])[-1], query.get("signature", [""])[-1]
        if not mirror._signature_ok(self._logged_path, expires, signature):
            body = "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code></Error>"
            return self._text(403, body, content_type="application/xml")
        f = self._cdn_file(raw_path.split("/")[1:])
        if f is None:
            return self._text(404, "Not Found")
        name = f.path.rsplit("/", 1)[-1]
        plain = name.encode("ascii", "replace").decode().replace('"', "_")
        headers = {
            "ETag": f'"{f.sha256}"',
            "Content-Disposition": f"inline; filename*=UTF-8''{urllib.parse.quote(name)}; filename=\"{plain}\";",
            "Cache-Control": "public, max-age=604800, immutable",
        }
        self._send_content(f.content, headers, allow_faults=True, ranges=not mirror.cdn_ignores_range)

    def _cdn_file(self, segs: list[str]) -> _RepoFile | None:
        """The LFS file a CDN path names (following renames), or None."""
        found, end = self._find_repo(segs, 0, then="resolve")
        repo = self.server.mirror._follow_renames(found)
        if repo is None or len(segs) < end + 3:
            return None
        commit = repo.commits.get(urllib.parse.unquote(segs[end + 1]).lower())
        f = commit.files.get(urllib.parse.unquote("/".join(segs[end + 2 :]))) if commit else None
        return f if f is not None and f.lfs else None

    def _garbage(self) -> None:
        """The ``garbage`` CAS: 200 to anything, with a body that is neither JSON nor Xet data."""
        body = b"\x00\xffgarbage, not json: " + os.urandom(48)
        self._text(200, body, {"Connection": "close"}, content_type="application/json")

    # ---- responses -----------------------------------------------------------------------

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self._record = RequestRecord(
            self._method,
            self._logged_path,
            status,
            self._range,
            0,
            self.server.role,
            self.headers.get("Host", ""),
            self.headers.get("Authorization"),
        )
        self.server.mirror._append(self._record)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def _text(
        self,
        status: int,
        body: str | bytes,
        headers: dict[str, str] | None = None,
        *,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        hdrs = {"Content-Type": content_type, "Content-Length": str(len(data))}
        hdrs.update(headers or {})
        self._start(status, hdrs)
        if self._method != "HEAD":
            self._write(data)

    def _json(self, status: int, obj, headers: dict[str, str] | None = None) -> None:
        self._text(status, json.dumps(obj), headers, content_type="application/json; charset=utf-8")

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        hdrs = {"X-Error-Message": message}
        if code:
            hdrs["X-Error-Code"] = code
        hdrs.update(headers or {})
        self._json(status, {"error": message}, hdrs)

    def _send_content(
        self, content: _Content, headers: dict[str, str], *, allow_faults: bool, ranges: bool = True
    ) -> None:
        """Send ``content`` (200, or 206/416 for a Range unless ``ranges`` is false), with the
        faults and throttling in force."""
        mirror = self.server.mirror
        size = content.size
        start, end, status = 0, size, 200
        rng = _parse_range(self._range, size) if self._range and ranges else None
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


class _CasHandler(_Handler):
    """The ``garbage`` CAS: every method gets the same 200 with a useless body."""

    def _any(self) -> None:
        self._dispatch(self.command)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _any


class _BlackholeHandler(_Handler):
    """The ``blackhole`` CAS: reads the request head (logged with status 0), never answers, and
    holds the connection until the client leaves or the mirror stops."""

    def handle(self) -> None:
        mirror = self.server.mirror
        self.close_connection = True
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if self.raw_requestline and self.parse_request():
                record = RequestRecord(
                    self.command,
                    urllib.parse.unquote(self.path.partition("?")[0]),
                    0,
                    self.headers.get("Range"),
                    0,
                    "cas",
                    self.headers.get("Host", ""),
                    self.headers.get("Authorization"),
                )
                mirror._append(record)
                mirror._notify(record)
            self.connection.settimeout(0.2)
            while not mirror._stopping.is_set():
                try:
                    if not self.connection.recv(65536):
                        return  # the client gave up
                except TimeoutError:
                    continue
        except OSError:
            return

    def send_error(self, code, message=None, explain=None) -> None:
        pass  # not even to a malformed request


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int | None:
    """Offset in a listing from a ``cursor`` (0 for none), None when it is not one of ours."""
    if not cursor:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["offset"]
    except (ValueError, TypeError, KeyError):
        return None
    return offset if isinstance(offset, int) and offset >= 0 else None


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
    """A Hugging Face Hub compatible HTTP server (model repos, static files, fault injection),
    optionally with a CDN, Xet advertising and a fake CAS (see the module docstring).

    Keyword-only options (all off or as the plain mirror by default):

    ``cdn``: run a second server, the CDN, that LFS ``resolve`` requests are redirected to;
    ``cdn_host``: the host name of :attr:`cdn_url` (default ``localhost``: another origin than the
    hub's ``127.0.0.1``, so clients drop the Authorization header); ``cdn_port``: its port (0: any);
    ``cdn_public_url``: the CDN's base URL as clients reach it, overriding ``cdn_host``/port (a
    container's network alias, say); ``xet``: advertise Xet on those redirects (needs ``cdn``);
    ``cas_mode`` and ``cas_url``: what the ``xet-read-token`` route announces (see
    :attr:`cas_mode`); ``page_size``: entries per tree listing page.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        cdn: bool = False,
        cdn_host: str = "localhost",
        cdn_port: int = 0,
        cdn_public_url: str | None = None,
        xet: bool = False,
        cas_mode: str = "unreachable",
        cas_url: str | None = None,
        page_size: int = 1000,
    ):
        if xet and not cdn:
            raise ValueError("xet=True needs cdn=True: the Xet headers ride on the CDN redirect")
        self.host = host
        self.port = port
        self.token = token
        self.throttle_bps: int | None = None
        self.requests: list[RequestRecord] = []
        self.on_request: Callable[[RequestRecord], None] | None = None
        self.url = ""
        self.cdn = cdn
        self.cdn_host = cdn_host
        self.cdn_port = cdn_port
        self.cdn_public_url = cdn_public_url.rstrip("/") if cdn_public_url else None
        self.cdn_url = self.cdn_public_url or ""  # set by start() unless given
        self.cdn_ttl_s = 3600.0  # lifetime of the signed CDN URLs the hub hands out
        self.cdn_ignores_range = False  # misbehaviour: the CDN answers 200 + whole file to a Range
        self.xet = xet
        self.page_size = page_size
        self._cas_mode = "unreachable"
        self._cas_url = cas_url
        self._unreachable_url = ""
        self._cdn_secret = secrets.token_bytes(32)
        self._repos: dict[str, _Repo] = {}
        self._renames: dict[str, str] = {}  # old id -> new id
        self._static: dict[str, _Static] = {}
        self._faults: list[_Fault] = []
        self._redirects: list[tuple[str, str]] = []  # (path glob, Location)
        self._linked_sizes: list[tuple[str, int]] = []  # (path glob, X-Linked-Size)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None  # the hub
        self._servers: dict[str, tuple[_Server, threading.Thread]] = {}  # hub, cdn, cas-<mode>
        self.cas_mode = cas_mode

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> HFMirror:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = self._serve("hub", "hub", self.port, _Handler)
        self.url = _local_url(self.host, self._server.server_address[1])
        if self.cdn:
            cdn = self._serve("cdn", "cdn", self.cdn_port, _Handler)
            self.cdn_url = self.cdn_public_url or f"http://{self.cdn_host}:{cdn.server_address[1]}"
        self._unreachable_url = f"http://127.0.0.1:{_free_port()}"
        self._start_cas()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for srv, _ in servers:
            srv.shutdown()
            srv.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # wake up handlers blocked on idle keep-alive (or blackholed) connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in servers:
            thread.join(timeout=5)

    def __enter__(self) -> HFMirror:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, name: str, role: str, port: int, handler: type[_Handler]) -> _Server:
        server = _Server((self.host, port), handler, self, role)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"hfmirror-{name}", daemon=True
        )
        thread.start()
        with self._lock:
            self._servers[name] = (server, thread)
        return server

    # ---- CDN and CAS ---------------------------------------------------------------------

    @property
    def cas_mode(self) -> str:
        """What is behind the CAS URL the ``xet-read-token`` route announces, settable at any time:
        ``unreachable`` (a ``127.0.0.1`` port where nothing listens), ``garbage`` (a server that
        answers every request with 200 and a body that is not JSON) or ``blackhole`` (accepts
        connections and never answers)."""
        return self._cas_mode

    @cas_mode.setter
    def cas_mode(self, mode: str) -> None:
        if mode not in CAS_MODES:
            raise ValueError(f"unknown cas_mode {mode!r}, expected one of {CAS_MODES}")
        self._cas_mode = mode
        if self._server is not None:
            self._start_cas()

    @property
    def cas_url(self) -> str:
        """The CAS URL the token route announces: the one set explicitly (constructor or
        assignment; None to go back), else that of :attr:`cas_mode` ("" before start)."""
        if self._cas_url is not None:
            return self._cas_url
        if self._cas_mode == "unreachable":
            return self._unreachable_url
        with self._lock:
            entry = self._servers.get(f"cas-{self._cas_mode}")
        return _local_url(self.host, entry[0].server_address[1]) if entry else ""

    @cas_url.setter
    def cas_url(self, url: str | None) -> None:
        self._cas_url = url

    def _start_cas(self) -> None:
        mode = self._cas_mode
        with self._lock:
            running = f"cas-{mode}" in self._servers
        if mode != "unreachable" and not running:
            self._serve(f"cas-{mode}", "cas", 0, _CasHandler if mode == "garbage" else _BlackholeHandler)

    def signed_cdn_url(self, repo_id: str, commit: str, filename: str, *, ttl_s: float | None = None) -> str:
        """The CDN URL of a file, signed and valid for ``ttl_s`` seconds (default
        :attr:`cdn_ttl_s`; a negative value gives an already expired URL)."""
        path = f"/{repo_id}/resolve/{commit}/{filename}"
        expires = int(time.time() + (self.cdn_ttl_s if ttl_s is None else ttl_s))
        return f"{self.cdn_url}{urllib.parse.quote(path)}?expires={expires}&signature={self._sign(path, expires)}"

    def _sign(self, path: str, expires: int) -> str:
        return hmac.new(self._cdn_secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def _signature_ok(self, path: str, expires: str, signature: str) -> bool:
        if not expires.isdigit() or int(expires) < time.time():
            return False
        return hmac.compare_digest(signature.encode(), self._sign(path, int(expires)).encode())

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
        gated: bool | None = None,
    ) -> str:
        """Add a revision of a model repo (``org/name``, or one segment such as ``gpt2``) and point
        ``branch`` at it.

        ``files`` maps repo paths to bytes or to a file on disk (streamed, never loaded whole),
        or is a directory whose files (recursively, ``.git`` excluded) make up the repo. A file is
        stored in LFS when its suffix is in ``lfs_suffixes`` or its size is >= ``lfs_min_size``.
        ``commit`` defaults to a sha1 over the sorted (path, blob id) list. ``gated``: True makes
        the repo gated (downloads need a token given to :meth:`grant`), False ungates it, None
        leaves it as it is. Returns the commit.
        """
        if repo_id.count("/") > 1 or not all(repo_id.split("/")):
            raise ValueError(f"repo_id must look like 'org/name' or 'name', got {repo_id!r}")
        given: Mapping[str, bytes | pathlib.Path] = (
            _collect_dir(pathlib.Path(files)) if isinstance(files, (str, pathlib.Path)) else files
        )
        suffixes = tuple(s.lower() for s in lfs_suffixes)
        entries: dict[str, _RepoFile] = {}
        for path, source in given.items():
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
                self._renames.pop(repo_id, None)  # a new repo under a former name takes it back
            if gated is not None:
                repo.gated = gated
            repo.commits[commit] = _Commit(commit, entries)
            repo.refs[branch] = commit
            if repo.default_branch is None or branch == "main":
                repo.default_branch = branch
        return commit

    def grant(self, repo_id: str, token: str) -> None:
        """Let requests with ``Authorization: Bearer <token>`` download the gated ``repo_id``."""
        with self._lock:
            self._repo_locked(repo_id).granted.add(token)

    def rename(self, old_id: str, new_id: str) -> None:
        """Move a repo to ``new_id``; from now on every request naming ``old_id`` (API routes and
        ``resolve``) answers 307 with a relative Location naming ``new_id``."""
        if new_id.count("/") > 1 or not all(new_id.split("/")):
            raise ValueError(f"repo_id must look like 'org/name' or 'name', got {new_id!r}")
        with self._lock:
            repo = self._repo_locked(old_id)
            if new_id in self._repos:
                raise ValueError(f"repo {new_id!r} already exists")
            del self._repos[old_id]
            repo.repo_id = new_id
            self._repos[new_id] = repo
            self._renames.pop(new_id, None)
            self._renames[old_id] = new_id

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

    def override_redirect(self, path_glob: str, location: str) -> None:
        """Make the hub answer ``resolve`` requests whose decoded path matches ``path_glob`` with a
        302 to ``location`` (verbatim: the same resolve URL for a loop, ``ftp://...``, ...) instead
        of serving or redirecting to the CDN; the other headers stay those of the real answer."""
        with self._lock:
            self._redirects.append((path_glob, location))

    def override_linked_size(self, path_glob: str, value: int) -> None:
        """Make the hub announce ``X-Linked-Size: value`` for LFS files whose ``resolve`` path
        matches ``path_glob`` (on the CDN redirect, or on the direct answer without CDN)."""
        with self._lock:
            self._linked_sizes.append((path_glob, value))

    def clear_faults(self) -> None:
        """Drop injected faults and overrides, and make the CDN honour Range again."""
        with self._lock:
            self._faults.clear()
            self._redirects.clear()
            self._linked_sizes.clear()
        self.cdn_ignores_range = False

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

    def auth_by_role(self) -> dict[str, set[str | None]]:
        """The Authorization headers each server (``hub``, ``cdn``, ``cas``) received, None
        standing for requests without one: ``{"hub": {"Bearer x"}, "cdn": {None}}``."""
        with self._lock:
            records = list(self.requests)
        out: dict[str, set[str | None]] = {}
        for r in records:
            out.setdefault(r.role, set()).add(r.authorization)
        return out

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

    def _repo_locked(self, repo_id: str) -> _Repo:
        repo = self._repos.get(repo_id)
        if repo is None:
            raise ValueError(f"no repo {repo_id!r}")
        return repo

    def _lookup(self, repo_id: str) -> _Repo | str | None:
        """The repo, or the new id of a renamed one, or None."""
        with self._lock:
            return self._repos.get(repo_id) or self._renames.get(repo_id)

    def _follow_renames(self, found: _Repo | str | None) -> _Repo | None:
        for _ in range(16):
            if not isinstance(found, str):
                return found
            found = self._lookup(found)
        return None

    def _granted(self, repo: _Repo, authorization: str) -> bool:
        with self._lock:
            return any(authorization == f"Bearer {token}" for token in repo.granted)

    def _redirect_for(self, path: str) -> str | None:
        with self._lock:
            return next((loc for glob, loc in reversed(self._redirects) if fnmatch.fnmatchcase(path, glob)), None)

    def _linked_size(self, path: str, size: int) -> int:
        with self._lock:
            return next((v for glob, v in reversed(self._linked_sizes) if fnmatch.fnmatchcase(path, glob)), size)

    def _static_get(self, url_path: str) -> _Static | None:
        with self._lock:
            return self._static.get(url_path)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)


def _local_url(host: str, port: int) -> str:
    """URL of a server bound to ``host``; wildcard binds are reached through loopback."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}"


def _free_port() -> int:
    """A 127.0.0.1 port that nothing listens on (bound, read and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    parser.add_argument("--page-size", type=int, default=1000, help="entries per tree listing page (default 1000)")
    parser.add_argument("--cdn-port", type=int, default=None, help="run the CDN on PORT (0: any free port)")
    parser.add_argument("--cdn-url", default=None, help="public base URL of the CDN (default http://localhost:PORT)")
    parser.add_argument("--xet", action="store_true", help="advertise Xet on LFS redirects (needs --cdn-port)")
    parser.add_argument("--cas-url", default=None, help="CAS URL the xet-read-token route announces")
    args = parser.parse_args(argv)
    if args.cdn_port is None and (args.cdn_url or args.xet):
        parser.error("--cdn-url and --xet need --cdn-port")

    stop = threading.Event()

    def _on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    mirror = HFMirror(
        host=args.host,
        port=args.port,
        token=args.token,
        cdn=args.cdn_port is not None,
        cdn_port=args.cdn_port or 0,
        cdn_public_url=args.cdn_url,
        xet=args.xet,
        cas_url=args.cas_url,
        page_size=args.page_size,
    )
    mirror.throttle_bps = args.throttle_bps
    out_lock = threading.Lock()

    def _print(record: RequestRecord) -> None:
        path = urllib.parse.quote(record.path, safe="/:@!$&()*+,;=~")
        auth = "yes" if record.authorization else "no"
        line = f"{record.method} {path} {record.status} {record.body_bytes} role={record.role} auth={auth}"
        with out_lock:
            print(line, flush=True)

    mirror.on_request = _print
    mirror.start()  # bind first so that the URL has the real port; content is served once loaded
    try:
        _load_root(mirror, args.root)
        assert mirror._server is not None
        print(f"bound to {args.host}:{mirror._server.server_address[1]}", file=sys.stderr, flush=True)
        if mirror.cdn:
            print(f"cdn on {mirror.cdn_url}", file=sys.stderr, flush=True)
        print(f"listening on {mirror.url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        mirror.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
