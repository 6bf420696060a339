"""What every usage parser offers: bytes in as they arrive, one :class:`ParseResult` at the end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from quotagate.usage.model import Usage


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What a response said about its own cost.

    On an incomplete stream ``usage`` holds the last figures reported so far: Anthropic's input and
    cache counts from ``message_start`` are final, its output count is then only a lower bound. Charge
    such a stream by tokenizing ``output_text`` (scaled by ``output_text_chars / len(output_text)``
    when the kept text was capped).
    """

    usage: Usage | None  # None when the provider reported no usage
    served_model: str | None  # the model named in the response
    output_text: str  # generated text, thinking and tool-call arguments, capped (see state.TEXT_LIMIT)
    output_text_chars: int  # length of all generated text seen, including what the cap left out
    error: str | None  # an error body or in-stream error event, as "type (code): message"
    complete: bool  # terminal event seen (streams) or the whole body parsed (JSON)
    malformed: bool  # something the provider sent was unreadable, of the wrong type or absurd
    dropped_events: int = 0  # SSE events over the size limit, skipped (only their tail was read)


class UsageParser(Protocol):
    def feed(self, chunk: bytes) -> None:
        """Take the next piece of the response body; never raises, whatever the bytes."""

    def finish(self) -> ParseResult:
        """End of body (or of what arrived of it); idempotent, never raises."""
