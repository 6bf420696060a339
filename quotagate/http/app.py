"""The admin and portal HTTP API: an ASGI app over a running gateway runtime, and a helper to serve it.

Envoy routes ``/api/*``, ``/admin/*`` and ``/v1/models`` here; ``/v1/sub-accounts`` too. The app shares the
process's runtime (snapshot, counters, store) with the gateway, so a change made here is enforced by
this process before the response, and by every other within a config poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from quotagate.http import (
    admin_alerts,
    admin_credits,
    admin_keys,
    admin_manifest,
    admin_me,
    admin_quotas,
    admin_tenancy,
    admin_upstreams,
    admin_usage,
    dashboard,
    dashboard_api,
    errors,
    health,
    metrics_endpoint,
    portal,
    sub_accounts,
)
from quotagate.http.context import Context
from quotagate.runtime import GatewayRuntime

ROUTERS = (
    health.router,
    metrics_endpoint.router,
    portal.router,
    sub_accounts.router,
    admin_me.router,
    admin_tenancy.router,
    admin_quotas.router,
    admin_keys.router,
    admin_credits.router,
    admin_usage.router,
    admin_upstreams.router,
    admin_alerts.router,
    admin_manifest.router,
    dashboard_api.router,
    dashboard.router,
)


def build_http_app(runtime: GatewayRuntime) -> FastAPI:
    """The API over `runtime`; the caller starts and stops the runtime."""
    app = FastAPI(
        title="Quotagate admin and portal API",
        version="1",
        summary="Sub-accounts, keys, credits, balance, models, usage and upstream credentials.",
        openapi_url="/openapi.json",
        # The interactive pages load scripts from a CDN; the gateway makes no such requests.
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = Context(runtime)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


class _Server(uvicorn.Server):
    # The process that embeds the API owns SIGINT/SIGTERM; uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(app: FastAPI, host: str, port: int) -> None:
    """Serve `app` in the current event loop until cancelled; cancellation shuts down gracefully."""
    config = uvicorn.Config(app, host=host, port=port, lifespan="off", log_config=None, access_log=False)
    server = _Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise
