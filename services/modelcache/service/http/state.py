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
    admin_key: str | None = None  # the key of /admin/*; None: model control over HTTP is off
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


def _bearer(request: Request) -> str | None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def _matches(given: str | None, key: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


def require_key(request: Request) -> None:
    key = get_state(request).api_key
    if key is None:
        return
    if not _matches(_bearer(request), key):
        raise ApiError(
            401,
            "missing or invalid API key (send 'Authorization: Bearer <key>')",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


ADMIN_OFF = (
    "model control over HTTP is off: set MODELCACHE_ADMIN_KEY_FILE to a file holding a key of its own "
    "(docs/runbook.md#admin-key) and send it as 'Authorization: Bearer <admin key>'; without one, reload with "
    "SIGHUP (docker compose kill -s HUP model-service) or MODELCACHE_RELOAD=watch"
)


def require_admin(request: Request) -> None:
    """/admin/* answers to the admin key alone: never to the API key, never without a key."""
    state = get_state(request)
    if state.admin_key is None:
        raise ApiError(403, ADMIN_OFF, code="admin_disabled")
    given = _bearer(request)
    if _matches(given, state.admin_key):
        return
    if state.api_key is not None and _matches(given, state.api_key):
        raise ApiError(
            403,
            "the API key does not open /admin/*: send the admin key (the one in MODELCACHE_ADMIN_KEY_FILE)",
            code="admin_key_required",
        )
    raise ApiError(
        401,
        "missing or invalid admin key (send 'Authorization: Bearer <admin key>', the key in MODELCACHE_ADMIN_KEY_FILE)",
        code="invalid_admin_key",
        headers={"WWW-Authenticate": "Bearer"},
    )
