"""The mutable side of a parse, shared by every parser and turned into a :class:`ParseResult`."""

from __future__ import annotations

from collections.abc import Callable

from quotagate.usage.model import Usage
from quotagate.usage.parser import ParseResult

TEXT_LIMIT = 1 << 20  # characters of generated text kept for an estimate; the count goes on
_BLOCK = 256  # small deltas are joined in blocks: a str object per 3-character delta costs ~50 bytes
_MODEL_LIMIT = 256
_ERROR_LIMIT = 512


class ParseState:
    """What a parser has learned so far, besides the usage figures it keeps in its own way."""

    __slots__ = (
        "_blocks",
        "_kept",
        "_pieces",
        "complete",
        "dropped_events",
        "error",
        "malformed",
        "served_model",
        "text_chars",
    )

    def __init__(self) -> None:
        self.served_model: str | None = None
        self.error: str | None = None
        self.complete = False
        self.malformed = False
        self.dropped_events = 0
        self.text_chars = 0
        self._pieces: list[str] = []
        self._blocks: list[str] = []
        self._kept = 0

    def add_text(self, text: str) -> None:
        n = len(text)
        if not n:
            return
        self.text_chars += n
        room = TEXT_LIMIT - self._kept
        if room <= 0:
            return
        if n > room:
            text, n = text[:room], room
        pieces = self._pieces
        pieces.append(text)
        self._kept += n
        if len(pieces) >= _BLOCK:
            self._blocks.append("".join(pieces))
            pieces.clear()

    def set_model(self, value: object) -> None:
        # The first model named wins: later events repeat it.
        if self.served_model is None and isinstance(value, str) and value:
            self.served_model = value[:_MODEL_LIMIT]

    def set_error(self, message: str) -> None:
        # The first error is the cause; later ones are usually its consequences.
        if self.error is None:
            self.error = message[:_ERROR_LIMIT]

    def result(self, usage: Usage | None) -> ParseResult:
        return ParseResult(
            usage=usage,
            served_model=self.served_model,
            output_text="".join(self._blocks) + "".join(self._pieces),
            output_text_chars=self.text_chars,
            error=self.error,
            complete=self.complete,
            malformed=self.malformed,
            dropped_events=self.dropped_events,
        )


# Turns one provider usage object into normalised figures, flagging oddities on the state.
UsageMapper = Callable[[dict[str, object], ParseState], Usage | None]
