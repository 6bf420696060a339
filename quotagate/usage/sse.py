"""Incremental Server-Sent Events framing: bytes in, complete events out.

Follows the WHATWG event-stream rules (CRLF/CR/LF line ends, ``:`` comments, multi-line data, a
leading BOM) with two metering-driven departures:

* the event still open at end of stream is flushed by :meth:`SseDecoder.finish`, because proxies and
  servers sometimes drop the final blank line and the usage is in that last event;
* an event whose data outgrows ``max_event_bytes`` is never buffered whole: it is dropped, counted in
  :attr:`SseDecoder.dropped`, and emitted once with ``truncated=True`` carrying only the tail of its
  data, where usage figures usually sit (e.g. ``response.completed`` after a huge ``output``).

Lines are split on bytes and decoded per event, so a chunk boundary inside a UTF-8 sequence is harmless
(CR and LF never occur inside a multi-byte sequence).
"""

from __future__ import annotations

from typing import NamedTuple

MAX_EVENT_BYTES = 8 << 20
TAIL_BYTES = 64 << 10
_BOM = b"\xef\xbb\xbf"
_new_tuple = tuple.__new__


class SseEvent(NamedTuple):  # a tuple: several times cheaper to build than a frozen dataclass
    event: str  # the ``event:`` field; "" when the event has none (the spec's "message")
    data: str  # the data lines joined by "\n"
    truncated: bool = False  # data exceeded the limit: ``data`` is only its tail


class SseDecoder:
    """Feed raw response bytes in any chunking; get the same events as for the whole body."""

    __slots__ = (
        "_data",
        "_discard_keeps",
        "_discarding",
        "_event",
        "_finished",
        "_max",
        "_overflow",
        "_pending",
        "_size",
        "_skip_lf",
        "_started",
        "_tail_max",
        "dropped",
    )

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES, tail_bytes: int = TAIL_BYTES) -> None:
        self._max = max_event_bytes
        self._tail_max = tail_bytes
        self._pending = bytearray()  # the current, not yet terminated line
        self._skip_lf = False  # last chunk ended in CR: a leading LF is the rest of that CRLF
        self._started = False  # a BOM may only start the first line
        self._event = ""
        self._data: list[bytes] = []
        self._size = 0  # data bytes buffered for the current event
        self._overflow: bytearray | None = None  # tail of an oversized event's data
        self._discarding = False  # the pending line overflowed and is being skipped
        self._discard_keeps = False  # ... and it is a data line, whose tail is kept
        self._finished = False
        self.dropped = 0

    def feed(self, piece: bytes | bytearray | memoryview) -> list[SseEvent]:
        out: list[SseEvent] = []
        if self._finished or not piece:
            return out
        chunk = piece if type(piece) is bytes else bytes(piece)
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 10:  # the LF of a CRLF whose CR ended the previous chunk
                chunk = chunk[1:]
                if not chunk:
                    return out
        last = chunk[-1]
        if last == 10 or last == 13:
            self._skip_lf = last == 13
        elif 10 not in chunk and 13 not in chunk:  # int membership is a memchr, unlike b"\n" in
            self._extend_pending(chunk)
            return out
        # bytes.splitlines breaks at exactly the SSE line ends: CRLF, LF and CR.
        lines = chunk.splitlines()
        rest = b"" if self._skip_lf or last == 10 else lines.pop()
        if self._discarding:
            self._discard(lines[0])
            self._discarding = False
            lines[0] = b"-"  # the end of the skipped line: a no-op line (no colon, unknown field)
        elif self._pending:
            self._pending += lines[0]
            lines[0] = bytes(self._pending)
            self._pending.clear()
        if not self._started:
            self._started = True
            if lines[0].startswith(_BOM):
                lines[0] = lines[0][3:]
        data = self._data
        for line in lines:
            # The hot path, inlined: a data line or the blank line ending an event.
            if not line:
                if data and self._overflow is None:
                    raw = data[0] if len(data) == 1 else b"\n".join(data)
                    # tuple.__new__ skips the NamedTuple constructor's Python-level call.
                    out.append(_new_tuple(SseEvent, (self._event, raw.decode("utf-8", "replace"), False)))
                    data.clear()
                    self._event = ""
                    self._size = 0
                else:
                    self._dispatch(out)
            elif line[:5] == b"data:" and self._overflow is None:
                value = line[5:]
                if value[:1] == b" ":
                    value = value[1:]
                self._size += len(value) + 1
                if self._size > self._max:
                    self._start_overflow()
                    self._to_tail(b"\n" + value)
                else:
                    data.append(value)
            elif line[:6] == b"event:":
                value = line[6:]
                self._event = (value[1:] if value[:1] == b" " else value).decode("utf-8", "replace")
            else:
                self._line(line)
        if rest:
            self._extend_pending(rest)
        return out

    def finish(self) -> list[SseEvent]:
        """End of stream: flush the open line and event, even without the closing blank line."""
        out: list[SseEvent] = []
        if self._finished:
            return out
        self._finished = True
        if self._discarding:
            self._discarding = False
        elif self._pending:
            line = bytes(self._pending)
            self._pending.clear()
            if not self._started and line.startswith(_BOM):
                line = line[3:]
            if line:
                self._line(line)
        self._dispatch(out)
        return out

    def _line(self, line: bytes) -> None:
        """Any non-blank line: a field, a comment or a keep-alive."""
        colon = line.find(b":")
        if colon == 0:
            return  # comment or keep-alive
        if colon < 0:
            field, value = line, b""
        else:
            field, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if field == b"data":
            self._add_data(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        # id and retry steer reconnection, which metering never does.

    def _add_data(self, value: bytes) -> None:
        if self._overflow is not None:
            self._to_tail(b"\n" + value)
            return
        self._size += len(value) + 1
        if self._size > self._max:
            self._start_overflow()
            self._to_tail(b"\n" + value)
        else:
            self._data.append(value)

    def _extend_pending(self, piece: bytes) -> None:
        if self._discarding:
            self._discard(piece)
            return
        self._pending += piece
        if len(self._pending) + self._size > self._max:
            # The line makes the event too big: skip the rest of it, keeping the tail if it is data.
            # Only a comment is no part of the event; any other line drops the event with it.
            line = self._pending
            self._pending = bytearray()
            self._discarding = True
            self._discard_keeps = line.startswith(b"data:")
            if line[:1] != b":":
                self._start_overflow()
            if self._discard_keeps:
                self._to_tail(b"\n" + line[6:] if line[5:6] == b" " else b"\n" + line[5:])

    def _discard(self, piece: bytes) -> None:
        if self._discard_keeps:
            self._to_tail(piece)

    def _start_overflow(self) -> None:
        if self._overflow is None:
            self._overflow = bytearray(b"\n".join(self._data))
            self._data.clear()
            self._trim_tail()

    def _to_tail(self, piece: bytes) -> None:
        assert self._overflow is not None
        self._overflow += piece
        if len(self._overflow) > 2 * self._tail_max:
            self._trim_tail()

    def _trim_tail(self) -> None:
        assert self._overflow is not None
        if len(self._overflow) > self._tail_max:
            del self._overflow[: -self._tail_max]

    def _dispatch(self, out: list[SseEvent]) -> None:
        if self._overflow is not None:
            self.dropped += 1
            self._trim_tail()
            out.append(SseEvent(self._event, self._overflow.decode("utf-8", "replace"), truncated=True))
            self._overflow = None
        elif self._data:
            data = self._data
            raw = data[0] if len(data) == 1 else b"\n".join(data)
            out.append(SseEvent(self._event, raw.decode("utf-8", "replace")))
            data.clear()
        self._event = ""
        self._size = 0
