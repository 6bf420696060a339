"""Anthropic Messages streams: ``message_start`` (model, input and cache usage), content block deltas,
``message_delta`` (cumulative usage, last figures win), ``message_stop``; ``ping`` and ``error`` events.

Events are told apart by their ``event:`` name: deltas are read from the raw data, and only the few
message-level events are parsed as JSON.
"""

from __future__ import annotations

from quotagate.usage.anthropic_usage import AnthropicFigures
from quotagate.usage.error_text import describe_error
from quotagate.usage.jsonscan import key_pattern, last_object, string_values
from quotagate.usage.model import Usage
from quotagate.usage.sse import SseEvent
from quotagate.usage.stream import SseUsageParser

# Text, thinking and tool input deltas; signature and citation deltas are not generated tokens.
_DELTA_TEXT = key_pattern("text", "thinking", "partial_json")
_PARSED = frozenset({"message_start", "message_delta", "message_stop", "error", "content_block_start", ""})
_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


class AnthropicStreamParser(SseUsageParser):
    __slots__ = ("_figures",)

    def __init__(self) -> None:
        super().__init__()
        self._figures = AnthropicFigures()

    def _on_event(self, event: SseEvent, at_eof: bool) -> None:
        name = event.event
        data = event.data
        if event.truncated:
            usage = last_object(data, "usage")
            if usage is not None:
                self._figures.update(usage, self._state)
            return
        if name == "content_block_delta":
            self._add_delta(data)
            return
        if name not in _PARSED:
            return  # ping, content_block_stop, and events newer than this parser
        if name == "content_block_start" and '"name"' not in data:
            return  # only tool blocks start with generated text (their name)
        obj = self._load(data, at_eof)
        if obj is None:
            return
        kind = name or obj.get("type")
        state = self._state
        if kind == "content_block_delta":
            self._add_delta(data)
        elif kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                state.set_model(message.get("model"))
                self._figures.update(message.get("usage"), state)
            else:
                state.malformed = True
        elif kind == "message_delta":
            self._figures.update(obj.get("usage"), state)
        elif kind == "message_stop":
            state.complete = True
        elif kind == "error":
            state.set_error(describe_error(obj))
        elif kind == "content_block_start":
            block = obj.get("content_block")
            if isinstance(block, dict) and block.get("type") in _TOOL_BLOCKS:
                tool = block.get("name")
                if isinstance(tool, str):
                    state.add_text(tool)

    def _add_delta(self, data: str) -> None:
        for text in string_values(_DELTA_TEXT, data):
            self._state.add_text(text)

    def _usage(self) -> Usage | None:
        return self._figures.usage(self._state)
