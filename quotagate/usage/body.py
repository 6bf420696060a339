"""A whole JSON response body, read once it has all arrived.

Bodies are buffered up to a limit; past it (a large embeddings batch can be tens of MB) only the head
and the tail are kept, and usage and model are picked out of those: OpenAI and Anthropic put usage
at the end of the body and the model near one of its ends.
"""

from __future__ import annotations

import logging

import orjson

from quotagate.usage.bodies import BodyReader
from quotagate.usage.jsonscan import last_object, model_name
from quotagate.usage.model import Usage
from quotagate.usage.parser import ParseResult
from quotagate.usage.state import ParseState, UsageMapper

log = logging.getLogger(__name__)

JSON_BODY_LIMIT = 8 << 20
EDGE_BYTES = 64 << 10  # head and tail kept from a body over the limit


class JsonBodyParser:
    __slots__ = ("_body", "_head", "_limit", "_malformed_input", "_map", "_read", "_result", "_tail")

    def __init__(self, read: BodyReader, usage: UsageMapper, limit: int = JSON_BODY_LIMIT) -> None:
        self._read = read
        self._map = usage
        self._limit = limit
        self._body = bytearray()
        self._head = b""
        self._tail: bytearray | None = None  # set once the body outgrew the limit
        self._malformed_input = False
        self._result: ParseResult | None = None

    def feed(self, chunk: bytes) -> None:
        if self._result is not None:
            return
        try:
            if self._tail is None:
                self._body += chunk
                if len(self._body) > self._limit:
                    self._head = bytes(self._body[:EDGE_BYTES])
                    self._tail = self._body[-EDGE_BYTES:]
                    self._body = bytearray()
            else:
                self._tail += chunk
                if len(self._tail) > 2 * EDGE_BYTES:
                    del self._tail[:-EDGE_BYTES]
        except Exception:  # e.g. not bytes at all; metering must never break the response
            self._malformed_input = True

    def finish(self) -> ParseResult:
        if self._result is None:
            state = ParseState()
            state.malformed = self._malformed_input
            usage: Usage | None = None
            try:
                if self._tail is not None:
                    usage = self._salvage(self._head.decode("utf-8", "replace"), self._tail, state)
                elif self._body.strip():
                    usage = self._parse(state)
            except Exception:  # a bug of ours: flag and log it, never raise into the proxy
                log.exception("usage parser fault; the response's usage may be incomplete")
                state.malformed = True
            self._body = bytearray()
            self._tail = None
            self._result = state.result(usage)
        return self._result

    def _parse(self, state: ParseState) -> Usage | None:
        try:
            obj = orjson.loads(self._body)
        except orjson.JSONDecodeError:
            # Cut short or not JSON: the usage object may still be there whole.
            state.malformed = True
            usage = self._salvage("", self._body, state)
            state.complete = False
            return usage
        state.complete = True
        return self._read(obj, state)

    def _salvage(self, head: str, tail_bytes: bytearray, state: ParseState) -> Usage | None:
        tail = tail_bytes.decode("utf-8", "replace")
        state.set_model(model_name(head) or model_name(tail))
        found = last_object(tail, "usage")
        if found is None:
            return None
        usage = self._map(found, state)
        state.complete = usage is not None and tail.rstrip().endswith("}")
        return usage
