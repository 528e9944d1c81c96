"""What every kind of fetch into a volume shares (from the Hub or from a registry): the
result, a writable volume with room for the plan, stale partial files swept, and the
transfer jobs run in parallel with cancellation and their failures combined."""

from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path

from modelcache.errors import ConfigError, DiskFullError, ModelcacheError, NetworkError, VerificationError
from modelcache.fetch.jobs import ArtifactState, Job
from modelcache.fetch.policy import Cancelled
from modelcache.layout import Layout
from modelcache.progress import Reporter, human_bytes
from modelcache.volume_lock import Lock

DISK_MARGIN = 16 * 1024 * 1024
CANCEL_GRACE = 0.5  # seconds a cancelled fetch gives its transfers to stop


@dataclass
class FetchResult:
    lock: Lock
    warm: bool
    seconds: float
    files_fetched: int = 0
    bytes_transferred: int = 0
    bytes_total: int = 0
    source: str | None = None  # fetch --from: the OCI reference, and the manifest digest it resolved to
    manifest_digest: str | None = None


def leftovers(layout: Layout) -> list[Path]:
    """Partial files (and their segment records, Xet staging and chunk cache), ours and
    huggingface_hub's; stale once the volume is complete."""
    found = sorted(layout.partial.iterdir()) if layout.partial.is_dir() else []
    if layout.hub.is_dir():
        found += layout.hub.glob("models--*/blobs/*.incomplete")
    return found


def sweep(layout: Layout, reporter: Reporter) -> None:
    for path in leftovers(layout):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        reporter.note(f"removed stale partial file {layout.rel(path)}")


def ensure_writable(layout: Layout) -> None:
    try:
        layout.partial.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"the models directory {layout.root} is not writable by uid {os.getuid()} ({exc.strerror})",
            remedy="mount the volume read-write for the downloader, or chown it to the downloader's uid",
        ) from None
    if not os.access(layout.partial, os.W_OK):
        raise ConfigError(
            f"the models directory {layout.root} is not writable by uid {os.getuid()}",
            remedy="mount the volume read-write for the downloader, or chown it to the downloader's uid",
        )


def check_disk(layout: Layout, jobs: list[Job]) -> None:
    from modelcache.fetch.transfer import resumable_bytes

    need = 0
    for job in jobs:
        if job.size is None:
            continue
        have = resumable_bytes(job.partial) if job.partial is not None else 0
        need += max(0, job.size - have)
    free = shutil.disk_usage(layout.root).free
    if need + DISK_MARGIN > free:
        raise DiskFullError(
            f"{layout.root} has {human_bytes(free)} free but the plan needs {human_bytes(need)} more "
            f"(plus a {human_bytes(DISK_MARGIN)} safety margin)",
            remedy="free space or enlarge the volume, or choose smaller models; nothing was downloaded",
        )


def run_jobs(jobs: list[tuple[ArtifactState, Job]], workers: int, reporter: Reporter, cancel: threading.Event) -> int:
    if not jobs:
        return 0
    failures: list[tuple[str, BaseException]] = []
    transferred = 0

    def one(state: ArtifactState, job: Job) -> int:
        task = reporter.start(job.label, job.size or 0)
        entry, got = job.run(lambda n: reporter.advance(task, n))
        state.entries.append(entry)
        reporter.finish(task, transferred=got, note="resumed" if got < entry.size else "")
        return got

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
    futures: dict[Future[int], Job] = {}
    try:
        futures = {pool.submit(one, state, job): job for state, job in jobs}
        for future in as_completed(futures):
            try:
                transferred += future.result()
            except Cancelled:
                pass
            except Exception as exc:  # collected and reported together below
                failures.append((futures[future].label, exc))
    except BaseException:  # Ctrl-C / SIGTERM: stop every transfer now, keep the partial files
        cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        # Transfers stop at their next block and record where they were; one stuck in a
        # stalled read is not waited for (the CLI then exits without joining it).
        wait(futures, timeout=CANCEL_GRACE)
        reporter.close()
        raise
    pool.shutdown(wait=True)
    reporter.close()
    if failures:
        raise combine(failures)
    return transferred


def combine(failures: list[tuple[str, BaseException]]) -> ModelcacheError:
    order = (DiskFullError, ConfigError, VerificationError, NetworkError)
    typed = [exc for _, exc in failures if isinstance(exc, ModelcacheError)]
    for kind in order:
        first = next((e for e in typed if isinstance(e, kind)), None)
        if first is not None:
            break
    else:
        _label, exc = failures[0]
        raise exc
    details = [getattr(exc, "message", None) or f"{label}: {exc}" for label, exc in failures]
    return type(first)(
        f"{len(failures)} file(s) could not be fetched; the lock was not written",
        remedy=first.remedy,
        details=details,
    )
