"""The service's shared state: what every route needs (settings, the lifecycle's registry,
the models' handles, metrics), reached from a request. Routes import this module, never
``app.py``; they get a model's handle from :meth:`State.handle` (typed, no casts)."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field

from fastapi import Request

from modelcache.service.http.errors import ApiError
from modelcache.service.http.metrics import Metrics
from modelcache.service.models.entry import ModelEntry, Registry
from modelcache.service.models.lifecycle import Lifecycle
from modelcache.service.serving.handle import Handles, ModelHandle
from modelcache.settings import Settings


@dataclass
class State:
    settings: Settings
    lifecycle: Lifecycle
    metrics: Metrics
    handles: Handles
    api_key: str | None
    started: float = field(default_factory=time.time)
    serving: bool = False  # between the app's start and its shutdown
    realtime_sessions: int = 0  # realtime WebSocket sessions open now

    @property
    def registry(self) -> Registry:
        """The models served now (a reload swaps it in one step)."""
        return self.lifecycle.registry

    @property
    def ready(self) -> bool:
        return self.serving and self.registry.ready

    def handle(self, entry: ModelEntry) -> ModelHandle:
        return self.handles.get(entry)


def get_state(request: Request) -> State:
    return request.app.state.modelcache


def require_key(request: Request) -> None:
    key = get_state(request).api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise ApiError(
            401,
            "missing or invalid API key (send 'Authorization: Bearer <key>')",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
