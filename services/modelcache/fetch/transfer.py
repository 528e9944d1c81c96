"""Resumable, verified HTTP transfer of one file: the only way bytes enter the volume.

Bytes go to a partial file in ``.modelcache/partial/`` (never at a final path). A later
run, after a crash or ``kill -9``, continues with HTTP Range requests. The sha256 (and,
for small Hub files, the git blob oid) is computed while the bytes arrive, in file order;
a file becomes visible only by an atomic rename after it matched.

A large file (``MODELCACHE_SEGMENT_MIN_MB``) is fetched as several ranged segments at
once (``MODELCACHE_SEGMENTS``), so one checkpoint is not bound to one TCP stream. The
segments are written in place into one partial file; a small sidecar
(``<name>.segments``) records how far each got, so each resumes on its own. The hash
follows the contiguous prefix as it grows.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2

from modelcache.errors import DiskFullError, NetworkError, VerificationError
from modelcache.fetch.http import Retry, Want, open_bytes
from modelcache.fetch.policy import Policy
from modelcache.hashing import Hasher, hash_file

HASH_BLOCK = 4 * 1024 * 1024
SIDECAR_EVERY = 8 * 1024 * 1024  # bytes, or
SIDECAR_SECONDS = 1.0  # seconds, between two records of the segments' progress
_NETWORK_ERRORS = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)


@dataclass(frozen=True)
class Expected:
    size: int | None
    sha256: str | None = None
    git_oid: str | None = None  # sha1 of "blob <size>\\0" + content, for non-LFS Hub files
    pin: str = "the source's listing"  # where the expected hash comes from, for messages
    #: the remedy when the same wrong bytes come twice; ``{got}`` is their sha256
    fix: str = "the server serves other bytes than it lists; report it to its operator or use another mirror"


@dataclass(frozen=True)
class Result:
    sha256: str
    size: int
    transferred: int  # bytes that crossed the network in this call


@dataclass(frozen=True)
class Segmenting:
    """When and how to split one file into parallel ranged segments."""

    count: int = 4
    min_bytes: int = 256 * 1024 * 1024

    def applies(self, expected: Expected) -> bool:
        return self.count > 1 and expected.size is not None and expected.size >= self.min_bytes


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
    segmenting: Segmenting | None = None,
) -> Result:
    """Bring ``url`` into ``part`` completely and verified; return its sha256.

    The caller renames ``part`` to the final path. On failure the partial file is kept
    (for the next run to resume) unless its content was proven wrong. ``headers`` (the
    Hub token) go only to the host of ``url``, never to the hosts it redirects to.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    job = _File(client, url, part, expected, policy, label, headers, progress or (lambda n: None))
    try:
        if segmenting is not None and segmenting.applies(expected) and expected.git_oid is None:
            try:
                return job.segmented(segmenting.count)
            except _RangesIgnored:
                policy.notify(f"{label}: the server ignores Range requests; fetching it as one stream from the start")
                job.discard()
        elif sidecar_path(part).exists():  # segmented by an earlier run with other settings
            job.discard()
        return job.single()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"{label}: the volume filled up while writing ({part})",
                remedy="free space or enlarge the volume, then run fetch again: it resumes",
            ) from None
        raise


def sidecar_path(part: Path) -> Path:
    return part.with_name(part.name.removesuffix(".part") + ".segments")


def resumable_bytes(part: Path) -> int:
    """How many bytes of a partial file a resume keeps (for the disk-space check)."""
    segments = _load_segments(part, None)
    if segments is not None:
        return sum(s.done for s in segments)
    try:
        return part.stat().st_size
    except OSError:
        return 0


class _RangesIgnored(Exception):
    """A segment request was answered with the whole file: segments cannot work here."""


class _Attempts:
    """The retry loop of one stream: cancel, deadline, back-off, one log line per retry."""

    def __init__(self, policy: Policy, label: str) -> None:
        self.policy, self.label = policy, label
        self.last_error = "no attempt made"
        self.retry_after: str | None = None
        self.bad_hashes: set[str] = set()

    def __iter__(self) -> Iterator[int]:
        policy = self.policy
        for attempt in range(policy.retries + 1):
            policy.check_cancelled()
            if time.monotonic() >= policy.deadline:
                raise NetworkError(
                    f"{self.label}: gave up, the fetch time limit was reached ({self.last_error})",
                    remedy="raise MODELCACHE_FETCH_TIMEOUT or check the network; re-running resumes",
                )
            if attempt:
                wait = policy.backoff(attempt - 1, self.retry_after)
                policy.notify(f"{self.label}: {self.last_error}; retry {attempt}/{policy.retries} in {wait:.1f}s")
                policy.sleep(wait)
                self.retry_after = None
            yield attempt

    def failed(self, reason: str, retry_after: str | None = None) -> None:
        self.last_error, self.retry_after = reason, retry_after

    def wrong_content(self, hashes: Hasher, expected: Expected, problem: str) -> None:
        """Proven-wrong bytes: download again once; the same wrong bytes twice is final."""
        got = hashes.sha256
        if got in self.bad_hashes:
            want = f"sha256 {expected.sha256}" if expected.sha256 else f"git blob id {expected.git_oid}"
            raise VerificationError(
                f"{self.label}: the server sent the same bytes twice (sha256 {got}) but {expected.pin} expects {want}",
                remedy=expected.fix.format(got=got) + "; nothing was kept",
            )
        self.bad_hashes.add(got)
        self.failed(f"{problem}, downloading it again")

    def exhausted(self) -> NetworkError:
        return NetworkError(
            f"{self.label}: failed after {self.policy.retries + 1} attempts: {self.last_error}",
            remedy="check HF_ENDPOINT / the URL and the network, then run fetch again: it resumes",
        )


@dataclass
class _File:
    client: httpx2.Client
    url: str
    part: Path
    expected: Expected
    policy: Policy
    label: str
    auth: dict[str, str] | None
    progress: Callable[[int], None]

    @property
    def want(self) -> Want:
        return Want(self.label, self.expected.size, self.expected.sha256, self.expected.pin)

    @property
    def timeout(self) -> httpx2.Timeout:
        stall = self.policy.stall_timeout
        return httpx2.Timeout(connect=min(30.0, stall), read=stall, write=30.0, pool=30.0)

    def new_hasher(self) -> Hasher:
        return Hasher(self.expected.size if self.expected.git_oid is not None else None)

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)
        sidecar_path(self.part).unlink(missing_ok=True)

    # --- one stream ----------------------------------------------------------------------

    def single(self) -> Result:
        expected, part = self.expected, self.part
        attempts = _Attempts(self.policy, self.label)
        transferred = 0
        for _ in attempts:
            try:
                offset = part.stat().st_size if part.exists() else 0
                if expected.size is not None and offset > expected.size:
                    part.unlink()
                    offset = 0
                hashes = hash_file(part, hasher=self.new_hasher()) if offset else self.new_hasher()
                if expected.size is None or offset < expected.size:
                    got, hashes = self._stream(offset, hashes)
                    transferred += got
                size = part.stat().st_size
                if expected.size is not None and size != expected.size:
                    attempts.failed(f"got {size} of {expected.size} bytes")
                    continue
                problem = _mismatch(hashes, expected)
                if problem:
                    part.unlink(missing_ok=True)  # the next attempt starts from zero
                    attempts.wrong_content(hashes, expected, problem)
                    continue
                return Result(hashes.sha256, size, transferred)
            except Retry as exc:
                transferred += exc.transferred
                attempts.failed(exc.reason, exc.retry_after)
            except _NETWORK_ERRORS as exc:
                attempts.failed(f"{exc.__class__.__name__}: {exc or 'no detail'}")
        raise attempts.exhausted()

    def _stream(self, offset: int, hashes: Hasher) -> tuple[int, Hasher]:
        got = 0
        try:
            with open_bytes(self.client, self.url, self.want, start=offset, auth=self.auth, timeout=self.timeout) as op:
                response = op.response
                mode = "ab"
                if offset and response.status_code == 200:  # the server ignored our Range: start over
                    self.policy.notify(f"{self.label}: the server ignored the Range request; restarting from zero")
                    offset, hashes, mode = 0, self.new_hasher(), "wb"
                elif offset and not _range_starts_at(response.headers.get("content-range", ""), offset):
                    self.part.unlink(missing_ok=True)
                    raise Retry("the server answered another range than asked; restarting the file")
                with open(self.part, mode) as fh:
                    for chunk in self._chunks(response, lambda: got):  # noqa: B023 (reads the count as it grows)
                        fh.write(chunk)
                        hashes.update(chunk)
                        got += len(chunk)
                        self.progress(len(chunk))
        except Retry as exc:
            if exc.reason == "the server refused the range":
                self.part.unlink(missing_ok=True)  # our partial file is longer than theirs
            raise Retry(exc.reason, got + exc.transferred, exc.retry_after) from None
        return got, hashes

    def _chunks(self, response: httpx2.Response, so_far: Callable[[], int]) -> Iterator[bytes]:
        """The body as it arrives; stalls, lost connections and the deadline become Retry."""
        policy = self.policy
        try:
            for chunk in response.iter_bytes():
                yield chunk
                policy.check_cancelled()
                if time.monotonic() >= policy.deadline:
                    raise Retry("fetch time limit reached mid-file", so_far())
        except httpx2.ReadTimeout:
            raise Retry(f"stalled: no byte for {policy.stall_timeout:g}s", so_far()) from None
        except (httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            raise Retry(f"connection lost: {exc.__class__.__name__}", so_far()) from None

    # --- several ranged segments -----------------------------------------------------------

    def segmented(self, count: int) -> Result:
        """Fetch in parallel segments, hash in file order; a wrong hash refetches once."""
        attempts = _Attempts(self.policy, self.label)
        transferred = 0
        for _ in attempts:
            run = _SegmentRun(self, count)
            try:
                hashes = run.run()
            except Retry as exc:  # the partial file does not hold what its record says
                self.discard()
                attempts.failed(exc.reason)
                continue
            finally:
                transferred += run.transferred
            problem = _mismatch(hashes, self.expected)
            if problem is None:
                self.discard_sidecar()
                return Result(hashes.sha256, self.expected.size or 0, transferred)
            self.discard()
            attempts.wrong_content(hashes, self.expected, problem)
        raise attempts.exhausted()

    def discard_sidecar(self) -> None:
        sidecar_path(self.part).unlink(missing_ok=True)


@dataclass
class _Segment:
    start: int
    end: int  # exclusive
    done: int = 0  # bytes written from start

    @property
    def complete(self) -> bool:
        return self.done >= self.end - self.start


def _load_segments(part: Path, size: int | None) -> list[_Segment] | None:
    try:
        data = json.loads(sidecar_path(part).read_text())
        segments = [_Segment(int(s), int(e), int(d)) for s, e, d in data["segments"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if size is not None and (data.get("size") != size or not _tiles(segments, size)):
        return None
    return segments


def _tiles(segments: list[_Segment], size: int) -> bool:
    position = 0
    for s in segments:
        if s.start != position or not 0 <= s.done <= s.end - s.start:
            return False
        position = s.end
    return position == size


def _split(size: int, count: int, prefix: int) -> list[_Segment]:
    """``count`` equal segments; the first ``prefix`` bytes (an earlier single stream) are done."""
    bounds = [size * i // count for i in range(count + 1)]
    return [_Segment(bounds[i], bounds[i + 1], max(0, min(prefix, bounds[i + 1]) - bounds[i])) for i in range(count)]


class _SegmentRun:
    """One pass over a segmented file: a thread per unfinished segment, the hash in this thread."""

    def __init__(self, file: _File, count: int) -> None:
        self.file = file
        self.size = file.expected.size or 0
        segments = _load_segments(file.part, self.size) if file.part.exists() else None
        if segments is None:
            prefix = file.part.stat().st_size if file.part.exists() else 0
            segments = _split(self.size, count, prefix if prefix <= self.size else 0)
            if prefix > self.size:
                file.part.unlink()
        self.segments = segments
        self.changed = threading.Condition()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.transferred = 0
        self.unsaved = 0
        self.saved_at = 0.0
        self._save()

    def run(self) -> Hasher:
        fd = os.open(self.file.part, os.O_RDWR | os.O_CREAT, 0o644)
        threads = [
            threading.Thread(target=self._worker, args=(fd, i, s), name=f"segment-{i + 1}", daemon=True)
            for i, s in enumerate(self.segments)
            if not s.complete
        ]
        try:
            for t in threads:
                t.start()
            return self._hash(fd)
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=1.0)  # a worker stuck in a stalled read is left to its timeout
            with self.changed:
                self._save()
            os.close(fd)

    def _frontier(self) -> int:
        for s in self.segments:
            if not s.complete:
                return s.start + s.done
        return self.size

    def _hash(self, fd: int) -> Hasher:
        hasher, position = self.file.new_hasher(), 0
        while position < self.size:
            with self.changed:
                while not (self.errors or self.stop.is_set() or self._frontier() > position):
                    self.file.policy.check_cancelled()
                    self.changed.wait(0.2)
                if self.errors:
                    raise self.errors[0]
                frontier = self._frontier()
            self.file.policy.check_cancelled()
            while position < frontier:
                block = os.pread(fd, min(HASH_BLOCK, frontier - position), position)
                if not block:
                    raise Retry("the partial file is shorter than its record")
                hasher.update(block)
                position += len(block)
        return hasher

    def _save(self) -> None:
        """Record the segments (caller holds ``changed``, or no worker runs yet)."""
        sidecar = sidecar_path(self.file.part)
        tmp = sidecar.with_name(sidecar.name + ".tmp")
        tmp.write_text(json.dumps({"size": self.size, "segments": [[s.start, s.end, s.done] for s in self.segments]}))
        os.replace(tmp, sidecar)
        self.unsaved, self.saved_at = 0, time.monotonic()

    def _worker(self, fd: int, index: int, segment: _Segment) -> None:
        file = self.file
        label = f"{file.label} (segment {index + 1}/{len(self.segments)})"
        attempts = _Attempts(file.policy, label)
        try:
            for _ in attempts:
                if self.stop.is_set():
                    return
                try:
                    self._fetch(fd, segment)
                    if segment.complete or self.stop.is_set():
                        return
                    attempts.failed("the connection closed before the segment was complete")
                except Retry as exc:
                    attempts.failed(exc.reason, exc.retry_after)
                except _NETWORK_ERRORS as exc:
                    attempts.failed(f"{exc.__class__.__name__}: {exc or 'no detail'}")
            raise attempts.exhausted()
        except BaseException as exc:  # handed to the hashing thread, which raises it
            with self.changed:
                self.errors.append(exc)
                self.changed.notify_all()

    def _fetch(self, fd: int, segment: _Segment) -> None:
        file = self.file
        start = segment.start + segment.done
        with open_bytes(
            file.client, file.url, file.want, start=start, end=segment.end, auth=file.auth, timeout=file.timeout
        ) as op:
            if op.response.status_code == 200:
                raise _RangesIgnored
            if not _range_starts_at(op.response.headers.get("content-range", ""), start):
                raise Retry("the server answered another range than asked")
            position = start
            for chunk in file._chunks(op.response, lambda: 0):
                if self.stop.is_set():
                    return
                chunk = chunk[: segment.end - position]  # never past the segment, whatever is sent
                os.pwrite(fd, chunk, position)  # written before it is recorded: a kill loses no record
                position += len(chunk)
                with self.changed:
                    segment.done += len(chunk)
                    self.transferred += len(chunk)
                    self.unsaved += len(chunk)
                    if self.unsaved >= SIDECAR_EVERY or time.monotonic() - self.saved_at >= SIDECAR_SECONDS:
                        self._save()
                    self.changed.notify_all()
                file.progress(len(chunk))
                if segment.complete:
                    return


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
