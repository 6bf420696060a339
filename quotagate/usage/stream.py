"""The part every SSE usage parser shares: framing, the never-raise guard, and the final result."""

from __future__ import annotations

import logging

import orjson

from quotagate.usage.model import Usage
from quotagate.usage.parser import ParseResult
from quotagate.usage.sse import SseDecoder, SseEvent
from quotagate.usage.state import ParseState

log = logging.getLogger(__name__)


class SseUsageParser:
    """Subclasses read usage from events in :meth:`_on_event` and report it from :meth:`_usage`."""

    __slots__ = ("_faulted", "_result", "_sse", "_state")

    def __init__(self) -> None:
        self._sse = SseDecoder()
        self._state = ParseState()
        self._result: ParseResult | None = None
        self._faulted = False

    def feed(self, chunk: bytes) -> None:
        if self._result is not None:
            return
        try:
            events = self._sse.feed(chunk)
        except Exception:  # metering must never break the stream it reads
            self._fault()
            return
        for event in events:
            try:
                self._on_event(event, False)
            except Exception:
                self._fault()

    def finish(self) -> ParseResult:
        if self._result is None:
            events: list[SseEvent] = []
            try:
                events = self._sse.finish()
            except Exception:
                self._fault()
            for event in events:
                try:
                    self._on_event(event, True)
                except Exception:
                    self._fault()
            self._state.dropped_events = self._sse.dropped
            usage: Usage | None = None
            try:
                usage = self._usage()
            except Exception:
                self._fault()
            self._result = self._state.result(usage)
        return self._result

    def _fault(self) -> None:
        """A bug of ours, not the provider's: flag the result, log the first one per response."""
        if not self._faulted:
            self._faulted = True
            log.exception("usage parser fault; the response's usage may be incomplete")
        self._state.malformed = True

    def _on_event(self, event: SseEvent, at_eof: bool) -> None:
        raise NotImplementedError

    def _usage(self) -> Usage | None:
        raise NotImplementedError

    def _load(self, data: str, at_eof: bool) -> dict[str, object] | None:
        """``data`` as a JSON object. An event flushed at end of stream may just be cut short,
        which is not the provider's fault, so only earlier failures count as malformed."""
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            if not at_eof:
                self._state.malformed = True
            return None
        if isinstance(value, dict):
            return value
        self._state.malformed = True
        return None
