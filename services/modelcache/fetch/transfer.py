"""Resumable, verified HTTP transfer of one file.

Bytes go to a partial file in ``.modelcache/partial/`` (never at a final path). A later
run, after a crash or ``kill -9``, continues from the partial file's length with an HTTP
Range request. The sha256 (and, for Hub files, the git blob oid) is computed while the
bytes arrive; a file becomes visible only by an atomic rename after it matched.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2

from modelcache.errors import ConfigError, DiskFullError, NetworkError
from modelcache.fetch.policy import Policy
from modelcache.hashing import Hasher, hash_file

CHUNK = 1024 * 1024
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Expected:
    size: int | None
    sha256: str | None = None
    git_oid: str | None = None  # sha1 of "blob <size>\\0" + content, for non-LFS Hub files


@dataclass(frozen=True)
class Result:
    sha256: str
    size: int
    transferred: int  # bytes that crossed the network in this call


def _hash_prefix(part: Path, expected: Expected) -> Hasher:
    return hash_file(part, hasher=_new_hasher(expected))


def _new_hasher(expected: Expected) -> Hasher:
    return Hasher(expected.size if expected.git_oid is not None else None)


def download(
    client: httpx2.Client,
    url: str,
    part: Path,
    expected: Expected,
    policy: Policy,
    *,
    label: str,
    headers: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Result:
    """Bring ``url`` into ``part`` completely and verified; return its sha256.

    The caller renames ``part`` to the final path. On failure the partial file is kept
    (for the next run to resume) unless its content was proven wrong.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    transferred = 0
    last_error = "no attempt made"
    retry_after: str | None = None
    for attempt in range(policy.retries + 1):
        policy.check_cancelled()
        if time.monotonic() >= policy.deadline:
            raise NetworkError(
                f"{label}: gave up, the fetch time limit was reached ({last_error})",
                remedy="raise MODELCACHE_FETCH_TIMEOUT or check the network; re-running resumes",
            )
        if attempt:
            policy.sleep(policy.backoff(attempt - 1, retry_after))
            retry_after = None
        try:
            offset = part.stat().st_size if part.exists() else 0
            if expected.size is not None and offset > expected.size:
                part.unlink()
                offset = 0
            hashes = _hash_prefix(part, expected) if offset else _new_hasher(expected)
            if expected.size is None or offset < expected.size:
                got, hashes = _stream(client, url, part, offset, hashes, expected, policy, headers, progress)
                transferred += got
            size = part.stat().st_size
            if expected.size is not None and size != expected.size:
                last_error = f"got {size} of {expected.size} bytes"
                continue
            problem = _mismatch(hashes, expected)
            if problem:
                # Proven-wrong content: throw it away, the next attempt starts from zero.
                part.unlink(missing_ok=True)
                last_error = problem
                continue
            return Result(hashes.sha256, size, transferred)
        except _Retry as exc:
            transferred += exc.transferred
            last_error, retry_after = exc.reason, exc.retry_after
        except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            last_error = f"{exc.__class__.__name__}: {exc or 'no detail'}"
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"{label}: the volume filled up while writing ({part})",
                    remedy="free space or enlarge the volume, then run fetch again: it resumes",
                ) from None
            raise
    raise NetworkError(
        f"{label}: failed after {policy.retries + 1} attempts: {last_error}",
        remedy="check HF_ENDPOINT / the URL and the network, then run fetch again: it resumes",
    )


class _Retry(Exception):
    def __init__(self, reason: str, transferred: int = 0, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transferred = transferred
        self.retry_after = retry_after


def _stream(
    client: httpx2.Client,
    url: str,
    part: Path,
    offset: int,
    hashes: Hasher,
    expected: Expected,
    policy: Policy,
    headers: dict[str, str] | None,
    progress: Callable[[int], None] | None,
) -> tuple[int, Hasher]:
    request_headers = dict(headers or {})
    request_headers["Accept-Encoding"] = "identity"
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    timeout = httpx2.Timeout(connect=min(30.0, policy.stall_timeout), read=policy.stall_timeout, write=30.0, pool=30.0)
    got = 0
    with client.stream("GET", url, headers=request_headers, timeout=timeout) as response:
        status = response.status_code
        if status == 416 and offset and expected.size == offset:
            return 0, hashes
        if status == 416:
            part.unlink(missing_ok=True)
            raise _Retry("server refused the range; restarting the file")
        if status in RETRY_STATUSES:
            raise _Retry(f"HTTP {status}", retry_after=response.headers.get("retry-after"))
        if status in (401, 403):
            raise ConfigError(
                f"HTTP {status} for {url}: not authorised",
                remedy="put a valid Hugging Face token in the secret file (MODELCACHE_HF_TOKEN_FILE) "
                "and accept the model's licence on the Hub if it is gated",
            )
        if status == 404:
            raise NetworkError(f"HTTP 404 for {url}: the file does not exist there")
        if status >= 400:  # other client errors do not get better by asking again
            raise NetworkError(f"HTTP {status} for {url}", remedy="check the URL / repo and its access rights")
        mode = "ab"
        if offset and status == 200:  # the server ignored our Range: start over
            offset, hashes, mode = 0, _new_hasher(expected), "wb"
        elif offset and not _range_starts_at(response.headers.get("content-range", ""), offset):
            part.unlink(missing_ok=True)
            raise _Retry("server answered another range than asked; restarting the file")
        with open(part, mode) as fh:
            try:
                for chunk in response.iter_bytes(CHUNK):
                    fh.write(chunk)
                    hashes.update(chunk)
                    got += len(chunk)
                    if progress:
                        progress(len(chunk))
                    if time.monotonic() >= policy.deadline:
                        raise _Retry("fetch time limit reached mid-file", got)
                    policy.check_cancelled()
            except httpx2.ReadTimeout:
                raise _Retry(f"stalled: no byte for {policy.stall_timeout:g}s", got) from None
            except (httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
                raise _Retry(f"connection lost: {exc.__class__.__name__}", got) from None
    return got, hashes


def _range_starts_at(content_range: str, offset: int) -> bool:
    # "bytes 100-199/200"
    try:
        unit, spec = content_range.split(" ", 1)
        return unit == "bytes" and int(spec.split("-", 1)[0]) == offset
    except ValueError:
        return False


def _mismatch(hashes: Hasher, expected: Expected) -> str | None:
    if expected.sha256 and hashes.sha256 != expected.sha256:
        return f"sha256 mismatch (expected {expected.sha256[:12]}…, got {hashes.sha256[:12]}…)"
    if expected.git_oid and hashes.git_oid != expected.git_oid:
        return f"git oid mismatch (expected {expected.git_oid[:12]}…, got {(hashes.git_oid or '')[:12]}…)"
    return None


def publish(part: Path, final: Path) -> None:
    """Make a verified partial file visible at its final path, atomically."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(part, 0o644)
    os.replace(part, final)
