"""OpenAI chat completions and legacy completions streams (``data:`` chunks, then ``[DONE]``).

Usage comes only in a last chunk with ``"choices": []`` when the request set
``stream_options.include_usage``; every other chunk carries ``"usage": null`` or nothing. So a chunk
is parsed as JSON only when it can matter: the first ones (for the model), one holding a usage
object, or an error. Generated text is read from the raw chunk with a pattern instead.
"""

from __future__ import annotations

import re

from quotagate.usage.error_text import describe_error
from quotagate.usage.jsonscan import ObjectProbe, key_pattern, last_object, string_values
from quotagate.usage.model import Usage
from quotagate.usage.openai_usage import chat_usage
from quotagate.usage.sse import SseEvent
from quotagate.usage.state import UsageMapper
from quotagate.usage.stream import SseUsageParser

# Visible text, refusals, reasoning of OpenAI-compatible servers, tool names and arguments.
CHAT_TEXT = key_pattern("content", "refusal", "reasoning_content", "reasoning", "name", "arguments")
COMPLETIONS_TEXT = key_pattern("text")
_PROBES = 3  # chunks parsed in full while no model has been seen
_has_usage = ObjectProbe("usage")


class OpenAIStreamParser(SseUsageParser):
    __slots__ = ("_map", "_probes", "_text", "_usage_seen")

    def __init__(self, text: re.Pattern[str] = CHAT_TEXT, usage: UsageMapper = chat_usage) -> None:
        super().__init__()
        self._text = text
        self._map = usage
        self._probes = _PROBES
        self._usage_seen: Usage | None = None

    def _on_event(self, event: SseEvent, at_eof: bool) -> None:
        data = event.data
        state = self._state
        if event.truncated:
            found = last_object(data, "usage")
            if found is not None:
                self._usage_seen = self._map(found, state) or self._usage_seen
            return
        if data[:1] != "{":
            stripped = data.strip()
            if stripped == "[DONE]":
                state.complete = True
                return
            if stripped[:1] != "{":
                if stripped and not at_eof:
                    state.malformed = True
                return
        if (
            (self._probes and state.served_model is None)
            or event.event == "error"
            or '"error"' in data
            or _has_usage(data)
        ):
            self._parse(event, data, at_eof)
        # Generated text sits in the choices, after the id, model and other preamble.
        start = data.find('"choices"')
        for text in string_values(self._text, data, start if start > 0 else 0):
            state.add_text(text)

    def _parse(self, event: SseEvent, data: str, at_eof: bool) -> None:
        if self._probes:
            self._probes -= 1
        chunk = self._load(data, at_eof)
        if chunk is None:
            return
        state = self._state
        state.set_model(chunk.get("model"))
        if event.event == "error" or isinstance(chunk.get("error"), dict):
            state.set_error(describe_error(chunk))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            figures = self._map(usage, state)
            if figures is not None:
                self._usage_seen = figures  # cumulative when repeated: the last one wins
                if not chunk.get("choices"):
                    state.complete = True  # the include_usage chunk is the last before [DONE]
        elif usage is not None:
            state.malformed = True

    def _usage(self) -> Usage | None:
        return self._usage_seen
