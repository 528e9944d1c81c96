"""Which models are in memory, and changing that while the service runs.

- **Start.** Without ``MODELCACHE_MEMORY_BUDGET`` every model loads at start (in parallel)
  and stays: the service is ready only when all are loaded, and any failure stops it.
  With a budget, each model is loaded once at start, one after the other, so that its
  size is *measured* (the private memory of its process); pinned models (``MODELCACHE_PIN``) stay,
  the others stay while they fit, the rest are unloaded again. A model larger than the
  budget on its own, or pins that do not fit together, stop the start with an error.
- **On demand.** A request for an unloaded model loads it (one load however many
  requests wait: they share it), first unloading the least recently used unpinned, idle
  models until it fits (the decisions are ``budget.make_room``'s). A model counts for what
  it needs to serve: its peak while answering, measured in its process after every call,
  or its size after loading until it has answered. A model whose peak alone is more than
  the budget is served alone, with a warning. When the models in the way are busy, the
  load waits for them (up to MODELCACHE_REQUEST_TIMEOUT); when the pinned models leave no
  room, or the model is larger than the budget once loaded, waiting cannot help: 503
  without Retry-After, naming what to change.
- **Reload** (``POST /admin/reload``, SIGHUP, ``MODELCACHE_RELOAD=watch``). The operator
  edits ``.env`` and runs the downloader, which writes a new lock; the container's own
  environment is fixed at its creation, so the lock says what changed. A service that
  serves what the lock holds (the usual case, see ``startup.select``) serves what the new
  lock holds; one configured for a subset of a shared volume keeps its subset (and takes
  new revisions of it). The new lock is verified like at start; the models that are new
  or changed load beside the old ones (or, under a budget, are marked to load on first
  use), the set is swapped in one step, calls in flight on the old models finish, and
  those stop. Any failure (a damaged file, a model the subset needs and the lock lacks, a
  model that does not load) leaves the old set serving; the reload answers with the
  error, and ``/health`` and the log show it.

Loading and unloading a model is starting and stopping its worker process, so an
unloaded model gives back exactly the memory it took.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from modelcache.errors import ConfigError, ModelcacheError
from modelcache.layout import Layout
from modelcache.lock import Lock, read_lock
from modelcache.plan import Plan
from modelcache.progress import human_bytes
from modelcache.service.metrics import Metrics
from modelcache.service import budget, zygote
from modelcache.service.registry import (CUDA_REMEDY, TASKS, ModelEntry, ModelLoadError, Registry, model_id,
                                         worker_spec)  # fmt: skip
from modelcache.service.startup import LOAD_REMEDY, Selection, select, verify_volume
from modelcache.service.workers import ModelWorker
from modelcache.settings import Settings


LOAD_RETRY_AFTER = 30  # seconds before a failed load is tried again
ROOM_POLL = 0.05  # seconds between two looks at the models in the way of a load


class ReloadError(ModelcacheError):
    title = "reload refused"
    default_remedy = "fix what is named above (usually: run the downloader again), then reload; the previous models keep serving"


class NoRoom(Exception):
    """A model cannot be loaded within the memory budget: the models in the way are busy
    (``retry_after`` seconds), or waiting cannot help (``retry_after`` None: pinned models
    or the budget itself; the message says what to change)."""

    def __init__(self, message: str, retry_after: int | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- what the configuration asks, from the lock ------------------------------------------------


def servable_entries(selection: Selection) -> list[ModelEntry]:
    """One entry per model to serve, with its lock entry."""
    entries: list[ModelEntry] = []
    for artifact, locked in selection.served:
        task = TASKS[artifact.role]
        engine = {"asr": artifact.engine or "openai-whisper", "text-embedding": "transformers",
                  "vision": "transformers", "face": "opencv-yunet"}[artifact.role]  # fmt: skip
        first_asr = task == "speech-to-text" and not any(e.task == "speech-to-text" for e in entries)
        entries.append(ModelEntry(model_id(artifact), task, engine, artifact, locked,
                                  aliases=("whisper-1",) if first_asr else ()))  # fmt: skip
    return entries


# --- the manager -------------------------------------------------------------------------------


@dataclass
class ReloadReport:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    seconds: float = 0.0
    drift: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"added": self.added, "removed": self.removed, "kept": self.kept,
                "seconds": round(self.seconds, 3), "drift": self.drift}  # fmt: skip


class Lifecycle:
    """Loads, unloads and swaps the service's models (one per worker process)."""

    def __init__(self, settings: Settings, layout: Layout, plan: Plan, lock: Lock, selection: Selection,
                 metrics: Metrics | None = None, log: Callable[[str], None] = print) -> None:  # fmt: skip
        self.settings = settings
        self.layout = layout
        self.plan = plan  # from the service's environment, fixed at start
        self.lock = lock
        self.selection = selection
        self.follow = selection.follow
        self.metrics = metrics
        self.log = log
        self.budget = settings.memory_budget
        self.registry = Registry([], settings.device)
        self.drift: list[str] = list(selection.drift)  # how the configuration and the volume's lock differ
        self._loads: dict[int, asyncio.Future] = {}  # id(entry) -> the load in progress
        self._reload_lock: asyncio.Lock | None = None
        self._attach: Callable[[ModelEntry], None] = lambda entry: None
        self._retire: Callable[[ModelEntry], None] = lambda entry: None
        self.last_reload: dict | None = None

    def bind(self, metrics: Metrics, attach: Callable[[ModelEntry], None], retire: Callable[[ModelEntry], None]) -> None:
        """The app's hooks: give an entry its runner and batchers; take them away."""
        self.metrics, self._attach, self._retire = metrics, attach, retire
        for entry in self.registry.entries:
            if entry.loaded:
                metrics.loads.labels(entry.id).inc()  # the loads at start

    # --- start (before the HTTP server runs; blocking) ---------------------------------------

    def start(self) -> Registry:
        for line in self.drift:
            self.log(f"note: {line}")
        if self.selection.drift and self.follow:
            self.log("note: serving what the volume's lock holds (a reload or the downloader changed it since "
                     "this container was created)")  # fmt: skip
        entries = servable_entries(self.selection)
        self._apply_pins(entries)
        zygote.prepare([worker_spec(self.settings, self.layout, entry) for entry in entries])
        if self.budget is None:
            self._load_all(entries)
        else:
            self._load_within_budget(entries)
        self.registry = Registry(entries, self._devices(entries))
        return self.registry

    def _apply_pins(self, entries: list[ModelEntry], *, strict: bool = True) -> None:
        if self.budget is None:
            for entry in entries:
                entry.pinned = True  # no budget: every model stays loaded
            return
        names = {n: e for e in entries for n in (e.id, *e.aliases)}
        unknown = [p for p in self.settings.pin if p not in names]
        if unknown and not strict:  # after a reload a pinned model may be gone: say so, pin the rest
            for name in unknown:
                self.log(f"note: MODELCACHE_PIN names {name!r}, which is no longer served")
        elif unknown:
            raise ConfigError(
                f"MODELCACHE_PIN names {', '.join(repr(u) for u in unknown)}, which the service does not serve",
                remedy=f"pin models by id: {', '.join(e.id for e in entries)}",
            )
        for name in self.settings.pin:
            if name in names:
                names[name].pinned = True

    def _load_all(self, entries: list[ModelEntry]) -> None:
        for entry in entries:
            self._start_worker(entry)
        failures = [line for entry in entries if (line := self._finish_load(entry))]
        if failures:
            for entry in entries:
                self._stop_worker(entry)
            raise self._load_error(failures)

    def _load_within_budget(self, entries: list[ModelEntry]) -> None:
        """Each model once, alone, to measure it; keep pins, then what fits, in configured order."""
        assert self.budget is not None
        failures, kept = [], 0
        for entry in sorted(entries, key=lambda e: not e.pinned):
            self._start_worker(entry)
            line = self._finish_load(entry)
            if line:
                failures.append(line)
                continue
            size = entry.load_bytes
            if size > self.budget:
                failures.append(f"{entry.id} takes {human_bytes(size)} loaded (measured), more than "
                                f"MODELCACHE_MEMORY_BUDGET ({human_bytes(self.budget)}) on its own")  # fmt: skip
            elif entry.pinned and kept + size > self.budget:
                failures.append(f"{entry.id} is pinned but the pinned models need {human_bytes(kept + size)} together, "
                                f"more than MODELCACHE_MEMORY_BUDGET ({human_bytes(self.budget)})")  # fmt: skip
            elif entry.pinned or kept + size <= self.budget:
                kept += size
                continue
            self._stop_worker(entry)
            entry.state = "unloaded"
            self.log(f"unloaded {entry.id} ({human_bytes(size)}): it loads again on its first request")
        if failures:
            for entry in entries:
                self._stop_worker(entry)
            raise self._load_error(failures)

    def _start_worker(self, entry: ModelEntry) -> None:
        entry.worker = ModelWorker(worker_spec(self.settings, self.layout, entry))
        entry.state, entry.error = "loading", None
        entry.worker.start()

    def _finish_load(self, entry: ModelEntry) -> str | None:
        """Wait for the entry's worker; on failure, the line that says why."""
        worker = entry.worker
        assert worker is not None
        if not worker.wait_ready():
            entry.state, entry.error = "failed", worker.failure
            return f"{entry.id} ({entry.engine_name}) from {self.layout.rel(worker.spec.load.path)}: {worker.failure}"
        entry.info = dict(worker.info)
        entry.load_seconds = worker.info["load_seconds"]
        entry.load_bytes = worker.memory_bytes()
        entry.state = "loaded"
        peak = f", {human_bytes(entry.peak_bytes)} at its peak so far" if entry.peak_bytes > entry.load_bytes else ""
        self.log(f"loaded {entry.id} ({entry.task}, {entry.engine_name}) on {entry.info.get('device')} in "
                 f"{entry.load_seconds:.2f}s (process {worker.pid}, {human_bytes(entry.load_bytes)}{peak})")  # fmt: skip
        if self.metrics is not None:
            self.metrics.loads.labels(entry.id).inc()
        return None

    def _stop_worker(self, entry: ModelEntry) -> None:
        if entry.worker is not None:
            entry.worker.stop(grace=2)
            entry.worker = None

    def _load_error(self, failures: list[str]) -> ModelLoadError:
        budget = any("MODELCACHE_MEMORY_BUDGET" in f for f in failures)
        cuda = any("CUDA" in f or "cuda" in f for f in failures) and self.settings.device != "cpu"
        return ModelLoadError(
            f"{len(failures)} model(s) failed to load or do not fit; the service does not start like this",
            details=failures,
            remedy="raise MODELCACHE_MEMORY_BUDGET (or the container's memory), pin fewer models, or configure "
            "smaller ones" if budget else CUDA_REMEDY if cuda else LOAD_REMEDY,
        )

    @staticmethod
    def _devices(entries: list[ModelEntry]) -> str:
        devices = {e.info.get("device") for e in entries} - {None}
        return ",".join(sorted(devices)) or "not loaded yet"

    # --- while serving (in the event loop) -----------------------------------------------

    @asynccontextmanager
    async def using(self, entry: ModelEntry) -> AsyncIterator[ModelWorker]:
        """The entry's worker for one call: loaded first if need be; unload waits for the call."""
        await self.ensure_loaded(entry)
        worker = entry.worker
        assert worker is not None
        entry.active += 1
        entry.last_used = time.time()
        try:
            yield worker
        finally:
            entry.active -= 1
            entry.last_used = time.time()

    async def ensure_loaded(self, entry: ModelEntry) -> None:
        """Load the entry unless it is (a dead process is restarted; a failed load is retried
        only after LOAD_RETRY_AFTER seconds)."""
        from modelcache.service.runtime import Unavailable

        if entry.current_state() == "loaded":
            return
        if entry.state == "failed" and entry.failed_at is not None:
            wait = LOAD_RETRY_AFTER - (time.monotonic() - entry.failed_at)
            if wait > 0:
                raise Unavailable(f"model {entry.id!r} failed to load ({entry.error}); next try in {wait:.0f}s",
                                  retry_after=max(1, int(wait)))  # fmt: skip
        while entry.state == "unloading":  # evicted just now: it loads again once its process is gone
            await asyncio.sleep(ROOM_POLL)
        if entry.state == "retired":
            raise Unavailable(f"model {entry.id!r} is being replaced by a reload; retry")
        if entry.current_state() == "loaded":
            return
        pending = self._loads.get(id(entry))
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loads[id(entry)] = pending
            asyncio.get_running_loop().create_task(self._load(entry, pending))
        await asyncio.shield(pending)

    async def _load(self, entry: ModelEntry, done: asyncio.Future) -> None:
        """One load of ``entry`` (every waiting request shares it), making room first."""
        from modelcache.service.runtime import Unavailable

        try:
            await self._make_room(entry)
            self._start_worker(entry)
            failure = await asyncio.to_thread(self._finish_load, entry)
            if failure:
                self._stop_worker(entry)
                entry.failed_at = time.monotonic()
                raise Unavailable(f"model {entry.id!r} could not be loaded: {entry.error}", retry_after=LOAD_RETRY_AFTER)
            entry.failed_at = None
            if self.budget is not None and entry.load_bytes > self.budget:  # first measured now (new in a reload)
                await asyncio.to_thread(self._stop_worker, entry)
                entry.state = "unloaded"
                decision = budget.make_room(entry.id, load=entry.load_bytes, peak=entry.peak_bytes,
                                            budget=self.budget, residents=[])  # fmt: skip
                assert isinstance(decision, budget.Refuse)
                raise NoRoom(f"{decision.reason}; {decision.remedy}", retry_after=None)
            done.set_result(None)
        except BaseException as exc:  # every waiting request gets it
            if entry.state == "loading":
                entry.state = "failed" if entry.error else "unloaded"
            if not done.done():
                done.set_exception(exc)
        finally:
            self._loads.pop(id(entry), None)

    async def _make_room(self, entry: ModelEntry) -> None:
        """Unload idle models, or wait for busy ones, until ``entry`` fits in the budget; NoRoom
        when waiting cannot help, or did not within MODELCACHE_REQUEST_TIMEOUT."""
        if self.budget is None:
            return
        give_up = time.monotonic() + self.settings.request_timeout
        try:
            while True:
                decision = budget.make_room(entry.id, load=entry.load_bytes, peak=entry.peak_bytes, budget=self.budget,
                                            residents=self._residents(exclude=entry))  # fmt: skip
                if isinstance(decision, budget.Fits):
                    return
                if isinstance(decision, budget.Evict):
                    await self.unload(self._by_id(decision.victim), reason="evicted")
                    continue
                if isinstance(decision, budget.Refuse):
                    raise NoRoom(f"{decision.reason}; {decision.remedy}", retry_after=None)
                entry.waiting = decision.reason
                if time.monotonic() >= give_up:
                    raise NoRoom(f"{decision.reason}; retry when they are done", retry_after=self.room_retry_after(entry))
                await asyncio.sleep(ROOM_POLL)
        finally:
            entry.waiting = None

    def _residents(self, *, exclude: ModelEntry) -> list[budget.Resident]:
        """The models that hold memory now, as the budget sees them."""
        out = []
        for e in self.registry.entries:
            state = e.current_state()
            if e is exclude or state not in ("loaded", "loading", "unloading"):
                continue
            busy = max(e.active, e.runner.depth() if e.runner is not None else 0)
            out.append(budget.Resident(e.id, e.need_bytes, e.pinned, busy, state, e.last_used or 0.0))
        return out

    def _by_id(self, model: str) -> ModelEntry:
        return next(e for e in self.registry.entries if e.id == model)

    def room_retry_after(self, entry: ModelEntry) -> int:
        """Seconds until the models in the way of ``entry`` are likely done: their queues
        times their last call's time, or their last load's time."""
        waits = [1]
        for e in self.registry.entries:
            if e is entry or e.current_state() not in ("loaded", "loading", "unloading"):
                continue
            waits.append(int(e.load_seconds + 0.999) if e.state == "loading" else
                         e.runner.retry_after() if e.runner is not None else 1)  # fmt: skip
        return max(waits)

    def observe_peak(self, entry: ModelEntry, peak: int) -> None:
        """A call's answer carried the model's peak so far: remember it; warn when it alone is
        more than the budget (once for each new peak, in the log; /health while it lasts)."""
        if peak <= entry.peak_bytes:
            return
        entry.peak_bytes = peak
        if self.budget is not None and peak > self.budget:
            warning = self.warning(entry)
            if warning and peak > entry.warned_at:
                entry.warned_at = peak + peak // 20  # again only if it grows by 5 % more
                self.log(f"warning: {warning}")

    def warning(self, entry: ModelEntry) -> str | None:
        if self.budget is None:
            return None
        return budget.oversized(entry.id, entry.need_bytes, self.budget, sum(e.need_bytes for e in self.registry.entries))

    def warnings(self) -> list[str]:
        return [w for e in self.registry.entries if (w := self.warning(e))]

    async def unload(self, entry: ModelEntry, *, reason: str = "unloaded") -> None:
        """Stop the entry's worker once its calls in flight are answered."""
        if entry.state not in ("loaded", "failed"):
            return
        entry.state = "unloading"
        deadline = time.monotonic() + self.settings.request_timeout
        while entry.active and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        held = entry.memory_now()
        worker, entry.worker = entry.worker, None
        if worker is not None:
            await asyncio.to_thread(worker.stop, 2)
        entry.state = "unloaded"
        self.log(f"{reason} {entry.id} ({human_bytes(held)} given back)")
        if self.metrics is not None and reason == "evicted":
            self.metrics.evictions.labels(entry.id).inc()

    # --- reload ----------------------------------------------------------------------------

    async def reload(self, *, trigger: str) -> ReloadReport:
        """Serve what the volume's lock holds now, or raise ReloadError and keep the old set."""
        if self._reload_lock is None:
            self._reload_lock = asyncio.Lock()
        async with self._reload_lock:
            started = time.monotonic()
            try:
                report = await self._reload()
            except ReloadError as exc:
                if self.metrics is not None:
                    self.metrics.reloads.labels("failed").inc()
                self.last_reload = {"ok": False, "trigger": trigger, "error": exc.message, "details": exc.details,
                                    "at": time.time()}  # fmt: skip
                self.log(f"reload ({trigger}) refused, the previous models keep serving: {exc.message}")
                for line in exc.details:
                    self.log(f"  - {line}")
                raise
            report.seconds = time.monotonic() - started
            if self.metrics is not None:
                self.metrics.reloads.labels("ok").inc()
            self.last_reload = {"ok": True, "trigger": trigger, **report.to_dict(), "at": time.time()}
            self.log(f"reload ({trigger}) in {report.seconds:.2f}s: added {report.added or 'nothing'}, "
                     f"removed {report.removed or 'nothing'}, kept {len(report.kept)}")  # fmt: skip
            return report

    async def _reload(self) -> ReloadReport:
        lock, selection = await asyncio.to_thread(self._read_and_verify)
        old = self.registry
        by_key = {e.key: e for e in old.entries}
        entries: list[ModelEntry] = []
        report = ReloadReport()
        for entry in servable_entries(selection):
            kept = by_key.get(entry.key)
            if kept is not None and kept.id == entry.id:
                kept.aliases = entry.aliases
                entries.append(kept)
                report.kept.append(kept.id)
            else:
                entries.append(entry)
                report.added.append(entry.id)
        self._apply_pins(entries, strict=False)
        new = [e for e in entries if e.state == "unloaded" and e.worker is None]
        to_load = new if self.budget is None else [e for e in new if e.pinned]
        for entry in new:  # sized when it loads; an older revision of the same model is the best guess until then
            older = [o for o in old.entries if o.id == entry.id]
            entry.load_bytes = max((o.load_bytes for o in older), default=0)
            entry.peak_bytes = max((o.peak_bytes for o in older), default=0)
        await self._load_beside(to_load)
        for entry in new:
            self._attach(entry)
        retired = [e for e in old.entries if e not in entries]
        report.removed = [e.id for e in retired if e.id not in report.added]
        self.lock, self.selection = lock, selection
        self.registry = Registry(entries, self._devices(entries))  # the swap: new requests see the new set
        self.drift = report.drift = list(selection.drift)
        for entry in retired:
            asyncio.get_running_loop().create_task(self._retire_entry(entry))
        return report

    def _read_and_verify(self) -> tuple[Lock, Selection]:
        """The volume's lock now, verified, and what of it to serve."""
        try:
            lock = read_lock(self.layout)
            report = verify_volume(self.settings, self.layout, lock)
        except ModelcacheError as exc:
            raise ReloadError(exc.message, details=exc.details, remedy=exc.remedy) from None
        if not report.ok or lock is None:
            raise ReloadError(
                f"the volume does not hold what its lock says ({len(report.problems)} problem(s))",
                details=[p.line() for p in report.problems[:20]],
                remedy="run the downloader again (`docker compose run --rm model-downloader`), then reload; "
                "the previous models keep serving",
            )
        selection = select(self.plan, lock, follow=self.follow)
        if not self.follow and selection.missing:
            self.drift = [f"the configuration asks for {m}, which the new lock does not hold" for m in selection.missing]
            raise ReloadError(
                f"this service serves {len(self.plan.artifacts)} configured model(s) of a shared volume, and the new "
                "lock lacks some of them",
                details=self.drift,
                remedy="fetch them into the volume (the downloader with this service's configuration), then reload",
            )
        if not selection.served:
            raise ReloadError("the new lock holds no model to serve")
        return lock, selection

    async def _load_beside(self, entries: list[ModelEntry]) -> None:
        """Load new models while the old ones still serve; all or nothing."""
        if not entries:
            return
        if self.budget is not None:
            for entry in entries:
                try:
                    await self._make_room(entry)
                except NoRoom as exc:
                    raise ReloadError(f"pinned model {entry.id} cannot be loaded: {exc}") from None
        for entry in entries:
            self._start_worker(entry)
        failures = [line for e in entries if (line := await asyncio.to_thread(self._finish_load, e))]
        if failures:
            for entry in entries:
                await asyncio.to_thread(self._stop_worker, entry)
                entry.state = "failed"
            raise ReloadError(f"{len(failures)} new model(s) failed to load", details=failures)

    async def _retire_entry(self, entry: ModelEntry) -> None:
        """A model no longer served: requests already queued for it or running on it are
        answered by it (new ones see the new set), then its process stops."""
        deadline = time.monotonic() + self.settings.request_timeout
        while _busy(entry) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        entry.state = "retired"
        if entry.worker is not None:
            await asyncio.to_thread(entry.worker.stop, 2)
            entry.worker = None
        self._retire(entry)

    # --- supervision ------------------------------------------------------------------------

    async def supervise(self, interval: float = 1.0) -> None:
        """Notice model processes that died (killed, out of memory) and restart the ones that
        must stay loaded; the others load again on their next request."""
        while True:
            await asyncio.sleep(interval)
            for entry in self.registry.entries:
                worker = entry.worker
                if worker is None or worker.alive or entry.state not in ("loaded", "failed"):
                    continue  # only a process that ended under a loaded model
                entry.worker = None
                entry.state, entry.error = "failed", worker.failure
                entry.failed_at = None  # a crash, not a failed load: no waiting before the restart
                self.log(f"{entry.id}: {entry.error}; "
                         + ("restarting it" if entry.pinned else "it loads again on its next request"))  # fmt: skip
                if entry.pinned:
                    asyncio.get_running_loop().create_task(self._restart(entry))

    async def _restart(self, entry: ModelEntry) -> None:
        try:
            await self.ensure_loaded(entry)
        except Exception as exc:  # logged; /health shows the entry as failed
            self.log(f"restarting {entry.id} failed: {exc}")

    # --- watch ------------------------------------------------------------------------------

    async def watch(self) -> None:
        """MODELCACHE_RELOAD=watch: reload when the volume's lock changes (polled)."""
        path = self.layout.lock_file
        seen = _stamp(path)
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            stamp = _stamp(path)
            if stamp != seen and stamp is not None:
                seen = stamp
                try:
                    await self.reload(trigger="watch")
                except ReloadError:
                    pass  # logged; the old set serves; the next change triggers again


def _busy(entry: ModelEntry) -> bool:
    """Calls running on the entry's worker, or waiting in its queue (a batched request
    holds a place in it until it is answered)."""
    runner = entry.runner
    return bool(entry.active or (runner is not None and runner.depth()))


def _stamp(path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)

