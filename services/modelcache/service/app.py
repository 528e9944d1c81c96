"""The FastAPI application: factory, lifespan, routers. Models are loaded before this runs."""

from __future__ import annotations

from concurrent.futures import Executor
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from modelcache import __version__
from modelcache.service import errors
from modelcache.service.metrics import Metrics
from modelcache.service.middleware import BodyLimit, RequestMetrics
from modelcache.service.registry import Registry
from modelcache.service.runtime import Batcher, Runner
from modelcache.service.state import State, require_key
from modelcache.settings import Settings


def create_app(settings: Settings, registry: Registry, executor: Executor | None = None) -> FastAPI:
    """The app over loaded models; ``executor`` runs inference (None: a thread per model)."""
    from modelcache.service.routes import audio, embeddings, faces, health, images, metrics, models

    state = State(settings, registry, Metrics(), settings.api_key())
    for entry in registry.entries:
        state.metrics.load_seconds.labels(entry.id).set(entry.load_seconds)
        runner = Runner(entry.id, queue_size=settings.queue_size, timeout=settings.request_timeout,
                        metrics=state.metrics, executor=executor)  # fmt: skip
        state.runners[entry.id] = runner
        if entry.task in ("text-embedding", "image-embedding"):
            state.batchers[entry.id] = Batcher(
                runner, entry.engine.embed, max_batch=settings.batch_max, max_wait=settings.batch_wait_ms / 1000
            )

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        for batcher in state.batchers.values():
            batcher.start()
        state.ready = registry.loaded
        try:
            yield
        finally:
            state.ready = False
            for batcher in state.batchers.values():
                await batcher.stop()
            for runner in state.runners.values():
                runner.close()

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
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    return app
