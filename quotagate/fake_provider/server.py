"""Serving the fake provider with uvicorn, over plain HTTP or TLS."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from quotagate.fake_provider.app import build_app
from quotagate.fake_provider.config import FakeConfig
from quotagate.fake_provider.connections import ConnectionLog, counting_protocol, recording_sni
from quotagate.fake_provider.stream import hide_cut_stream_log


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket (port 0 picks a free one): callers learn the port before the server runs."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(1024)  # listening now, so connections queue until uvicorn starts accepting
    sock.setblocking(False)
    return sock


def make_server(
    config: FakeConfig | None = None,
    *,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    log_level: str = "warning",
    app: Starlette | None = None,
) -> uvicorn.Server:
    """A uvicorn server for ``app`` (default: ``build_app(config)``), not yet started; give it a ``bind`` socket.

    A fake provider app's ``state.connections`` gets every accepted connection and TLS server name."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("TLS needs both a certificate and a key file")
    hide_cut_stream_log()
    app = app or build_app(config)
    log: ConnectionLog | None = getattr(app.state, "connections", None)
    uv_config = uvicorn.Config(
        app,
        http=counting_protocol(log) if log is not None else "auto",
        ssl_context_factory=recording_sni(log) if log is not None and tls_cert else None,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_level=log_level,
        access_log=False,  # per-request logging would dominate benchmark profiles
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=1,  # open streams may be long: do not hold shutdown for them
    )
    return uvicorn.Server(uv_config)


async def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    config: FakeConfig | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve until cancelled or signalled; ``sock`` (from ``bind``) overrides host and port."""
    server = make_server(config, tls_cert=tls_cert, tls_key=tls_key)
    await server.serve(sockets=[sock or bind(host, port)])


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    config: FakeConfig | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Blocking ``serve`` for the CLI; returns on SIGINT/SIGTERM."""
    asyncio.run(serve(host, port, tls_cert=tls_cert, tls_key=tls_key, config=config, sock=sock))
