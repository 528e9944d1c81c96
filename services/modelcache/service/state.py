"""The service's shared state: what every route needs (settings, registry, runners,
metrics), reached from a request. Routes import this module, never ``app.py``."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field

from fastapi import Request

from modelcache.service.errors import ApiError
from modelcache.service.metrics import Metrics
from modelcache.service.registry import ModelEntry, Registry
from modelcache.service.runtime import Batcher, Runner
from modelcache.settings import Settings


@dataclass
class State:
    settings: Settings
    registry: Registry
    metrics: Metrics
    api_key: str | None
    started: float = field(default_factory=time.time)
    runners: dict[str, Runner] = field(default_factory=dict)
    batchers: dict[str, Batcher] = field(default_factory=dict)  # texts (text and image-text models)
    image_batchers: dict[str, Batcher] = field(default_factory=dict)  # images (image-embedding models)
    ready: bool = False

    def runner(self, entry: ModelEntry) -> Runner:
        return self.runners[entry.id]

    def batcher(self, entry: ModelEntry) -> Batcher:
        return self.batchers[entry.id]

    def image_batcher(self, entry: ModelEntry) -> Batcher:
        return self.image_batchers[entry.id]


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
