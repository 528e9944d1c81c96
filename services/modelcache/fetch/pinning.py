"""`modelcache lock`: the configuration resolved to pins from metadata alone, no weights.

For each planned artifact: a Hub repo's branch or tag becomes a commit and its files are
listed with size and hash (two requests a repo, more for listings past 1000 files); a
whisper or URL artifact gets its size from one HEAD (its sha256 is configured). Pins that
still match their artifact's configuration are kept unless asked to move (``--upgrade``),
the way a package lockfile keeps versions until told otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

from modelcache.errors import ConfigError
from modelcache.fetch import hub
from modelcache.fetch.policy import Policy
from modelcache.models_lock import Lockfile, Pin, PinnedFile, read_lockfile, render, write_lockfile
from modelcache.plan import Artifact, build_plan
from modelcache.progress import Reporter
from modelcache.settings import Settings

USER_AGENT = "modelcache/0.1"


@dataclass
class LockResult:
    lockfile: Lockfile
    written: bool  # False: the file already said exactly this
    resolved: list[str] = field(default_factory=list)  # artifacts asked of the Hub
    kept: list[str] = field(default_factory=list)  # pins carried over unchanged
    moved: list[str] = field(default_factory=list)  # resolved to another commit/content than before
    requests: int = 0
    seconds: float = 0.0


class _Counter:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def hook(self, request: httpx2.Request) -> None:
        with self._lock:
            self.count += 1


@contextmanager
def _counting_hub_requests(counter: _Counter) -> Iterator[None]:
    """Count the requests huggingface_hub makes (its shared client, with one more event hook)."""
    from huggingface_hub.utils import _http

    def factory() -> httpx2.Client:
        client = _http.default_client_factory()
        client.event_hooks["request"].append(counter.hook)
        return client

    _http.set_client_factory(factory)
    try:
        yield
    finally:
        _http.set_client_factory(_http.default_client_factory)


def make_lockfile(
    settings: Settings,
    path: Path,
    *,
    upgrade: bool = False,
    names: tuple[str, ...] = (),
    reporter: Reporter,
    write: bool = True,
    registry: str | None = None,
) -> LockResult:
    """Resolve the plan to pins and write ``path`` (only when its content changes; never
    with ``write=False``, which only returns the result)."""
    from huggingface_hub import HfApi

    started = time.monotonic()
    plan = build_plan(settings)
    existing = read_lockfile(path) if path.exists() else None
    unknown = [n for n in names if plan.get(n) is None]
    if unknown:
        raise ConfigError(
            f"--upgrade names {', '.join(repr(n) for n in unknown)}, which the configuration does not have",
            remedy=f"use one of: {', '.join(a.name for a in plan.artifacts)}",
        )
    policy = Policy(
        retries=settings.retries,
        stall_timeout=settings.stall_timeout,
        deadline=time.monotonic() + settings.fetch_timeout,
        notify=reporter.note,
    )
    counter = _Counter()
    result = LockResult(lockfile=Lockfile(plan.digest, ()), written=False)
    pins: list[Pin] = []
    token = settings.hf_token()
    with (
        _counting_hub_requests(counter),
        httpx2.Client(headers={"User-Agent": USER_AGENT}, event_hooks={"request": [counter.hook]}) as client,
    ):
        api = HfApi(endpoint=settings.hf_endpoint, token=token, user_agent="modelcache")
        for artifact in plan.artifacts:
            old = existing.pin_for(artifact) if existing else None
            move = upgrade and (not names or artifact.name in names or artifact.source in names)
            if old is not None and not move:
                pins.append(old)
                result.kept.append(artifact.name)
                continue
            pin = _resolve(api, client, artifact, policy, settings)
            pins.append(pin)
            result.resolved.append(artifact.name)
            before = existing.get(artifact.name) if existing else None
            if before is not None and (before.commit, before.files) != (pin.commit, pin.files):
                result.moved.append(artifact.name)
            reporter.note(
                f"pinned {artifact.describe()}"
                + (f" at {pin.commit}" if pin.commit else "")
                + f": {len(pin.files)} file(s)"
            )
    keep = existing.registry if existing else None
    result.lockfile = Lockfile(
        plan.digest, tuple(sorted(pins, key=lambda p: p.name)), keep if registry is None else (registry or None)
    )
    if write and (existing is None or render(existing) != render(result.lockfile)):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_lockfile(path, result.lockfile)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the lockfile {path}: {exc.strerror}",
                remedy="write it where you can (--lockfile PATH); in the container the lockfile is mounted read-only: "
                "use `lock --print > models.lock.new && mv models.lock.new models.lock` on the host",
            ) from None
        result.written = True
    result.requests = counter.count
    result.seconds = time.monotonic() - started
    return result


def _resolve(api, client: httpx2.Client, artifact: Artifact, policy: Policy, settings: Settings) -> Pin:
    if artifact.is_repo:
        listed = hub.list_files(api, artifact, policy)
        files = tuple(
            PinnedFile(f.path, f.size, sha256=f.sha256) if f.lfs else PinnedFile(f.path, f.size, git=f.git_oid)
            for f in listed.files
        )
        return Pin(
            artifact.name, artifact.kind, artifact.spec, artifact.source, artifact.revision, listed.commit, files
        )
    from modelcache.fetch.sources import remote_size

    size = remote_size(client, artifact.source, settings.stall_timeout)
    return Pin(
        artifact.name,
        artifact.kind,
        artifact.spec,
        artifact.source,
        None,
        None,
        (PinnedFile(artifact.dest, size, sha256=artifact.sha256),),
    )
