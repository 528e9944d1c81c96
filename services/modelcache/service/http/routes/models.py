"""The model registry in OpenAI's list shape, plus task, engine, revision, bytes, load time."""

from __future__ import annotations

from fastapi import APIRouter, Request

from modelcache.service.http.routes.common import ERRORS, known_model
from modelcache.service.http.state import get_state

router = APIRouter(tags=["models"])


@router.get("/v1/models", responses={401: ERRORS[401]})
def list_models(request: Request) -> dict:
    return {"object": "list", "data": [e.describe() for e in get_state(request).registry.entries]}


@router.get("/v1/models/{model_id:path}", responses={401: ERRORS[401], 404: ERRORS[404]})
def get_model(model_id: str, request: Request) -> dict:
    return known_model(get_state(request), model_id).describe()
