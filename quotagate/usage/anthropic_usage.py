"""Anthropic usage objects to :class:`Usage`.

``input_tokens`` exclude cache reads and writes, so every class maps one to one. In a stream,
``message_start`` and each ``message_delta`` carry usage; a later figure replaces an earlier one field
by field (``message_delta`` output is cumulative and may restate input and cache counts, which can
change when server tools run), and a field a later object leaves out keeps its earlier value.
"""

from __future__ import annotations

from quotagate.usage.model import Usage
from quotagate.usage.state import ParseState
from quotagate.usage.tokens import sub_object, subset, token_count


class AnthropicFigures:
    __slots__ = ("_cache_read", "_cache_write", "_input", "_output", "_seen", "_thinking")

    def __init__(self) -> None:
        self._input: int | None = None
        self._cache_read: int | None = None
        self._cache_write: int | None = None
        self._output: int | None = None
        self._thinking: int | None = None
        self._seen = False

    def update(self, usage: object, state: ParseState) -> None:
        if not isinstance(usage, dict):
            if usage is not None:
                state.malformed = True
            return
        figures = (
            token_count(usage, "input_tokens", state),
            token_count(usage, "cache_read_input_tokens", state),
            _cache_write(usage, state),
            token_count(usage, "output_tokens", state),
            token_count(sub_object(usage, "output_tokens_details", state), "thinking_tokens", state),
        )
        if all(f is None for f in figures):
            state.malformed = True
            return
        self._seen = True
        new_input, new_read, new_write, new_output, new_thinking = figures
        if new_input is not None:
            self._input = new_input
        if new_read is not None:
            self._cache_read = new_read
        if new_write is not None:
            self._cache_write = new_write
        if new_output is not None:
            self._output = new_output
        if new_thinking is not None:
            self._thinking = new_thinking

    def usage(self, state: ParseState) -> Usage | None:
        if not self._seen:
            return None
        output = self._output or 0
        return Usage(
            input_tokens=self._input or 0,
            cached_input_tokens=self._cache_read or 0,
            cache_write_tokens=self._cache_write or 0,
            output_tokens=output,
            reasoning_tokens=subset(self._thinking or 0, output, state),
        )


def _cache_write(usage: dict[str, object], state: ParseState) -> int | None:
    total = token_count(usage, "cache_creation_input_tokens", state)
    if total is not None:
        return total
    # Only the per-TTL breakdown: its sum is the same figure.
    breakdown = sub_object(usage, "cache_creation", state)
    parts = [token_count(breakdown, key, state) for key in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")]
    known = [p for p in parts if p is not None]
    return sum(known) if known else None


def anthropic_usage(usage: dict[str, object], state: ParseState) -> Usage | None:
    """One usage object on its own (a JSON body, or salvaged from a stream)."""
    figures = AnthropicFigures()
    figures.update(usage, state)
    return figures.usage(state)
