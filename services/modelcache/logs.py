"""Log lines of both containers, on stderr: text (``modelcache: <message>``, for people) or,
with ``MODELCACHE_LOG_FORMAT=json``, one JSON object a line (for log shippers):

    {"time": "2026-12-04T07:12:03.512Z", "level": "info", "event": "request", "message": "POST /v1/embeddings 200 4.1 ms",
     "request_id": "9f1c…", "route": "/v1/embeddings", "method": "POST", "status": 200, "duration_ms": 4.1, "model": "…"}

A line written while a request is being answered carries that request's fields (its
``request_id``, and the ``model`` once a route knows it): the HTTP layer opens the request
with :func:`request_scope` and routes add fields with :func:`bind`. Python's ``logging``
(libraries, uvicorn, ``warnings``) goes through the same writer once :func:`configure` ran.
Standard library only: the gate and the downloader use it before anything heavy loads.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelcache.errors import ModelcacheError

FORMATS = ("text", "json")
VARIABLE = "MODELCACHE_LOG_FORMAT"

_format = "text"
_request: ContextVar[dict[str, Any] | None] = ContextVar("modelcache_request", default=None)


def configure(env: Mapping[str, str] | None = None) -> str:
    """Take the format from ``MODELCACHE_LOG_FORMAT`` (a wrong value leaves text: the settings
    then refuse it with a clear error) and send Python's logging through :func:`log`."""
    global _format
    value = (os.environ if env is None else env).get(VARIABLE, "").strip()
    _format = value if value in FORMATS else "text"
    root = logging.getLogger()
    root.handlers = [_Handler()]
    root.setLevel(logging.WARNING)
    logging.getLogger("modelcache").setLevel(logging.INFO)
    logging.captureWarnings(True)
    return _format


def capture_native_output() -> None:
    """JSON format: make file descriptor 2 a pipe whose lines come out as JSON objects (event
    ``stderr``), so that what native libraries (OpenCV, ONNX Runtime, CTranslate2) and child
    processes write there keeps the one-object-a-line promise. Lines that already are our JSON
    objects (a child's log lines) pass unchanged. Only the program's entry point calls it."""
    if _format != "json":
        return
    sys.stderr.flush()
    original = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = original  # Python's own lines go straight out; only raw bytes on fd 2 are wrapped

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                if text.strip():
                    original.write((text if _is_record(text) else line(text, event="stderr", level="warning")) + "\n")

    threading.Thread(target=pump, name="stderr-lines", daemon=True).start()


def _is_record(text: str) -> bool:
    if not text.startswith("{"):
        return False
    try:
        record = json.loads(text)
    except ValueError:
        return False
    return isinstance(record, dict) and "event" in record and "time" in record


def json_lines() -> bool:
    return _format == "json"


def log(
    message: str,
    *,
    event: str = "log",
    level: str = "info",
    stream: IO[str] | None = None,
    prefix: bool = True,
    **fields: Any,
) -> None:
    """One line: ``modelcache: <message>`` (``prefix=False``: the message alone, as progress
    and summary lines always were) or a JSON object with ``fields`` and the request's."""
    print(line(message, event=event, level=level, prefix=prefix, **fields), file=stream or sys.stderr, flush=True)


def line(message: str, *, event: str = "log", level: str = "info", prefix: bool = True, **fields: Any) -> str:
    request = _request.get()
    if _format == "json":
        record: dict[str, Any] = {"time": _now(), "level": level, "event": event, "message": message}
        record.update(request or {})
        record.update({k: v for k, v in fields.items() if v is not None})
        return json.dumps(record, ensure_ascii=False, default=str)
    suffix = f" (request {request['request_id']})" if request and "request_id" in request else ""
    return f"modelcache: {message}{suffix}" if prefix else f"{message}{suffix}"


def error(exc: ModelcacheError, stream: IO[str] | None = None) -> None:
    """A typed error as the CLI and the service end with it: its text block, or one JSON line
    with the message, each detail, the remedy and the exit code."""
    if _format != "json":
        print(exc.render(), file=stream or sys.stderr, flush=True)
        return
    log(
        exc.message,
        event="error",
        level="error",
        stream=stream,
        error=exc.title,
        details=list(exc.details) or None,
        remedy=exc.remedy or None,
        exit_code=exc.exit_code,
    )


@contextmanager
def request_scope(request_id: str) -> Iterator[dict[str, Any]]:
    """The fields every line written while this request is answered carries."""
    fields: dict[str, Any] = {"request_id": request_id}
    token = _request.set(fields)
    try:
        yield fields
    finally:
        _request.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current request's lines (no-op outside a request)."""
    request = _request.get()
    if request is not None:
        request.update(fields)


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class _Handler(logging.Handler):
    """Python logging records as our lines: the logger's name as the event."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            level = record.levelname.lower()
            if _format == "json":
                log(message, event=record.name, level=level)
            else:
                prefix = "" if record.levelno < logging.WARNING else f"{level}: "
                print(line(f"{prefix}{message}"), file=sys.stderr, flush=True)
        except Exception:  # a log line must never take the process down
            self.handleError(record)
