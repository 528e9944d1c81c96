"""Orchestrates one `modelcache fetch`: warm check, volume lock, resolve, plan the
transfers, check disk space, transfer in parallel, write the lock last."""

from __future__ import annotations

import os
import time

from modelcache import signatures
from modelcache.errors import (
    ConfigError,
    VerificationError,
)
from modelcache.fetch.context import Context
from modelcache.fetch.execute import FetchResult, check_disk, ensure_writable, leftovers, run_jobs, sweep
from modelcache.fetch.jobs import ArtifactState, Job
from modelcache.fetch.policy import Policy
from modelcache.layout import Layout
from modelcache.models_lock import Lockfile, configured
from modelcache.plan import Plan, build_plan
from modelcache.progress import PlainReporter, Reporter, human_bytes
from modelcache.settings import Settings
from modelcache.verify import verify
from modelcache.volume_lock import Lock, LockedArtifact, read_lock, write_lock
from modelcache.writer_lock import VolumeLock

USER_AGENT = "modelcache/0.1"


def run_fetch(
    settings: Settings,
    *,
    refresh: bool = False,
    deep: bool = False,
    reporter: Reporter | None = None,
) -> FetchResult:
    started = time.monotonic()
    reporter = reporter or PlainReporter()
    if settings.from_ref is None and (pinned := configured(settings)) is not None and pinned.registry:
        from dataclasses import replace

        from modelcache.settings import parse_oci_reference

        reporter.note(f"{settings.lockfile} names {pinned.registry}: filling the volume from that registry")
        settings = replace(settings, from_ref=parse_oci_reference(pinned.registry, where=f"{settings.lockfile}"))
    if settings.from_ref is not None:
        if refresh:
            raise ConfigError(
                "--refresh moves branches to their newest commit on the Hub, but the volume is to be filled "
                f"from {settings.from_ref} (MODELCACHE_FROM / --from)",
                remedy="push a newer volume to the registry instead, or drop --from / MODELCACHE_FROM to fetch from the Hub",
            )
        from modelcache.fetch.oci import run_from_registry

        return run_from_registry(settings, deep=deep, reporter=reporter, started=started)
    layout = Layout(settings.models_dir)
    plan = build_plan(settings)
    pins = _pins(settings, plan, refresh)
    ensure_writable(layout)
    deep = deep or settings.verify == "deep"
    if not refresh and (lock := _warm_lock(layout, plan, deep, settings.workers, pins)) is not None:
        if leftovers(layout):  # only with the lock held: a running downloader owns its partial files
            with VolumeLock(layout, 0, reporter, quiet=True) as held:
                if held:
                    sweep(layout, reporter)
        signatures.enforce(layout, lock, settings.trust, reporter.note, memo=not deep)
        return _warm_result(lock, started, reporter)
    with VolumeLock(layout, settings.lock_timeout, reporter):
        if not refresh and (lock := _warm_lock(layout, plan, deep, settings.workers, pins)) is not None:
            sweep(layout, reporter)
            signatures.enforce(layout, lock, settings.trust, reporter.note, memo=not deep)
            return _warm_result(lock, started, reporter)
        result = _fetch_locked(
            settings, layout, plan, pins, refresh=refresh, deep=deep, reporter=reporter, started=started
        )
        sweep(layout, reporter)
        return result


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

    from modelcache.fetch import export, sources

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
        check_disk(layout, [job for _, job in jobs])
        transferred = run_jobs(jobs, settings.workers, reporter, policy.cancel)
        for state in states:  # ONNX graphs exported or quantized from what was fetched
            export.derive(ctx, state, reporter.note)
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
    signatures.enforce(layout, lock, settings.trust, reporter.note, memo=True)  # refused: no lock, no service
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
