"""Orchestrates one `modelcache fetch`: warm check, volume lock, resolve, plan the
transfers, check disk space, transfer in parallel, write the lock last."""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path

from modelcache.errors import (
    ConfigError,
    DiskFullError,
    ModelcacheError,
    NetworkError,
    VerificationError,
)
from modelcache.fetch.context import Context
from modelcache.fetch.jobs import ArtifactState, Job
from modelcache.fetch.policy import Cancelled, Policy
from modelcache.layout import Layout
from modelcache.models_lock import Lockfile, configured
from modelcache.plan import Plan, build_plan
from modelcache.progress import PlainReporter, Reporter, human_bytes
from modelcache.settings import Settings
from modelcache.verify import verify
from modelcache.volume_lock import Lock, LockedArtifact, read_lock, write_lock
from modelcache.writer_lock import VolumeLock

DISK_MARGIN = 16 * 1024 * 1024
CANCEL_GRACE = 0.5  # seconds a cancelled fetch gives its transfers to stop
USER_AGENT = "modelcache/0.1"


@dataclass
class FetchResult:
    lock: Lock
    warm: bool
    seconds: float
    files_fetched: int = 0
    bytes_transferred: int = 0
    bytes_total: int = 0


def run_fetch(
    settings: Settings,
    *,
    refresh: bool = False,
    deep: bool = False,
    reporter: Reporter | None = None,
) -> FetchResult:
    started = time.monotonic()
    reporter = reporter or PlainReporter()
    layout = Layout(settings.models_dir)
    plan = build_plan(settings)
    pins = _pins(settings, plan, refresh)
    ensure_writable(layout)
    deep = deep or settings.verify == "deep"
    if not refresh and (lock := _warm_lock(layout, plan, deep, settings.workers, pins)) is not None:
        if leftovers(layout):  # only with the lock held: a running downloader owns its partial files
            with VolumeLock(layout, 0, reporter, quiet=True) as held:
                if held:
                    _sweep(layout, reporter)
        return _warm_result(lock, started, reporter)
    with VolumeLock(layout, settings.lock_timeout, reporter):
        if not refresh and (lock := _warm_lock(layout, plan, deep, settings.workers, pins)) is not None:
            _sweep(layout, reporter)
            return _warm_result(lock, started, reporter)
        result = _fetch_locked(
            settings, layout, plan, pins, refresh=refresh, deep=deep, reporter=reporter, started=started
        )
        _sweep(layout, reporter)
        return result


def leftovers(layout: Layout) -> list[Path]:
    """Partial files (and their segment records, Xet staging and chunk cache), ours and
    huggingface_hub's; stale once the volume is complete."""
    found = sorted(layout.partial.iterdir()) if layout.partial.is_dir() else []
    if layout.hub.is_dir():
        found += layout.hub.glob("models--*/blobs/*.incomplete")
    return found


def _sweep(layout: Layout, reporter: Reporter) -> None:
    for path in leftovers(layout):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        reporter.note(f"removed stale partial file {layout.rel(path)}")


def _pins(settings: Settings, plan: Plan, refresh: bool) -> Lockfile | None:
    """The configured lockfile, after checking it pins everything the plan asks for."""
    pins = configured(settings)
    if pins is None:
        return None
    if refresh:
        raise ConfigError(
            "--refresh moves branches to their newest commit, but a lockfile pins them",
            remedy="move the pins with `modelcache lock --upgrade [NAME]`, then fetch",
        )
    missing = pins.unpinned(plan)
    if missing:
        raise ConfigError(
            f"the configuration asks for {len(missing)} artifact(s) that {settings.lockfile} does not pin; nothing was fetched",
            details=[f"{a.describe()} ({a.role})" for a in missing],
            remedy="update the lockfile: `modelcache lock` pins what is new, `modelcache lock --upgrade` moves every pin",
        )
    return pins


def _warm_lock(layout: Layout, plan: Plan, deep: bool, workers: int, pins: Lockfile | None) -> Lock | None:
    try:
        lock = read_lock(layout)
    except VerificationError:
        return None
    if lock is None or lock.plan_digest != plan.digest:
        return None
    report = verify(layout, plan, deep=deep, workers=workers, lock=lock, lockfile=pins)
    return lock if report.ok else None


def _warm_result(lock: Lock, started: float, reporter: Reporter) -> FetchResult:
    total = sum(a.size for a in lock.artifacts)
    reporter.note(
        f"volume complete: {len(lock.artifacts)} artifact(s), {human_bytes(total)}; "
        "the lock matches the plan, nothing to fetch"
    )
    return FetchResult(lock=lock, warm=True, seconds=time.monotonic() - started, bytes_total=total)


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


def _fetch_locked(
    settings: Settings,
    layout: Layout,
    plan: Plan,
    pins: Lockfile | None,
    *,
    refresh: bool,
    deep: bool,
    reporter: Reporter,
    started: float,
) -> FetchResult:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ConfigError(
            "HF_HUB_OFFLINE is set but the volume is incomplete and the downloader needs the network",
            remedy="unset HF_HUB_OFFLINE for the downloader (only the service runs offline)",
        )
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import httpx2

    from modelcache.fetch import sources

    policy = Policy(
        retries=settings.retries,
        stall_timeout=settings.stall_timeout,
        deadline=time.monotonic() + settings.fetch_timeout,
        notify=reporter.note,
    )
    token = settings.hf_token()
    previous = _previous_lock(layout)
    states: list[ArtifactState] = []
    jobs: list[tuple[ArtifactState, Job]] = []
    with httpx2.Client(follow_redirects=True, headers={"User-Agent": USER_AGENT}) as client:
        ctx = Context(settings, layout, client, policy, token, deep, previous)
        for artifact in plan.artifacts:
            pin = pins.pin_for(artifact) if pins else None
            if artifact.is_repo:
                state, planned = sources.plan_repo(ctx, artifact, refresh=refresh, pin=pin)
            else:
                state, planned = sources.plan_url(ctx, artifact, pin=pin)
            states.append(state)
            jobs += [(state, job) for job in planned]
        _check_disk(layout, [job for _, job in jobs])
        transferred = _run_jobs(jobs, settings.workers, reporter, policy.cancel)
    artifacts = tuple(
        LockedArtifact(
            name=s.artifact.name,
            spec=s.artifact.spec,
            kind=s.artifact.kind,
            source=s.artifact.source,
            dest=s.artifact.dest,
            revision=s.artifact.revision,
            commit=s.commit,
            files=tuple(sorted(s.entries, key=lambda f: f.path)),
            role=s.artifact.role,
            engine=s.artifact.engine,
        )
        for s in states
    )
    lock = Lock(plan_digest=plan.digest, artifacts=artifacts, lockfile=pins.digest if pins else None)
    write_lock(layout, lock)
    total = sum(a.size for a in artifacts)
    result = FetchResult(
        lock=lock,
        warm=False,
        seconds=time.monotonic() - started,
        files_fetched=len(jobs),
        bytes_transferred=transferred,
        bytes_total=total,
    )
    reporter.note(
        f"volume complete: {len(artifacts)} artifact(s), {human_bytes(total)}; fetched {len(jobs)} file(s), "
        f"{human_bytes(transferred)} transferred in {result.seconds:.1f}s; lock written"
    )
    return result


def _previous_lock(layout: Layout) -> Lock | None:
    try:
        return read_lock(layout)
    except VerificationError:
        return None


def _check_disk(layout: Layout, jobs: list[Job]) -> None:
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


def _run_jobs(jobs: list[tuple[ArtifactState, Job]], workers: int, reporter: Reporter, cancel: threading.Event) -> int:
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
        raise _combine(failures)
    return transferred


def _combine(failures: list[tuple[str, BaseException]]) -> ModelcacheError:
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
