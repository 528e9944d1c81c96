"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}: how each
fault of the service (``faults.py``) is answered over HTTP, and :class:`ApiError` for
refusals the routes make themselves."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelcache.service.faults import Busy, ClientGone, InputError, ModelFailed, TimedOut, Unavailable

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error"), "param": param, "code": code}}


def error_response(status: int, message: str, *, param=None, code=None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def fault(exc: Exception) -> tuple[int, str, str | None]:
    """How a fault of the service is answered: its status, message and code."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message, exc.code
    if isinstance(exc, InputError):
        return (415, str(exc), "unsupported_media") if exc.unsupported_media else (400, str(exc), "invalid_input")
    if isinstance(exc, Busy):
        return 429, str(exc), "queue_full"
    if isinstance(exc, TimedOut):
        return 504, str(exc), "timeout"
    if isinstance(exc, Unavailable):
        return 503, str(exc), exc.code
    if isinstance(exc, ClientGone):  # nobody reads this answer; 499 (as nginx logs it) keeps it apart in the metrics
        return 499, str(exc), "client_closed_request"
    if isinstance(exc, ModelFailed):
        return 500, f"the model failed on this input: {exc}", "model_error"
    return 500, f"internal error: {exc.__class__.__name__}", "internal_error"


def error_event(exc: Exception) -> dict:
    """A fault as the ``error`` event that ends a stream (the answer's status was sent already)."""
    status, message, code = fault(exc)
    return {"type": "error", **error_body(status, message, getattr(exc, "param", None), code)}


def _param(loc) -> str | None:
    """The field a validation error is about, as a client names it: ``input``, ``input[2]``
    (pydantic's names for the branches of a union, such as ``constrained-str``, left out)."""
    name = ""
    for part in loc:
        if part in ("body", "query", "form"):
            continue
        if isinstance(part, int):
            name += f"[{part}]"
        elif not name:
            name = str(part)
        elif not any(c in str(part) for c in "[]-"):  # a nested field, not a union branch
            name += f".{part}"
    return name or None


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, param=exc.param, code=exc.code, headers=exc.headers)

    @app.exception_handler(InputError)
    @app.exception_handler(Busy)
    @app.exception_handler(TimedOut)
    @app.exception_handler(Unavailable)
    @app.exception_handler(ClientGone)
    @app.exception_handler(ModelFailed)
    async def _fault(_request: Request, exc: Exception) -> JSONResponse:
        status, message, code = fault(exc)
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return error_response(status, message, code=code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        # of a union's failed branches, the one that reached into the value (input[1]) says most
        first = next(
            (e for e in errors if any(isinstance(p, int) for p in e.get("loc", ()))), errors[0] if errors else {}
        )
        if first.get("type") == "json_invalid":
            return error_response(400, "the body is not valid JSON", code="invalid_json")
        message = first.get("msg", "invalid request").removeprefix("Value error, ")
        param = _param(first.get("loc", ()))
        return error_response(400, f"{param}: {message}" if param else message, param=param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            exc.status_code, str(exc.detail), code=getattr(exc, "code", None), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _bug(_request: Request, exc: Exception) -> JSONResponse:
        status, message, code = fault(exc)
        return error_response(status, message, code=code)
