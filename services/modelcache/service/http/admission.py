"""Admission before the body is read: the cheap half of overload handling.

Each inference route belongs to a group of models (speech, embeddings, image embeddings,
faces) whose queues hold at most ``limit`` requests between them. This ASGI middleware
lets that many requests in; up to as many more wait, in arrival order, for a slot to free
up (at most ``MODELCACHE_ADMISSION_WAIT_MS``); the rest get 429 with Retry-After at once,
before their body is read or parsed. A refusal then costs a few microseconds of the
event loop instead of a body, a validation and an exception; and since a freed slot goes
to the request that waited longest, clients that retry at once cannot starve the ones
already waiting. Measured effect: docs/benchmarks.md (128 clients retrying at once).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from modelcache.service.http.errors import error_body
from modelcache.service.http.metrics import Metrics
from modelcache.service.serving.fifo import FifoGate

#: route -> group of models it admits for
GROUPS = {
    "/v1/audio/transcriptions": "speech-to-text",
    "/v1/audio/translations": "speech-to-text",
    "/v1/embeddings": "embeddings",
    "/v1/images/embeddings": "image-embedding",
    "/v1/faces/detect": "face-detection",
}


class Admission:
    def __init__(
        self,
        app,
        *,
        limits: Callable[[], dict[str, int]],
        wait: float,
        metrics: Metrics,
        retry_after: Callable[[str], int],
    ) -> None:
        self.app = app
        self.limits = limits  # asked again on each request: a reload may change the models
        self.gates = {group: FifoGate(limit) for group, limit in limits().items()}
        self.wait = wait
        self.metrics = metrics
        self.retry_after = retry_after

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        group = GROUPS.get(scope["path"])
        gate = self.gates.get(group) if group is not None else None
        if group is None or gate is None:
            return await self.app(scope, receive, send)
        gate.limit = self.limits().get(group, 0)
        if gate.limit <= 0:  # no model for this route: the route answers (404/400) by itself
            return await self.app(scope, receive, send)
        if not await gate.enter(self.wait):
            return await self._refuse(scope, send, group)
        try:
            await self.app(scope, receive, send)
        finally:
            gate.leave()

    async def _refuse(self, scope, send, group: str) -> None:
        self.metrics.shed.labels(scope["path"]).inc()
        retry = self.retry_after(group)
        body = orjson.dumps(error_body(429, f"every {group} model is busy: come back in {retry}s", code="queue_full"))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry).encode()),
        ]
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > 65536:  # a large unread body: do not keep the connection
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
