"""Model management while serving: reload from the volume's lock, load and unload one model.

Behind a key of its own (MODELCACHE_ADMIN_KEY_FILE, ``state.require_admin``); off without one."""

from __future__ import annotations

from fastapi import APIRouter, Request

from modelcache.service.faults import ReloadError
from modelcache.service.http.errors import ApiError
from modelcache.service.http.routes.common import ERRORS, known_model
from modelcache.service.http.state import get_state

router = APIRouter(tags=["admin"])

ADMIN_ERRORS: dict[int | str, dict] = {
    401: {"description": "Missing or invalid admin key"},
    403: {"description": "Model control is off (no MODELCACHE_ADMIN_KEY_FILE), or the API key was sent"},
    404: ERRORS[404],
    409: {"description": "Not possible in the model's state"},
    503: ERRORS[503],
}


@router.post(
    "/admin/reload",
    responses={
        401: ADMIN_ERRORS[401],
        403: ADMIN_ERRORS[403],
        409: {"description": "The new lock was refused; the previous models keep serving"},
    },
)
async def reload(request: Request) -> dict:
    """Serve what the volume's lock holds now (after the downloader wrote a new one)."""
    try:
        report = await get_state(request).lifecycle.reload(trigger="api")
    except ReloadError as exc:
        raise ApiError(
            409,
            f"{exc.message}; the previous models keep serving" + ("".join(f"; {d}" for d in exc.details[:5])),
            code="reload_refused",
        ) from None
    return {"object": "reload", **report.to_dict()}


@router.post("/admin/models/{model_id:path}/load", responses=ADMIN_ERRORS)
async def load(model_id: str, request: Request) -> dict:
    """Load a model now (unloading least recently used ones when a memory budget needs room)."""
    entry = known_model(get_state(request), model_id)
    await get_state(request).lifecycle.ensure_loaded(entry)  # NoRoom, Unavailable: 503 (http/errors.py)
    return entry.describe()


@router.post("/admin/models/{model_id:path}/unload", responses=ADMIN_ERRORS)
async def unload(model_id: str, request: Request) -> dict:
    """Unload a model once its calls in flight are answered; its next request loads it again."""
    entry = known_model(get_state(request), model_id)
    lifecycle = get_state(request).lifecycle
    if entry.pinned:
        why = (
            "it is pinned (MODELCACHE_PIN)"
            if lifecycle.budget
            else "without MODELCACHE_MEMORY_BUDGET every model stays loaded"
        )
        raise ApiError(409, f"the model '{model_id}' stays loaded: {why}", code="pinned")
    await lifecycle.unload(entry)
    return entry.describe()
