"""Health: /health (details), /health/live (process up), /health/ready (every model loaded)."""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from modelcache.service.state import get_state

router = APIRouter(tags=["health"])


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def total_rss(state) -> int:
    """This process and every model's worker process."""
    return rss_bytes() + sum(e.worker.rss_bytes() for e in state.registry.entries if e.worker is not None)


@router.get("/health", responses={503: {"description": "Not every model is loaded"}})
def health(request: Request) -> JSONResponse:
    state = get_state(request)
    ready = state.ready and state.registry.loaded
    body = {
        "status": "ok" if ready else "loading",
        "models_loaded": [e.id for e in state.registry.entries if e.loaded],
        "device": state.registry.device,
        "memory_used_gb": round(total_rss(state) / 1024**3, 3),
        "uptime_seconds": round(time.time() - state.started, 1),
        "load_seconds": {e.id: round(e.load_seconds, 3) for e in state.registry.entries},
        "models": {
            e.id: {"state": "loaded" if e.loaded else "failed", "pid": e.worker.pid if e.worker else None,
                   "memory_bytes": e.worker.rss_bytes() if e.worker else 0}
            for e in state.registry.entries
        },  # fmt: skip
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/health/live")
def live() -> dict:
    return {"status": "alive"}


@router.get("/health/ready", responses={503: {"description": "Not every model is loaded"}})
def ready(request: Request) -> JSONResponse:
    state = get_state(request)
    ok = state.ready and state.registry.loaded
    return JSONResponse({"status": "ready" if ok else "not ready"}, status_code=200 if ok else 503)
