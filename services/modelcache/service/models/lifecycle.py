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
  serves what the lock holds (the usual case, see ``selection.select``) serves what the new
  lock holds; one configured for a subset of a shared volume keeps its subset (and takes
  new revisions of it). The new lock is verified like at start; the models that are new
  or changed load beside the old ones (or, under a budget, are marked to load on first
  use), the set is swapped in one step, calls in flight on the old models finish, and
  those stop. Any failure (a damaged file, a model the subset needs and the lock lacks, a
  model that does not load) leaves the old set serving; the reload answers with the
  error, and ``/health`` and the log show it (the rules: ``reload.py``).
- **Supervision.** A model process that dies is noticed within a second; a model that
  must stay loaded is started again, the others load on their next request.

Loading and unloading a model is starting and stopping its worker process, so an
unloaded model gives back exactly the memory it took.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from modelcache.errors import ConfigError, VerificationError
from modelcache.layout import Layout
from modelcache.plan import Plan
from modelcache.progress import human_bytes
from modelcache.service.faults import NoRoom, ReloadError, StartupError, Unavailable
from modelcache.service.models import budget, zygote
from modelcache.service.models.entry import CUDA_REMEDY, ModelEntry, ModelState, Registry, entry_for, worker_spec
from modelcache.service.models.reload import ReloadReport, merge, read_new_lock, subset_missing, subset_refusal
from modelcache.service.models.selection import Selection
from modelcache.service.models.volume import LOAD_REMEDY
from modelcache.service.models.worker import ModelWorker
from modelcache.settings import Settings
from modelcache.volume_lock import Lock, read_lock

LOAD_RETRY_AFTER = 30  # seconds before a failed load is tried again
ROOM_POLL = 0.05  # seconds between two looks at the models in the way of a load
IN_MEMORY = (ModelState.LOADED, ModelState.LOADING, ModelState.UNLOADING)


class Observer:
    """What the layers above learn from the lifecycle, and tell it: the HTTP layer counts
    loads, evictions and reloads in its metrics, and the serving layer gives models that a
    reload adds their queues and says how busy each model is. The defaults do nothing."""

    def loaded(self, entry: ModelEntry) -> None:
        """A load finished (at start, on demand, or in a reload)."""

    def evicted(self, entry: ModelEntry) -> None:
        """The model was unloaded to make room in the memory budget."""

    def reloaded(self, ok: bool) -> None:
        """A reload was done (``ok``) or refused."""

    def died(self, entry: ModelEntry) -> None:
        """The supervisor found the model's process dead while it was loaded (killed, out of
        memory): a pinned model is started again at once, the others on their next request."""

    def added(self, entry: ModelEntry) -> None:
        """A reload added the model: from now on requests may name it."""

    def retired(self, entry: ModelEntry) -> None:
        """A reload removed the model, and its process has stopped."""

    def depth(self, entry: ModelEntry) -> int:
        """Requests waiting or running for the model."""
        return 0

    def retry_after(self, entry: ModelEntry) -> int:
        """Seconds until the model's queue is likely through."""
        return 1


# --- what the configuration asks, from the lock ------------------------------------------------


def servable_entries(selection: Selection) -> list[ModelEntry]:
    """One entry per model to serve, with its lock entry (the first Whisper is also whisper-1)."""
    entries: list[ModelEntry] = []
    for artifact, locked in selection.served:
        first_asr = not any(e.artifact.role == "asr" for e in entries)
        entries.append(entry_for(artifact, locked, first_asr=first_asr))
    return entries


# --- the manager -------------------------------------------------------------------------------


class Lifecycle:
    """Loads, unloads and swaps the service's models (one per worker process)."""

    def __init__(
        self,
        settings: Settings,
        layout: Layout,
        plan: Plan,
        lock: Lock,
        selection: Selection,
        log: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.plan = plan  # from the service's environment, fixed at start
        self.lock = lock
        self.selection = selection
        self.follow = selection.follow
        self.observer = Observer()
        self.log = log
        self.budget = settings.memory_budget
        self.registry = Registry([], settings.device)
        self.drift: list[str] = list(selection.drift)  # how the configuration and the volume's lock differ
        self._loads: dict[int, asyncio.Future] = {}  # id(entry) -> the load in progress
        self._reload_lock: asyncio.Lock | None = None
        self.last_reload: dict | None = None
        self._on_volume: tuple[tuple | None, Lock | None] = ((), None)  # the volume's lock file: stamp, content

    def bind(self, observer: Observer) -> None:
        """The layers above, once the app exists (the loads at start are reported to it)."""
        self.observer = observer
        for entry in self.registry.entries:
            if entry.loaded:
                observer.loaded(entry)

    # --- start (before the HTTP server runs; blocking) ---------------------------------------

    def start(self) -> Registry:
        for line in self.drift:
            self.log(f"note: {line}")
        if self.selection.drift and self.follow:
            self.log(
                "note: serving what the volume's lock holds (a reload or the downloader changed it since "
                "this container was created)"
            )
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
                failures.append(
                    f"{entry.id} takes {human_bytes(size)} loaded (measured), more than "
                    f"MODELCACHE_MEMORY_BUDGET ({human_bytes(self.budget)}) on its own"
                )
            elif entry.pinned and kept + size > self.budget:
                failures.append(
                    f"{entry.id} is pinned but the pinned models need {human_bytes(kept + size)} together, "
                    f"more than MODELCACHE_MEMORY_BUDGET ({human_bytes(self.budget)})"
                )
            elif entry.pinned or kept + size <= self.budget:
                kept += size
                continue
            self._stop_worker(entry)
            entry.state = ModelState.UNLOADED
            self.log(f"unloaded {entry.id} ({human_bytes(size)}): it loads again on its first request")
        if failures:
            for entry in entries:
                self._stop_worker(entry)
            raise self._load_error(failures)

    def _start_worker(self, entry: ModelEntry) -> None:
        entry.worker = ModelWorker(worker_spec(self.settings, self.layout, entry))
        entry.state, entry.error = ModelState.LOADING, None
        entry.worker.start()

    def _finish_load(self, entry: ModelEntry) -> str | None:
        """Wait for the entry's worker; on failure, the line that says why."""
        worker = entry.worker
        assert worker is not None
        if not worker.wait_ready():
            entry.state, entry.error = ModelState.FAILED, worker.failure
            return f"{entry.id} ({entry.engine_name}) from {self.layout.rel(worker.spec.load.path)}: {worker.failure}"
        entry.info = dict(worker.info)
        entry.load_seconds = worker.info["load_seconds"]
        entry.load_bytes = worker.memory_bytes()
        entry.state = ModelState.LOADED
        peak = f", {human_bytes(entry.peak_bytes)} at its peak so far" if entry.peak_bytes > entry.load_bytes else ""
        self.log(
            f"loaded {entry.id} ({entry.task}, {entry.engine_name}) on {entry.info.get('device')} in "
            f"{entry.load_seconds:.2f}s (process {worker.pid}, {human_bytes(entry.load_bytes)}{peak})"
        )
        self.observer.loaded(entry)
        return None

    def _stop_worker(self, entry: ModelEntry) -> None:
        if entry.worker is not None:
            entry.worker.stop(grace=2)
            entry.worker = None

    def _load_error(self, failures: list[str]) -> StartupError:
        budget = any("MODELCACHE_MEMORY_BUDGET" in f for f in failures)
        cuda = any("CUDA" in f or "cuda" in f for f in failures) and self.settings.device != "cpu"
        return StartupError(
            f"{len(failures)} model(s) failed to load or do not fit; the service does not start like this",
            details=failures,
            remedy="raise MODELCACHE_MEMORY_BUDGET (or the container's memory), pin fewer models, or configure "
            "smaller ones"
            if budget
            else CUDA_REMEDY
            if cuda
            else LOAD_REMEDY,
        )

    @staticmethod
    def _devices(entries: list[ModelEntry]) -> str:
        devices = {device for e in entries if (device := e.info.get("device")) is not None}
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
        if entry.current_state() is ModelState.LOADED:
            return
        if entry.state is ModelState.FAILED and entry.failed_at is not None:
            wait = LOAD_RETRY_AFTER - (time.monotonic() - entry.failed_at)
            if wait > 0:
                raise Unavailable(
                    f"model {entry.id!r} failed to load ({entry.error}); next try in {wait:.0f}s",
                    retry_after=max(1, int(wait)),
                )
        while entry.state is ModelState.UNLOADING:  # evicted just now: it loads again once its process is gone
            await asyncio.sleep(ROOM_POLL)
        if entry.state is ModelState.RETIRED:
            raise Unavailable(f"model {entry.id!r} is being replaced by a reload; retry")
        if entry.current_state() is ModelState.LOADED:
            return
        pending = self._loads.get(id(entry))
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loads[id(entry)] = pending
            asyncio.get_running_loop().create_task(self._load(entry, pending))
        await asyncio.shield(pending)

    async def _load(self, entry: ModelEntry, done: asyncio.Future) -> None:
        """One load of ``entry`` (every waiting request shares it), making room first."""
        try:
            await self._make_room(entry)
            self._start_worker(entry)
            failure = await asyncio.to_thread(self._finish_load, entry)
            if failure:
                self._stop_worker(entry)
                entry.failed_at = time.monotonic()
                raise Unavailable(
                    f"model {entry.id!r} could not be loaded: {entry.error}", retry_after=LOAD_RETRY_AFTER
                )
            entry.failed_at = None
            if self.budget is not None and entry.load_bytes > self.budget:  # first measured now (new in a reload)
                await asyncio.to_thread(self._stop_worker, entry)
                entry.state = ModelState.UNLOADED
                decision = budget.make_room(
                    entry.id, load=entry.load_bytes, peak=entry.peak_bytes, budget=self.budget, residents=[]
                )
                assert isinstance(decision, budget.Refuse)
                raise NoRoom(f"{decision.reason}; {decision.remedy}", retry_after=None)
            done.set_result(None)
        except BaseException as exc:  # every waiting request gets it
            if entry.state is ModelState.LOADING:
                entry.state = ModelState.FAILED if entry.error else ModelState.UNLOADED
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
                decision = budget.make_room(
                    entry.id,
                    load=entry.load_bytes,
                    peak=entry.peak_bytes,
                    budget=self.budget,
                    residents=self._residents(exclude=entry),
                )
                if isinstance(decision, budget.Fits):
                    return
                if isinstance(decision, budget.Evict):
                    await self.unload(self._by_id(decision.victim), reason="evicted")
                    continue
                if isinstance(decision, budget.Refuse):
                    raise NoRoom(f"{decision.reason}; {decision.remedy}", retry_after=None)
                entry.waiting = decision.reason
                if time.monotonic() >= give_up:
                    raise NoRoom(
                        f"{decision.reason}; retry when they are done", retry_after=self.room_retry_after(entry)
                    )
                await asyncio.sleep(ROOM_POLL)
        finally:
            entry.waiting = None

    def _residents(self, *, exclude: ModelEntry) -> list[budget.Resident]:
        """The models that hold memory now, as the budget sees them."""
        out = []
        for e in self.registry.entries:
            state = e.current_state()
            if e is exclude or state not in IN_MEMORY:
                continue
            busy = max(e.active, self.observer.depth(e))
            out.append(budget.Resident(e.id, e.need_bytes, e.pinned, busy, state.value, e.last_used or 0.0))
        return out

    def _by_id(self, model: str) -> ModelEntry:
        return next(e for e in self.registry.entries if e.id == model)

    def room_retry_after(self, entry: ModelEntry) -> int:
        """Seconds until the models in the way of ``entry`` are likely done: their queues
        times their last call's time, or their last load's time."""
        waits = [1]
        for e in self.registry.entries:
            if e is entry or e.current_state() not in IN_MEMORY:
                continue
            loading = e.state is ModelState.LOADING
            waits.append(int(e.load_seconds + 0.999) if loading else self.observer.retry_after(e))
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
        return budget.oversized(
            entry.id, entry.need_bytes, self.budget, sum(e.need_bytes for e in self.registry.entries)
        )

    def warnings(self) -> list[str]:
        return [w for e in self.registry.entries if (w := self.warning(e))]

    async def unload(self, entry: ModelEntry, *, reason: str = "unloaded") -> None:
        """Stop the entry's worker once its calls in flight are answered."""
        if entry.state not in (ModelState.LOADED, ModelState.FAILED):
            return
        entry.state = ModelState.UNLOADING
        deadline = time.monotonic() + self.settings.request_timeout
        while entry.active and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        held = entry.memory_now()
        worker, entry.worker = entry.worker, None
        if worker is not None:
            await asyncio.to_thread(worker.stop, 2)
        entry.state = ModelState.UNLOADED
        self.log(f"{reason} {entry.id} ({human_bytes(held)} given back)")
        if reason == "evicted":
            self.observer.evicted(entry)

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
                self.observer.reloaded(False)
                self.last_reload = {
                    "ok": False,
                    "trigger": trigger,
                    "error": exc.message,
                    "details": exc.details,
                    "at": time.time(),
                }
                self.log(f"reload ({trigger}) refused, the previous models keep serving: {exc.message}")
                for line in exc.details:
                    self.log(f"  - {line}")
                raise
            report.seconds = time.monotonic() - started
            self.observer.reloaded(True)
            self.last_reload = {"ok": True, "trigger": trigger, **report.to_dict(), "at": time.time()}
            self.log(
                f"reload ({trigger}) in {report.seconds:.2f}s: added {report.added or 'nothing'}, "
                f"removed {report.removed or 'nothing'}, kept {len(report.kept)}"
            )
            return report

    async def _reload(self) -> ReloadReport:
        lock, selection = await asyncio.to_thread(read_new_lock, self.settings, self.layout, self.plan, self.follow)
        missing = subset_missing(selection, follow=self.follow)
        if missing:
            self.drift = missing
            raise subset_refusal(len(self.plan.artifacts), missing)
        if not selection.served:
            raise ReloadError("the new lock holds no model to serve")
        merged = merge(self.registry.entries, servable_entries(selection))
        self._apply_pins(merged.entries, strict=False)
        # without a budget every new model loads now; with one, the pinned ones (the others on first use)
        await self._load_beside(merged.new if self.budget is None else [e for e in merged.new if e.pinned])
        for entry in merged.new:
            self.observer.added(entry)
        self.lock, self.selection = lock, selection
        self.registry = Registry(
            merged.entries, self._devices(merged.entries)
        )  # the swap: new requests see the new set
        self.drift = merged.report.drift = list(selection.drift)
        for entry in merged.retired:
            asyncio.get_running_loop().create_task(self._retire_entry(entry))
        return merged.report

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
                entry.state = ModelState.FAILED
            raise ReloadError(f"{len(failures)} new model(s) failed to load", details=failures)

    async def _retire_entry(self, entry: ModelEntry) -> None:
        """A model no longer served: requests already queued for it or running on it are
        answered by it (new ones see the new set), then its process stops."""
        deadline = time.monotonic() + self.settings.request_timeout
        while (entry.active or self.observer.depth(entry)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        entry.state = ModelState.RETIRED
        if entry.worker is not None:
            await asyncio.to_thread(entry.worker.stop, 2)
            entry.worker = None
        self.observer.retired(entry)

    # --- supervision ------------------------------------------------------------------------

    async def supervise(self, interval: float = 1.0) -> None:
        """Notice model processes that died (killed, out of memory) and restart the ones that
        must stay loaded; the others load again on their next request."""
        while True:
            await asyncio.sleep(interval)
            for entry in self.registry.entries:
                worker = entry.worker
                if worker is None or worker.alive or entry.state not in (ModelState.LOADED, ModelState.FAILED):
                    continue  # only a process that ended under a loaded model
                entry.worker = None
                entry.state, entry.error = ModelState.FAILED, worker.failure
                entry.failed_at = None  # a crash, not a failed load: no waiting before the restart
                self.log(
                    f"{entry.id}: {entry.error}; "
                    + ("restarting it" if entry.pinned else "it loads again on its next request")
                )
                self.observer.died(entry)
                if entry.pinned:
                    asyncio.get_running_loop().create_task(self._restart(entry))

    async def _restart(self, entry: ModelEntry) -> None:
        try:
            await self.ensure_loaded(entry)
        except Exception as exc:  # logged; /health shows the entry as failed
            self.log(f"restarting {entry.id} failed: {exc}")

    # --- the volume's lock --------------------------------------------------------------------

    def volume_drift(self) -> bool:
        """Whether the volume's lock no longer is the one being served: the downloader wrote
        another (other models, revisions or files) and no reload took it, a reload of it was
        refused, or the lock is gone or damaged. Cheap: the file is read again only when its
        inode, size or mtime changed."""
        stamp = _stamp(self.layout.lock_file)
        seen, on_volume = self._on_volume
        if stamp != seen:
            try:
                on_volume = read_lock(self.layout) if stamp is not None else None
            except VerificationError:
                on_volume = None
            self._on_volume = (stamp, on_volume)
        if on_volume is None:
            return True
        served = self.lock
        return (on_volume.plan_digest, on_volume.artifacts) != (served.plan_digest, served.artifacts)

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


def _stamp(path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
