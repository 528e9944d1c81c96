"""Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelcache.service.state import get_state

router = APIRouter(tags=["metrics"])


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(get_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
