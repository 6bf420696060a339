"""ext_authz Check over plain HTTP/1.1 (Envoy's `http_service`): the gRPC Check's decision without its cost.

A grpc.aio round trip costs Envoy's Check ~0.7 ms on this kind of machine (grpc-core hands each call
between its own threads and the event loop); a keep-alive HTTP/1.1 exchange on the same uvloop, parsed by
httptools, costs ~0.1 ms (bench/results/latest.md). The decision is the core's, the same call as the gRPC
service makes; `http_contract.py` describes how the answer maps onto what Envoy does.

One request is one Check: `POST {PATH_PREFIX}{client path}` with the client's headers and (buffered) body.
Answers: 200 with the upstream headers to set, `x-envoy-auth-headers-to-remove` and the metadata headers;
or the refusal's status, headers and body. `GET /health` answers 200 while serving and 503 while draining.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, cast

import httptools
import orjson

from ext_authz.authorization import CheckFn
from ext_authz.http_contract import (
    CLIENT_IP_HEADER,
    DENIAL_WIRE_STATUS,
    ENVOY_ADDED_HEADERS,
    HEADERS_TO_REMOVE,
    HEALTH_PATH,
    HTTP_STATUS,
    OVERRIDDEN_STATUSES,
    PATH_PREFIX,
    TICKET,
    client_denial_header_allowed,
    upstream_header_allowed,
)
from ext_authz.names import PARTIAL_BODY_HEADER, REQUEST_ID_HEADER, REWRITE_HEADER
from quotagate.errors import QuotagateError
from quotagate.gateway.denials import check_failed
from quotagate.gateway.outcome import Allow, CheckInput, Deny, Outcome

log = logging.getLogger(__name__)

# Room for the largest accepted body (Envoy sends at most max_request_bytes + 1) plus slack.
_BODY_SLACK = 64 * 1024
_PREFIX = PATH_PREFIX.encode()
_HEALTHY = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 7\r\n\r\nSERVING"
_DRAINING = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\nNOT_SERVING"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many"}


class UnsafeHeader(ValueError):
    """A header value the core produced cannot be sent (CR, LF or NUL in it)."""


# -- translation (pure functions, unit-tested without sockets) -------------------------------------


def check_input(method: str, path: str, headers: dict[str, str], body: bytes) -> CheckInput:
    """The authorization request (path without PATH_PREFIX) as the core's CheckInput, as the gRPC Check builds it."""
    client_ip = headers.get(CLIENT_IP_HEADER) or None
    for name in ENVOY_ADDED_HEADERS:
        headers.pop(name, None)
    return CheckInput(
        method=method,
        path=path,
        headers=headers,
        body=body,
        client_ip=client_ip,
        front_door="envoy",
        body_truncated=headers.get(PARTIAL_BODY_HEADER) == "true",
    )


def answer(outcome: Outcome) -> bytes:
    """The HTTP answer to Envoy for an outcome."""
    if isinstance(outcome, Allow):
        return _allowed(outcome)
    return _denied(outcome)


def failure_answer(path: str, headers: dict[str, str]) -> bytes:
    """The answer when Check itself failed: authorization fails closed, in the provider's error shape."""
    return _denied(check_failed(path, headers.get("x-request-id", "")))


def _allowed(allow: Allow) -> bytes:
    ticket = allow.ticket
    lines = ["HTTP/1.1 200 OK"]
    for name, value in allow.set_headers:
        if not upstream_header_allowed(name):  # Envoy would drop it: refuse rather than pass without it
            raise UnsafeHeader(f"{name} is not an upstream header Envoy takes from Check over HTTP")
        lines.append(f"{name}: {_safe(value)}")
    remove = list(allow.remove_headers)
    if ticket.needs_body_rewrite:
        lines.append(f"{REWRITE_HEADER}: 1")
    else:  # a client cannot make Envoy run the rewrite filter by sending the header itself
        remove.append(REWRITE_HEADER)
    lines.append(f"{HEADERS_TO_REMOVE}: {','.join(remove)}")
    for name, value in (*allow.response_headers, (REQUEST_ID_HEADER, ticket.request_id)):
        lines.append(f"{name}: {_safe(value)}")
    lines += [
        f"request_id: {_safe(ticket.request_id)}",
        f"org_id: {_safe(ticket.org_id)}",
        f"key_id: {_safe(ticket.key_id)}",
        f"model: {_safe(ticket.model)}",
        f"{TICKET}: {_ticket_json(ticket.to_metadata())}",
        "content-length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


def _denied(denial: Deny) -> bytes:
    status = denial.status
    lines = []
    if status >= 500:  # Envoy takes a 5xx answer for a failure of Check itself: restored by a local reply mapper
        real = status if status in OVERRIDDEN_STATUSES else 503
        lines.append(f"HTTP/1.1 {DENIAL_WIRE_STATUS} Forbidden")
        lines.append(f"{HTTP_STATUS}: {real}")
    else:
        lines.append(f"HTTP/1.1 {status} {_REASONS.get(status, 'Refused')}")
    for name, value in (*denial.headers, (REQUEST_ID_HEADER, denial.request_id)):
        if not client_denial_header_allowed(name):
            raise UnsafeHeader(f"{name} is not a refusal header Envoy passes on from Check over HTTP")
        lines.append(f"{name}: {_safe(value)}")
    lines += [
        f"request_id: {_safe(denial.request_id)}",
        f"deny_reason: {_safe(denial.reason)}",
        f"content-length: {len(denial.body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + denial.body


def _safe(value: str) -> str:
    if "\r" in value or "\n" in value or "\0" in value:
        raise UnsafeHeader("a header value holds CR, LF or NUL")
    return value


def _ticket_json(data: dict[str, Any]) -> str:
    raw = orjson.dumps(data)
    if raw.isascii():
        return raw.decode()
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"))  # header values stay ASCII


# -- the server ------------------------------------------------------------------------------------


class _CheckConnection(asyncio.Protocol):
    """One keep-alive connection from Envoy; requests are answered in order."""

    def __init__(self, server: CheckHttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._previous: asyncio.Future[None] | None = None
        self._closing = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(_BAD)
            self.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("utf-8", "surrogateescape")
        known = self._headers.get(key)
        self._headers[key] = text if known is None else f"{known},{text}"

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._server.max_body_bytes:
            raise httptools.HttpParserError("body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode("latin-1")
        url = self._url
        keep_alive = self._parser.should_keep_alive()
        if url.startswith(_PREFIX):
            body = b"".join(self._body)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            previous, self._previous = self._previous, done
            task = asyncio.get_running_loop().create_task(
                self._check(
                    method,
                    url[len(_PREFIX) :].decode("utf-8", "surrogateescape"),
                    self._headers,
                    body,
                    keep_alive,
                    previous,
                    done,
                )
            )
            self._server.track(task)
        elif url == HEALTH_PATH.encode() and method == "GET":
            self._write(_DRAINING if self._server.draining else _HEALTHY)
        else:
            self._write(_NOT_FOUND)
        if not keep_alive and not url.startswith(_PREFIX):
            self.close()

    # the Check
    async def _check(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
        previous: asyncio.Future[None] | None,
        done: asyncio.Future[None],
    ) -> None:
        try:
            if self._server.draining:
                out = _UNAVAILABLE  # as the gRPC server refuses new calls while it drains: Envoy fails closed
            else:
                out = await self._server.decide(method, path, headers, body)
            if previous is not None and not previous.done():
                await previous
            self._write(out)
            if out is _UNAVAILABLE or not keep_alive:
                self.close()
        finally:
            done.set_result(None)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._closing:
            self._transport.write(data)

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()


class CheckHttpServer:
    """Check over HTTP on one address (host:port or unix:PATH); `stop` drains like the gRPC server."""

    def __init__(self, check: CheckFn, *, max_body_bytes: int) -> None:
        self._check = check
        self.max_body_bytes = max_body_bytes + _BODY_SLACK
        self.connections: set[_CheckConnection] = set()
        self.draining = False
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def decide(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        try:
            return answer(await self._check(check_input(method, path, headers, body)))
        except Exception:
            log.exception("Check failed; denying the request (authorization fails closed)")
            return failure_answer(path, headers)

    def track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, address: str) -> str:
        """Listen on `address`; returns the bound address (port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        try:
            if address.startswith("unix:"):
                path = "/" + address.removeprefix("unix:").lstrip("/")
                _remove_stale_socket(path)
                self._server = await loop.create_unix_server(lambda: _CheckConnection(self), path)
                bound = address
            else:
                host, _, port = address.rpartition(":")
                if not port.isdigit():
                    raise QuotagateError(f"invalid Check address {address!r}: use host:port or unix:/path")
                self._server = await loop.create_server(
                    lambda: _CheckConnection(self), host.strip("[]") or "127.0.0.1", int(port), reuse_address=True
                )
                bound = f"{host}:{self._server.sockets[0].getsockname()[1]}"
        except OSError:
            raise QuotagateError(f"cannot listen on {address}: the address is in use or not available") from None
        log.info("Check (HTTP) listening on %s", bound)
        return bound

    async def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING and refuse new Checks; let in-flight ones finish for up to `grace_s`; close."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for connection in list(self.connections):
            connection.close()


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a process that died; a live server's socket is refused by the bind."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            import socket

            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                Path(path).unlink(missing_ok=True)
            else:
                raise OSError(f"{path} is in use")
            finally:
                probe.close()
    except FileNotFoundError:
        pass
