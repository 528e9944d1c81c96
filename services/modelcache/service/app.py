"""The FastAPI application: factory, lifespan, routers. Models are loaded before this runs."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from modelcache import __version__
from modelcache.service import errors
from modelcache.service.admission import GROUPS, Admission
from modelcache.service.metrics import Metrics
from modelcache.service.middleware import BodyLimit, RequestMetrics
from modelcache.service.lifecycle import Lifecycle
from modelcache.service.registry import ModelEntry
from modelcache.service.runtime import Batcher, Runner
from modelcache.service.state import State, require_key
from modelcache.settings import Settings


def create_app(settings: Settings, lifecycle: Lifecycle) -> FastAPI:
    """The app over the lifecycle's models (each running in its worker process when loaded)."""
    from modelcache.service.routes import admin, audio, embeddings, faces, health, images, metrics, models

    state = State(settings, lifecycle, Metrics(), settings.api_key())
    started: list[bool] = []  # the batchers of entries attached later start at once

    def attach(entry: ModelEntry) -> None:
        """Give a model its queue and batchers (at start, and for models a reload adds)."""
        state.metrics.load_seconds.labels(entry.id).set(entry.load_seconds)
        entry.runner = Runner(entry, lifecycle, queue_size=settings.queue_size, timeout=settings.request_timeout,
                              metrics=state.metrics, wait=settings.admission_wait)  # fmt: skip
        wait = settings.batch_wait_ms / 1000
        if entry.task in ("text-embedding", "image-embedding"):
            entry.batcher = Batcher(entry.runner, "embed", max_batch=settings.batch_max, max_wait=wait)
        if entry.task == "image-embedding":
            entry.image_batcher = Batcher(entry.runner, "embed_images", max_batch=settings.batch_max, max_wait=wait)
        if started:
            for batcher in _batchers(entry):
                batcher.start()

    def retire(entry: ModelEntry) -> None:
        """A model no longer served: its batchers stop (its process already did)."""
        for batcher in _batchers(entry):
            asyncio.get_running_loop().create_task(batcher.stop())

    lifecycle.bind(state.metrics, attach, retire)
    for entry in lifecycle.registry.entries:
        attach(entry)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        started.append(True)
        for entry in lifecycle.registry.entries:
            for batcher in _batchers(entry):
                batcher.start()
        tasks = _reload_triggers(lifecycle)
        state.serving = True
        try:
            yield
        finally:
            state.serving = False
            for task in tasks:
                task.cancel()
            for entry in lifecycle.registry.entries:
                for batcher in _batchers(entry):
                    await batcher.stop()

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
    for module in (models, audio, embeddings, images, faces, metrics, admin):
        app.include_router(module.router, dependencies=protected)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Admission, limits=lambda: admission_limits(state), wait=settings.admission_wait,
                       metrics=state.metrics, retry_after=lambda group: retry_after(state, group))  # fmt: skip
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    return app


def _batchers(entry: ModelEntry) -> list[Batcher]:
    return [b for b in (entry.batcher, entry.image_batcher) if b is not None]  # type: ignore[misc]


def _reload_triggers(lifecycle: Lifecycle) -> list[asyncio.Task]:
    """SIGHUP reloads; with MODELCACHE_RELOAD=watch, so does a change of the volume's lock. And
    a supervisor restarts model processes that died."""
    import signal

    from modelcache.service.lifecycle import ReloadError

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
    return max((e.runner.retry_after() for e in _group_models(state, group) if e.runner is not None), default=1)
