"""The servers Envoy talks to: gRPC (Authorization/Check, ExternalProcessor/Process, grpc.health.v1) on one port,
and optionally Check over HTTP (check_http.py) on another."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from ext_authz.authorization import AuthorizationService, CheckFn
from ext_authz.check_http import CheckHttpServer
from ext_authz.ext_proc import ExternalProcessorService
from ext_authz.metering_probe import local_target, probe_metering
from ext_authz.processor import OpenMeter
from quotagate.errors import QuotagateError

if TYPE_CHECKING:
    from quotagate.runtime import GatewayRuntime

log = logging.getLogger(__name__)

# Room for a Check carrying the largest accepted body, plus its headers and attributes.
_MESSAGE_OVERHEAD = 1024 * 1024
DEFAULT_GRACE_S = 30.0
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GatewayServer:
    """One grpc.aio server; `start` binds (port 0 picks a free one), `stop` drains in-flight calls."""

    def __init__(self, check: CheckFn, open_meter: OpenMeter, *, max_body_bytes: int) -> None:
        limit = max_body_bytes + _MESSAGE_OVERHEAD
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
            ]
        )
        self._processor = ExternalProcessorService(open_meter)
        self._health = health_aio.HealthServicer()
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AuthorizationService(check), self._server)
        external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(self._processor, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)

    async def start(self, address: str) -> str:
        """Listen on `address` (host:port or unix:PATH); returns the bound address."""
        try:
            port = self._server.add_insecure_port(address)
        except RuntimeError:
            raise QuotagateError(f"cannot listen on {address}: the address is in use or not available") from None
        await self._server.start()
        await self._health.set("", _SERVING)
        bound = address if address.startswith("unix:") else f"{address.rsplit(':', 1)[0]}:{port}"
        log.info("gRPC (ext_authz, ext_proc, health) listening on %s", bound)
        return bound

    async def stop(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Refuse new calls, let in-flight ones finish for up to `grace_s`, then finish their meters."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
        await self._processor.drain()

    async def wait(self) -> None:
        await self._server.wait_for_termination()


async def serve(
    runtime: GatewayRuntime,
    grpc_addr: str,
    *,
    stop: asyncio.Event | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    on_ready: Callable[[str], None] | None = None,
    check_addr: str | None = None,
    on_check_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the started `runtime` on `grpc_addr` (and Check over HTTP on `check_addr`) until `stop` is set,
    then shut down gracefully.

    `on_check_ready` gets the bound Check address, then `on_ready` the bound gRPC address, once calls are accepted."""
    limit = runtime.settings.max_request_bytes
    server = GatewayServer(runtime.gatekeeper.check, runtime.meter, max_body_bytes=limit)
    check = None
    if check_addr is not None:
        check = CheckHttpServer(runtime.gatekeeper.check, max_body_bytes=limit)
        check_bound = await check.start(check_addr)
        if on_check_ready is not None:
            on_check_ready(check_bound)
    probe: asyncio.Task[None] | None = None
    try:
        bound = await server.start(grpc_addr)
        if check is not None:  # Check over HTTP does not queue with the metering streams: watch how long they wait
            probe = asyncio.create_task(probe_metering(local_target(bound), runtime.metering_backlog))
        if on_ready is not None:
            on_ready(bound)
        try:
            await (stop.wait() if stop is not None else server.wait())
        finally:
            if probe is not None:
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe
            log.info("shutting down: draining in-flight calls (up to %.0fs)", grace_s)
            if check is not None:
                await asyncio.gather(check.stop(grace_s), server.stop(grace_s))
            else:
                await server.stop(grace_s)
    finally:
        if check is not None and not check.draining:
            await check.stop(0)
