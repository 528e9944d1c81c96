"""The FastAPI application: factory, lifespan, routers. Models are loaded before this runs."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from modelcache import __version__
from modelcache.service import errors
from modelcache.service.admission import GROUPS, Admission
from modelcache.service.metrics import Metrics
from modelcache.service.middleware import BodyLimit, RequestMetrics
from modelcache.service.registry import Registry
from modelcache.service.runtime import Batcher, Runner
from modelcache.service.state import State, require_key
from modelcache.settings import Settings


def create_app(settings: Settings, registry: Registry) -> FastAPI:
    """The app over loaded models (each running in its worker process)."""
    from modelcache.service.routes import audio, embeddings, faces, health, images, metrics, models

    state = State(settings, registry, Metrics(), settings.api_key())
    for entry in registry.entries:
        state.metrics.load_seconds.labels(entry.id).set(entry.load_seconds)
        assert entry.worker is not None
        runner = Runner(entry.id, entry.worker, queue_size=settings.queue_size, timeout=settings.request_timeout,
                        metrics=state.metrics)  # fmt: skip
        state.runners[entry.id] = runner
        wait = settings.batch_wait_ms / 1000
        if entry.task in ("text-embedding", "image-embedding"):
            state.batchers[entry.id] = Batcher(runner, "embed", max_batch=settings.batch_max, max_wait=wait)
        if entry.task == "image-embedding":
            state.image_batchers[entry.id] = Batcher(runner, "embed_images", max_batch=settings.batch_max,
                                                     max_wait=wait)  # fmt: skip

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        for batcher in (*state.batchers.values(), *state.image_batchers.values()):
            batcher.start()
        state.ready = registry.loaded
        try:
            yield
        finally:
            state.ready = False
            for batcher in (*state.batchers.values(), *state.image_batchers.values()):
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
    for module in (models, audio, embeddings, images, faces, metrics):
        app.include_router(module.router, dependencies=protected)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Admission, limits=admission_limits(state), wait=settings.admission_wait,
                       metrics=state.metrics, retry_after=lambda group: retry_after(state, group))  # fmt: skip
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    return app


def _group_models(state: State, group: str) -> list:
    tasks = ("text-embedding", "image-embedding") if group == "embeddings" else (group,)
    return [e for e in state.registry.entries if e.task in tasks]


def admission_limits(state: State) -> dict[str, int]:
    """Each route group admits as many requests as its models' queues hold."""
    groups = set(GROUPS.values())
    return {g: state.settings.queue_size * len(_group_models(state, g)) for g in groups}


def retry_after(state: State, group: str) -> int:
    return max((state.runners[e.id].retry_after() for e in _group_models(state, group)), default=1)
