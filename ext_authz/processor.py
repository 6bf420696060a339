"""One ext_proc stream's logic: the request-body rewrite, and metering of the response as it passes.

The gRPC stream itself is owned by `ext_proc.py`; this class sees one ProcessingRequest at a time and
says what to answer (None: nothing, as for an observability-mode filter, whose answers Envoy ignores).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from ext_authz.http_contract import TICKET
from ext_authz.names import AUTHZ_NAMESPACE
from ext_authz.structs import from_struct
from quotagate.gateway.rewrite import rewrite_body
from quotagate.gateway.ticket import Ticket

log = logging.getLogger(__name__)


class StreamMeter(Protocol):
    """The core's Meter, as this front door uses it."""

    def response_headers(self, status: int, content_type: str | None) -> None: ...

    def chunk(self, data: bytes) -> None: ...

    async def finish(self, *, error: str | None = None) -> object: ...


OpenMeter = Callable[[Ticket], StreamMeter]


class StreamProcessor:
    def __init__(self, open_meter: OpenMeter) -> None:
        self._open_meter = open_meter
        self._ticket: Ticket | None = None
        self._ticket_read = False
        self.meter: StreamMeter | None = None
        self.response_ended = False  # the response's end_of_stream was seen: the meter can finish
        self.done = False  # nothing more will come that needs this stream: the server may close it

    def handle(self, request: Any) -> pb.ProcessingResponse | None:
        kind = request.WhichOneof("request")
        try:
            if kind == "response_body":
                self._on_response_body(request)
            elif kind == "response_headers":
                self._on_response_headers(request)
            elif kind == "response_trailers":
                self.response_ended = self.done = True
            elif kind == "request_body" and not request.observability_mode:
                self.done = True  # the rewrite filter sends the buffered body and nothing else
                return self._on_request_body(request)
        except Exception:  # never break the stream: pass the message through unchanged
            log.exception("ext_proc: handling %s failed", kind)
        if request.observability_mode or kind is None:
            return None  # Envoy does not wait for (and ignores) answers in observability mode
        return _unchanged(kind)

    # -- request side (the rewrite filter: BUFFERED request body)
    def _on_request_body(self, request: Any) -> pb.ProcessingResponse:
        response = pb.ProcessingResponse()
        response.request_body.SetInParent()  # an answer of the right kind even when nothing changes
        ticket = self._ticket_of(request)
        new_body = rewrite_body(ticket, request.request_body.body) if ticket else None
        if new_body is not None:
            # Envoy drops the old content-length and frames the new body itself (envoy_config/filters.py).
            response.request_body.response.body_mutation.body = new_body
        return response

    # -- response side (the metering filter: response headers, then STREAMED body chunks)
    def _on_response_headers(self, request: Any) -> None:
        meter = self._meter_for(request)
        if meter is None:
            return
        status, content_type = 0, None
        for header in request.response_headers.headers.headers:
            if header.key == ":status":
                status = int(_header_value(header) or 0)
            elif header.key == "content-type":
                content_type = _header_value(header)
        meter.response_headers(status, content_type)
        if request.response_headers.end_of_stream:
            self.response_ended = self.done = True

    def _on_response_body(self, request: Any) -> None:
        meter = self._meter_for(request)
        if meter is None:
            return
        body = request.response_body
        meter.chunk(body.body)
        if body.end_of_stream:
            self.response_ended = self.done = True

    def _meter_for(self, request: Any) -> StreamMeter | None:
        if self.meter is None:
            ticket = self._ticket_of(request)
            if ticket is not None:
                self.meter = self._open_meter(ticket)
        return self.meter

    def _ticket_of(self, request: Any) -> Ticket | None:
        """The ticket Check left in ext_authz's namespace; read once per stream (every message carries it)."""
        if not self._ticket_read:
            self._ticket_read = True
            fields = request.metadata_context.filter_metadata
            if AUTHZ_NAMESPACE in fields:
                try:
                    data = from_struct(fields[AUTHZ_NAMESPACE])
                    packed = data.get(TICKET)
                    if isinstance(packed, str):  # Check over HTTP: the ticket as one JSON string (http_contract.py)
                        data = orjson.loads(packed)
                    self._ticket = Ticket.from_metadata(data)
                except (KeyError, ValueError, TypeError) as exc:  # a denied request's metadata has no ticket
                    log.debug("no ticket in the stream's metadata: %s", exc)
        return self._ticket


def _header_value(header: Any) -> str:
    return header.raw_value.decode("latin-1") if header.raw_value else str(header.value)


def _unchanged(kind: str) -> pb.ProcessingResponse:
    """An empty answer of the message's kind: go on, change nothing."""
    response = pb.ProcessingResponse()
    getattr(response, kind).SetInParent()
    return response
