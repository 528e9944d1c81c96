"""The FastAPI application: factory, lifespan, routers. Models are loaded before this runs."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from modelcache import __version__
from modelcache.service.faults import ReloadError
from modelcache.service.http import errors
from modelcache.service.http.admission import GROUPS, Admission
from modelcache.service.http.collector import StateCollector
from modelcache.service.http.metrics import Metrics
from modelcache.service.http.middleware import BodyLimit, Requests
from modelcache.service.http.state import State, require_admin, require_key
from modelcache.service.models.entry import ModelEntry
from modelcache.service.models.lifecycle import Lifecycle, Observer
from modelcache.service.serving.handle import Handles
from modelcache.settings import Settings


class AppObserver(Observer):
    """The lifecycle's events, counted in the metrics; models a reload adds or retires get
    or lose their handle; each model's queue depth from its handle."""

    def __init__(self, metrics: Metrics, handles: Handles) -> None:
        self.metrics, self.handles = metrics, handles

    def loaded(self, entry: ModelEntry) -> None:
        self.metrics.loads.labels(entry.id).inc()
        self.metrics.restarts.labels(entry.id)  # at 0 from its first load: a rule's increase() sees the first
        self.metrics.load_seconds.labels(entry.id).set(entry.load_seconds)

    def evicted(self, entry: ModelEntry) -> None:
        self.metrics.evictions.labels(entry.id).inc()

    def reloaded(self, ok: bool) -> None:
        self.metrics.reloads.labels("ok" if ok else "failed").inc()

    def died(self, entry: ModelEntry) -> None:
        self.metrics.restarts.labels(entry.id).inc()

    def added(self, entry: ModelEntry) -> None:
        self.handles.add(entry)

    def retired(self, entry: ModelEntry) -> None:
        asyncio.get_running_loop().create_task(self.handles.drop(entry))

    def depth(self, entry: ModelEntry) -> int:
        return self.handles.depth(entry)

    def retry_after(self, entry: ModelEntry) -> int:
        return self.handles.retry_after(entry)


def create_app(settings: Settings, lifecycle: Lifecycle) -> FastAPI:
    """The app over the lifecycle's models (each running in its worker process when loaded)."""
    from modelcache.service.http.routes import (
        admin,
        audio,
        embeddings,
        faces,
        health,
        images,
        metrics,
        models,
        realtime,
    )

    meter = Metrics()
    handles = Handles(lifecycle, settings, meter)
    state = State(settings, lifecycle, meter, handles, settings.api_key(), settings.admin_key())
    for entry in lifecycle.registry.entries:
        handles.add(entry)
    lifecycle.bind(AppObserver(meter, handles))
    meter.registry.register(StateCollector(state))  # gauges read from the state at each scrape

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        handles.start()
        tasks = _reload_triggers(lifecycle)
        state.serving = True
        try:
            yield
        finally:
            state.serving = False
            for task in tasks:
                task.cancel()
            await handles.stop()

    app = FastAPI(
        title="modelcache model service",
        version=__version__,
        description="OpenAI-compatible speech-to-text and embeddings, image embeddings and face detection; "
        "offline, from a read-only, verified models volume.",
        lifespan=lifespan,
    )
    app.state.modelcache = state
    errors.install(app)
    protected = [Depends(require_key)]
    app.include_router(health.router)
    for module in (models, audio, embeddings, images, faces, metrics):
        app.include_router(module.router, dependencies=protected)
    app.include_router(admin.router, dependencies=[Depends(require_admin)])  # its own key, never the API key
    app.include_router(realtime.router)  # a WebSocket: it checks the key itself
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        Admission,
        limits=lambda: admission_limits(state),
        wait=settings.admission_wait,
        metrics=state.metrics,
        retry_after=lambda group: retry_after(state, group),
    )
    app.add_middleware(Requests, metrics=state.metrics, access_log=settings.access_log)  # outermost
    return app


def _reload_triggers(lifecycle: Lifecycle) -> list[asyncio.Task]:
    """SIGHUP reloads; with MODELCACHE_RELOAD=watch, so does a change of the volume's lock. And
    a supervisor restarts model processes that died."""
    import signal

    loop = asyncio.get_running_loop()

    async def on_signal() -> None:
        try:
            await lifecycle.reload(trigger="SIGHUP")
        except ReloadError:
            pass  # logged; the previous models keep serving

    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(on_signal()))
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no SIGHUP here
        pass
    tasks = [loop.create_task(lifecycle.supervise())]
    if lifecycle.settings.reload == "watch":
        tasks.append(loop.create_task(lifecycle.watch()))
    return tasks


def _group_models(state: State, group: str) -> list:
    tasks = ("text-embedding", "image-embedding") if group == "embeddings" else (group,)
    return [e for e in state.registry.entries if e.task in tasks]


def admission_limits(state: State) -> dict[str, int]:
    """Each route group admits as many requests as its models' queues hold."""
    groups = set(GROUPS.values())
    return {g: state.settings.queue_size * len(_group_models(state, g)) for g in groups}


def retry_after(state: State, group: str) -> int:
    return max((state.handles.retry_after(e) for e in _group_models(state, group)), default=1)
