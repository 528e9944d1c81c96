"""The service's shared state: what every route needs (settings, registry, runners,
metrics), reached from a request. Routes import this module, never ``app.py``."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field

from fastapi import Request

from modelcache.service.errors import ApiError
from modelcache.service.lifecycle import Lifecycle
from modelcache.service.metrics import Metrics
from modelcache.service.registry import ModelEntry, Registry
from modelcache.service.runtime import Batcher, Runner
from modelcache.settings import Settings


@dataclass
class State:
    settings: Settings
    lifecycle: Lifecycle
    metrics: Metrics
    api_key: str | None
    started: float = field(default_factory=time.time)
    serving: bool = False  # between the app's start and its shutdown

    @property
    def registry(self) -> Registry:
        """The models served now (a reload swaps it in one step)."""
        return self.lifecycle.registry

    @property
    def ready(self) -> bool:
        return self.serving and self.registry.ready

    def runner(self, entry: ModelEntry) -> Runner:
        return entry.runner  # type: ignore[return-value]

    def batcher(self, entry: ModelEntry) -> Batcher:
        return entry.batcher  # type: ignore[return-value]

    def image_batcher(self, entry: ModelEntry) -> Batcher:
        return entry.image_batcher  # type: ignore[return-value]


def get_state(request: Request) -> State:
    return request.app.state.modelcache


def require_key(request: Request) -> None:
    key = get_state(request).api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise ApiError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
