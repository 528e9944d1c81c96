"""Helpers every router uses: find a model for a task, read uploads, decode base64."""

from __future__ import annotations

import base64
import binascii

from fastapi import UploadFile
from pydantic import BaseModel

from modelcache import logs
from modelcache.service.http.errors import ApiError
from modelcache.service.http.state import State
from modelcache.service.models.entry import ModelEntry


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error, in OpenAI's shape."""

    error: ErrorDetail


def _error(description: str) -> dict:
    return {"model": ErrorBody, "description": description}


#: the error answers every inference route may give (declared in the OpenAPI schema)
ERRORS: dict[int | str, dict] = {
    400: _error("Invalid request (a field, the JSON, an input)"),
    401: _error("Missing or invalid API key"),
    404: _error("No such model"),
    413: _error("Body over MODELCACHE_MAX_BODY_MB"),
    415: _error("Media that cannot be decoded"),
    429: _error("Every queue for this route is full: retry after Retry-After seconds"),
    500: _error("The model failed on this input"),
    503: _error("The model is not running"),
    504: _error("The request ran past MODELCACHE_REQUEST_TIMEOUT and was stopped"),
}


def known_model(state: State, model_id: str) -> ModelEntry:
    """The served model with this id or alias (404 if none), whatever its task."""
    entry = state.registry.get(model_id)
    if entry is None:
        raise ApiError(404, f"the model '{model_id}' does not exist here", param="model", code="model_not_found")
    logs.bind(model=entry.id)
    return entry


def find_model(state: State, name: str | None, task: str | tuple[str, ...], *, param: str = "model") -> ModelEntry:
    """The model called ``name`` (404 if unknown) that can do ``task`` (400 if not).

    With no name and exactly one model for the task, that model.
    """
    tasks = (task,) if isinstance(task, str) else task
    registry = state.registry
    if not name:
        candidates = [e for t in tasks for e in registry.by_task(t)]
        if len(candidates) == 1:
            return candidates[0]
        raise ApiError(400, f"'{param}' is required", param=param, code="missing_model")
    entry = registry.get(name)
    if entry is None:
        known = ", ".join(e.id for e in registry.entries)
        raise ApiError(
            404, f"the model '{name}' does not exist here; models: {known}", param=param, code="model_not_found"
        )
    if entry.task not in tasks:
        raise ApiError(
            400,
            f"the model '{name}' is a {entry.task} model; this endpoint needs {' or '.join(tasks)}",
            param=param,
            code="wrong_task",
        )
    logs.bind(model=entry.id)
    return entry


async def read_upload(upload: UploadFile | None, *, param: str = "file") -> bytes:
    if upload is None:
        raise ApiError(400, f"'{param}' is required", param=param)
    data = await upload.read()
    if not data:
        raise ApiError(400, f"the uploaded '{param}' is empty", param=param, code="empty_file")
    return data


def decode_base64(value: str, *, param: str) -> bytes:
    text = value.strip()
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    if text.startswith(("http://", "https://")):
        raise ApiError(
            400,
            f"'{param}': URLs are not fetched (the service is offline); send the bytes",
            param=param,
            code="url_not_supported",
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"'{param}' is not valid base64", param=param, code="invalid_base64") from None
    if not data:
        raise ApiError(400, f"'{param}' is empty", param=param, code="empty_file")
    return data
