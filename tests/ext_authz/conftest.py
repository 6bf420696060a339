"""Constructed Envoy messages and a recording meter, for the translation tests (no Envoy, no store)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from ext_authz.names import AUTHZ_NAMESPACE
from ext_authz.structs import to_struct
from quotagate.apis import Api, Provider
from quotagate.gateway.ticket import Ticket


def make_ticket(**changes: Any) -> Ticket:
    ticket = Ticket(
        request_id="req-0123456789",
        started_at=time.time(),
        org_id="org-1",
        project_id="proj-1",
        client_id="client-1",
        key_id="demo-key",
        provider=Provider.OPENAI,
        api=Api.OPENAI_CHAT,
        model="gpt-4o-mini",
        model_requested="gpt-4o-mini",
        stream=True,
        reservation_id="req-0123456789",
        reserved_tokens=4200,
        reserved_nanos=123_456_789,
        prompt_estimate=12,
        upstream="openai_local",
        tags={"tag": "demo"},
        remaining_requests=5,
    )
    return replace(ticket, **changes)


def check_request(
    *,
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
    raw_body: bytes = b'{"model": "gpt-4o-mini"}',
    body: str = "",
    source: str = "10.1.2.3",
) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = "POST"
    http.path = path
    http.headers.update(headers or {"authorization": "Bearer demo-key.secret", "x-request-id": "req-0123456789"})
    if raw_body:
        http.raw_body = raw_body
    if body:
        http.body = body
    request.attributes.source.address.socket_address.address = source
    return request


def processing_request(kind: str, *, ticket: Ticket | None = None, observe: bool = True) -> pb.ProcessingRequest:
    """A ProcessingRequest of `kind` (response_headers, response_body, request_body, ...) carrying the ticket."""
    request = pb.ProcessingRequest(observability_mode=observe)
    getattr(request, kind).SetInParent()
    if ticket is not None:
        to_struct(ticket.to_metadata(), request.metadata_context.filter_metadata[AUTHZ_NAMESPACE])
    return request


def response_headers(
    status: int, content_type: str, *, ticket: Ticket | None, end: bool = False
) -> pb.ProcessingRequest:
    request = processing_request("response_headers", ticket=ticket)
    for key, value in ((":status", str(status)), ("content-type", content_type)):
        header = request.response_headers.headers.headers.add()
        header.key = key
        header.raw_value = value.encode()
    request.response_headers.end_of_stream = end
    return request


def response_body(data: bytes, *, ticket: Ticket | None, end: bool = False) -> pb.ProcessingRequest:
    request = processing_request("response_body", ticket=ticket)
    request.response_body.body = data
    request.response_body.end_of_stream = end
    return request


@dataclass
class RecordingMeter:
    ticket: Ticket
    headers: list[tuple[int, str | None]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    finishes: list[str | None] = field(default_factory=list)
    fail_on_chunk: bool = False

    def response_headers(self, status: int, content_type: str | None) -> None:
        self.headers.append((status, content_type))

    def chunk(self, data: bytes) -> None:
        if self.fail_on_chunk:
            raise RuntimeError("meter bug")
        self.chunks.append(data)

    async def finish(self, *, error: str | None = None) -> object:
        self.finishes.append(error)
        return None


@dataclass
class Meters:
    """The OpenMeter of a test: remembers every meter it opened."""

    opened: list[RecordingMeter] = field(default_factory=list)
    fail_on_chunk: bool = False

    def __call__(self, ticket: Ticket) -> RecordingMeter:
        meter = RecordingMeter(ticket, fail_on_chunk=self.fail_on_chunk)
        self.opened.append(meter)
        return meter


@pytest.fixture
def meters() -> Meters:
    return Meters()
