"""Health: /health (details), /health/live (process up), /health/ready (every model loaded)."""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from modelcache.service.http.state import get_state
from modelcache.service.models import zygote
from modelcache.service.models.worker import memory_of

router = APIRouter(tags=["health"])


def total_memory(state, zygote_bytes: int) -> int:
    """This process, the zygote the torch models' processes are forked from, and every
    model's process, each by its proportional set size: shared pages counted once in all."""
    return memory_of(os.getpid()) + zygote_bytes + sum(e.pss_now() for e in state.registry.entries)


@router.get("/health", responses={503: {"description": "A model that must be loaded is not"}})
def health(request: Request) -> JSONResponse:
    state = get_state(request)
    ready = state.ready
    lifecycle = state.lifecycle
    entries = state.registry.entries
    zygote_pid = zygote.pid()
    zygote_bytes = memory_of(zygote_pid)
    body = {
        "status": "ok" if ready else "loading",
        "models_loaded": [e.id for e in entries if e.loaded],
        "device": state.registry.device,
        "memory_used_gb": round(total_memory(state, zygote_bytes) / 1024**3, 3),
        "zygote": {"pid": zygote_pid, "memory_bytes": zygote_bytes} if zygote_pid else None,
        "memory_budget_gb": round(lifecycle.budget / 1024**3, 3) if lifecycle.budget else None,
        "uptime_seconds": round(time.time() - state.started, 1),
        "load_seconds": {e.id: round(e.load_seconds, 3) for e in entries},
        "models": {
            e.id: {
                "state": e.current_state(),
                "pinned": e.pinned,
                "pid": e.worker.pid if e.worker else None,
                "memory_bytes": e.memory_now(),
                "load_bytes": e.load_bytes,
                "peak_bytes": e.peak_bytes,
                "last_used": e.last_used,
                "revision": e.revision,
                "load_seconds": round(e.load_seconds, 3),
                **({"error": e.error} if e.error else {}),
                **({"warning": w} if (w := lifecycle.warning(e)) else {}),
            }
            for e in entries
        },
        "warnings": lifecycle.warnings(),
        "drift": lifecycle.drift,
        "last_reload": lifecycle.last_reload,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/health/live")
def live() -> dict:
    return {"status": "alive"}


@router.get("/health/ready", responses={503: {"description": "A model that must be loaded is not"}})
def ready(request: Request) -> JSONResponse:
    ok = get_state(request).ready
    return JSONResponse({"status": "ready" if ok else "not ready"}, status_code=200 if ok else 503)
