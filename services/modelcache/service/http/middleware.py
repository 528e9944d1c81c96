"""ASGI middleware: the body-size limit (413 before the body is read), and each request's id,
metrics and log line."""

from __future__ import annotations

import json
import re
import time
import uuid

from starlette.exceptions import HTTPException as StarletteHTTPException

from modelcache import logs
from modelcache.service.http.admission import GROUPS
from modelcache.service.http.errors import error_body
from modelcache.service.http.metrics import Metrics


async def _send_json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _TooLarge(StarletteHTTPException):
    """An HTTP error (not a parse error), so FastAPI's body parsing passes it through as 413."""

    code = "body_too_large"

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class BodyLimit:
    """Refuse bodies over ``max_bytes``: at once from Content-Length, or while streaming."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> dict:
        mib = self.max_bytes / 1024 / 1024
        return error_body(
            413, f"request body is larger than the limit of {mib:g} MiB (MODELCACHE_MAX_BODY_MB)", code="body_too_large"
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                return await _send_json(send, 400, error_body(400, "invalid Content-Length header"))
            if too_big:
                return await _send_json(send, 413, self._message())
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self._message()["error"]["message"])
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, self._message())


REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
QUIET = ("/health", "/health/live", "/health/ready", "/metrics")  # probes and scrapes: logged only when they fail


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-Id when it is a sane token (at most 128 characters, no spaces or
    quotes), else a new one: a caller's id ties our lines to its own, never breaks a log line."""
    for name, value in headers:
        if name == b"x-request-id":
            given = value.decode("latin-1").strip()
            if REQUEST_ID.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex


class Requests:
    """Outermost: gives each HTTP request an id (X-Request-Id, taken or made, and returned on
    every answer, refusals at the door included), opens its log scope, and when it is
    answered counts it in the metrics and writes its line."""

    def __init__(self, app, metrics: Metrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = request_id_of(scope.get("headers") or [])
        started = time.perf_counter()
        status = 500

        async def tagged_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        with logs.request_scope(request_id) as fields:
            try:
                await self.app(scope, receive, tagged_send)
            finally:
                seconds = time.perf_counter() - started
                route = getattr(scope.get("route"), "path", None)
                # a request refused before routing (429 at the door) still counts under its route
                label = route or (scope["path"] if scope["path"] in GROUPS else "unmatched")
                self.metrics.requests.labels(label, scope["method"], str(status)).inc()
                self.metrics.latency.labels(label).observe(seconds)
                if self.access_log and (status >= 400 or scope["path"] not in QUIET):
                    ms = round(seconds * 1000, 1)
                    model = f" {fields['model']}" if "model" in fields else ""
                    logs.log(
                        f"{scope['method']} {scope['path']} {status} {ms} ms{model}",
                        event="request",
                        level="warning" if status >= 500 else "info",
                        route=route or scope["path"],
                        method=scope["method"],
                        status=status,
                        duration_ms=ms,
                    )
