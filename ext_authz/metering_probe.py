"""How long a metering stream waits for this process's gRPC server, measured with a probe stream of its own.

grpc.aio takes new calls one at a time; past capacity, Envoy's metering streams queue in front of it, and one that
waits past Envoy's deferred_close_timeout is dropped unread (its response goes unmetered). With Check over HTTP the
Check does not queue there and would go on admitting. This probe opens a Process stream marked PROBE_HEADER every
PERIOD_S (the server answers it at once, ``ext_proc.py``) and reports its wait to the core's MeteringBacklog, which
refuses new requests while it is too long (``quotagate/metering/backlog.py``).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from ext_authz.names import PROBE_HEADER
from quotagate.metering.backlog import MeteringBacklog

log = logging.getLogger(__name__)
PERIOD_S = 0.05
_TIMEOUT_S = 5.0


def local_target(bound: str) -> str:
    """Where this process reaches its own server (a wildcard listen address is reached on loopback)."""
    if bound.startswith("unix:"):
        return bound
    host, _, port = bound.rpartition(":")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


async def probe_metering(target: str, backlog: MeteringBacklog, *, period_s: float = PERIOD_S) -> None:
    """Until cancelled."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.ExternalProcessorStub(channel)
        while True:
            backlog.probe_sent()
            try:
                call = stub.Process(iter(()), metadata=((PROBE_HEADER, "1"),), timeout=_TIMEOUT_S)
                async for _ in call:  # the server ends the stream as soon as it takes it
                    pass
            except grpc.aio.AioRpcError as exc:  # a timeout: the wait so far stands as the measure
                log.debug("metering probe failed: %s", exc.code())
            backlog.probe_answered()
            await asyncio.sleep(period_s)
