"""The TCP connections the fake provider accepted and the TLS server name (SNI) each one asked for.

Tests read it (GET /_fake/connections) to prove what happened below HTTP: a refused request opened no
connection at all, and a proxy sent the SNI it was configured with.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from typing import Any

from uvicorn.config import HTTP_PROTOCOLS, Config
from uvicorn.importer import import_from_string


class ConnectionLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # the server's loop writes, a test thread reads
        self._accepted = 0
        self._server_names: list[str | None] = []

    def accepted(self) -> None:
        with self._lock:
            self._accepted += 1

    def client_hello(self, server_name: str | None) -> None:
        """One TLS handshake began; `server_name` is its SNI (None: the client sent none)."""
        with self._lock:
            self._server_names.append(server_name)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"accepted": self._accepted, "tls_server_names": list(self._server_names)}

    def clear(self) -> None:
        with self._lock:
            self._accepted = 0
            self._server_names.clear()


def counting_protocol(log: ConnectionLog) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol ("auto"), counting each accepted connection (the event loop builds one per accept,
    before any TLS handshake, so a connection that never sends a byte is counted too)."""
    base: type[asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS["auto"])

    class Counted(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            log.accepted()
            super().__init__(*args, **kwargs)

    return Counted


def recording_sni(log: ConnectionLog) -> Callable[[Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    """A uvicorn ssl_context_factory: the usual server context, noting the SNI of every ClientHello."""

    def factory(_config: Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        context = default()

        def note(_conn: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
            log.client_hello(server_name)

        context.sni_callback = note
        return context

    return factory
