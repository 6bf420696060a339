"""GET /metrics: this process's Prometheus metrics (each worker serves its own)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from quotagate.http.routing import JsonBodyRoute
from quotagate.metrics import REGISTRY, SPOOLED

router = APIRouter(route_class=JsonBodyRoute, tags=["health"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics of this process")
def metrics(request: Request) -> Response:
    runtime = request.app.state.context.runtime
    SPOOLED.set(runtime.writer.depth())
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
