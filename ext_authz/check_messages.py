"""Check translation: Envoy's CheckRequest -> the core's CheckInput, the core's Outcome -> CheckResponse."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2

from ext_authz.names import PARTIAL_BODY_HEADER, REQUEST_ID_HEADER, REWRITE_HEADER
from ext_authz.structs import to_struct
from quotagate.gateway.denials import check_failed
from quotagate.gateway.outcome import Allow, CheckInput, Deny, Outcome

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# google.rpc.Code values of CheckResponse.status
_OK = 0
_PERMISSION_DENIED = 7


def check_input(request: external_auth_pb2.CheckRequest) -> CheckInput:
    http = request.attributes.request.http
    headers = dict(http.headers)  # Envoy sends names lower case, repeated values joined with ","
    return CheckInput(
        method=http.method,
        path=http.path,
        headers=headers,
        body=http.raw_body or http.body.encode(),  # raw_body with pack_as_bytes; body otherwise
        client_ip=request.attributes.source.address.socket_address.address or None,
        front_door="envoy",
        body_truncated=headers.get(PARTIAL_BODY_HEADER) == "true",
    )


def check_response(outcome: Outcome) -> external_auth_pb2.CheckResponse:
    if isinstance(outcome, Allow):
        return _allowed(outcome)
    return _denied(outcome)


def failure_response(request: external_auth_pb2.CheckRequest) -> external_auth_pb2.CheckResponse:
    """The answer when Check itself failed: authorization fails closed, in the provider's error shape."""
    http = request.attributes.request.http
    return _denied(check_failed(http.path, http.headers.get("x-request-id", "")))


def _allowed(allow: Allow) -> external_auth_pb2.CheckResponse:
    response = external_auth_pb2.CheckResponse()
    response.status.code = _OK
    ok = response.ok_response
    _add_headers(ok.headers, allow.set_headers)
    ok.headers_to_remove.extend(allow.remove_headers)
    if allow.ticket.needs_body_rewrite:
        _add_headers(ok.headers, ((REWRITE_HEADER, "1"),))
    else:  # a client cannot make Envoy run the rewrite filter by sending the header itself
        ok.headers_to_remove.append(REWRITE_HEADER)
    _add_headers(ok.response_headers_to_add, (*allow.response_headers, (REQUEST_ID_HEADER, allow.ticket.request_id)))
    to_struct(allow.ticket.to_metadata(), response.dynamic_metadata)
    return response


def _denied(denial: Deny) -> external_auth_pb2.CheckResponse:
    response = external_auth_pb2.CheckResponse()
    response.status.code = _PERMISSION_DENIED
    denied = response.denied_response
    denied.status.code = denial.status  # an open enum: any HTTP status
    denied.body = denial.body.decode()
    _add_headers(denied.headers, (*denial.headers, (REQUEST_ID_HEADER, denial.request_id)))
    # For the access log: why Envoy answered locally.
    to_struct({"request_id": denial.request_id, "deny_reason": denial.reason}, response.dynamic_metadata)
    return response


def _add_headers(into: Any, headers: Iterable[tuple[str, str]]) -> None:
    """Append to a repeated HeaderValueOption field, each header overwriting what the request had."""
    for key, value in headers:
        option = into.add()
        option.header.key = key
        option.header.value = value
        option.append_action = _OVERWRITE
