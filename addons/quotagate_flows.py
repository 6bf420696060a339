"""Flows to the core and back: a CheckInput from a request, an Outcome applied to the flow.

Mirrors the Envoy path (ext_authz/check_messages.py and the routes of ext_authz/envoy_config/) so a
developer sees what production does: the same headers set and removed, the same body rewrite, the same
upstream and Host header, the same refusals byte for byte.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Protocol

import orjson
from mitmproxy import http

from ext_authz.names import REQUEST_ID_HEADER, REWRITE_HEADER, UPSTREAM_HEADER
from quotagate.gateway.denials import check_failed
from quotagate.gateway.outcome import Allow, CheckInput, Deny
from quotagate.gateway.rewrite import rewrite_body
from quotagate.snapshot import UpstreamView

FRONT_DOOR = "mitmproxy"
# Envoy's upstream routes strip these: its routing marks, and accept-encoding, because metering reads usage
# from the response as it passes and cannot read a compressed body. (ext_authz/names.py pulls in no gRPC.)
_STRIPPED_UPSTREAM = (UPSTREAM_HEADER, REWRITE_HEADER, "accept-encoding")
# Envoy's catch-all route answers an allowed request whose upstream it has no route to (envoy_config/routes.py).
UNROUTED = "The gateway has no route to this request's upstream: its Envoy configuration is out of date."
UPSTREAM_FAILED = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"


class ChunkSink(Protocol):
    def chunk(self, data: bytes) -> None: ...


def check_input(flow: http.HTTPFlow) -> CheckInput:
    request = flow.request
    # Lower-case names, repeated values joined with "," as Envoy sends them to Check.
    headers = {name.lower(): ",".join(request.headers.get_all(name)) for name in request.headers}
    peer = flow.client_conn.peername
    return CheckInput(
        method=request.method,
        path=request.path,
        headers=headers,
        body=request.raw_content or b"",
        client_ip=peer[0] if peer else None,
        front_door=FRONT_DOOR,
    )


def apply_allow(flow: http.HTTPFlow, allow: Allow, upstream: UpstreamView) -> None:
    """Swap the credential, rewrite the body, and send the request to the upstream the core chose."""
    request = flow.request
    for name in allow.remove_headers:
        request.headers.pop(name, None)
    for name, value in allow.set_headers:
        request.headers[name] = value  # overwrites every value the client sent
    for name in _STRIPPED_UPSTREAM:
        request.headers.pop(name, None)
    new_body = rewrite_body(allow.ticket, request.raw_content or b"")
    if new_body is not None:
        request.raw_content = new_body
        if "transfer-encoding" not in request.headers:  # a chunked body carries no length
            request.headers["content-length"] = str(len(new_body))
    # The snapshot, not the listener, decides where the request goes (Envoy routes on the same mark).
    request.scheme = "https" if upstream.tls else "http"
    request.host = upstream.host
    request.port = upstream.port
    request.host_header = upstream.ssl_name or upstream.host  # Envoy's host_rewrite_literal


def client_headers(allow: Allow) -> tuple[tuple[str, str], ...]:
    """What Envoy adds to an allowed request's response: x-ratelimit-* and the gateway's request id."""
    return (*allow.response_headers, (REQUEST_ID_HEADER, allow.ticket.request_id))


def set_headers(message: http.Message, headers: Iterable[tuple[str, str]]) -> None:
    for name, value in headers:
        message.headers[name] = value  # overwrites, as Envoy's OVERWRITE_IF_EXISTS_OR_ADD


def deny_response(denial: Deny) -> http.Response:
    headers = (*denial.headers, (REQUEST_ID_HEADER, denial.request_id))
    return http.Response.make(denial.status, denial.body, http.Headers([(k.encode(), v.encode()) for k, v in headers]))


def local_reply(status: int, message: str, code: str) -> http.Response:
    """An answer Envoy makes itself (no route, the upstream failed), in the JSON of its local reply mapper
    (ext_authz/envoy_config/local_replies.py): OpenAI's error shape, `code` Envoy's response code details."""
    body = {"error": {"code": code, "message": message, "param": None, "type": "api_error"}}
    return http.Response.make(status, orjson.dumps(body), {"content-type": "application/json"})


def unrouted() -> http.Response:
    return local_reply(404, UNROUTED, "direct_response")


def upstream_tls_failed(problem: str) -> http.Response:
    """The upstream's certificate does not verify for its name: Envoy's 503, with the reason said plainly."""
    return local_reply(
        503,
        f"{UPSTREAM_FAILED}: {problem}",
        "upstream_reset_before_response_started{remote_connection_failure|TLS_error}",
    )


def failure(flow: http.HTTPFlow) -> Deny:
    """The refusal when the gateway itself failed: fail closed, in the provider's error shape (as ext_authz)."""
    return check_failed(flow.request.path, flow.request.headers.get("x-request-id", ""))


def passthrough(meter: ChunkSink) -> Callable[[bytes], bytes]:
    """The response stream callable: every chunk goes on unchanged and at once, after feeding the meter.

    mitmproxy kills the connection when a stream callable raises, so this one never does."""

    def stream(data: bytes) -> bytes:
        with contextlib.suppress(Exception):
            meter.chunk(data)
        return data

    return stream
