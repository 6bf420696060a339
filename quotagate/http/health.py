"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from quotagate.errors import BackendUnavailable
from quotagate.http.context import Context, context
from quotagate.http.routing import JsonBodyRoute
from quotagate.store.health_repo import ping

router = APIRouter(route_class=JsonBodyRoute, tags=["health"])


class Health(BaseModel):
    status: str
    config_version: int | None = None
    reason: str | None = None


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health, "description": "not ready"}})
async def readyz(ctx: Annotated[Context, Depends(context)]) -> Health | JSONResponse:
    """Ready when the database answers and the configuration snapshot is current."""
    try:
        await asyncio.to_thread(ping, ctx.db)
    except BackendUnavailable:
        return JSONResponse(Health(status="unavailable", reason="database unreachable").model_dump(), status_code=503)
    if ctx.runtime.config.failures:
        body = Health(status="unavailable", reason="configuration refresh failing", config_version=ctx.snapshot.version)
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ready", config_version=ctx.snapshot.version)
