"""OpenAI Responses API streams: named events, usage only in the terminal ``response.completed``,
``response.incomplete`` or ``response.failed`` event (no ``[DONE]``).

Events are told apart by their ``event:`` name, so text deltas (the bulk of a stream) are read from the
raw data and only start, terminal, error and tool-call events are parsed as JSON.
"""

from __future__ import annotations

from quotagate.usage.error_text import describe_error
from quotagate.usage.jsonscan import key_pattern, last_object, string_values
from quotagate.usage.model import Usage
from quotagate.usage.openai_usage import responses_usage
from quotagate.usage.sse import SseEvent
from quotagate.usage.stream import SseUsageParser

TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_START = frozenset({"response.created", "response.in_progress", "response.queued"})
# Every ``*.delta`` event carries generated text (output, refusal, reasoning, tool arguments, code),
# except audio, whose delta is base64 sound and would inflate an estimate.
_NOT_TEXT = frozenset({"response.audio.delta"})
_DELTA = key_pattern("delta")
_ITEM_ADDED = "response.output_item.added"


class ResponsesStreamParser(SseUsageParser):
    __slots__ = ("_usage_seen",)

    def __init__(self) -> None:
        super().__init__()
        self._usage_seen: Usage | None = None

    def _on_event(self, event: SseEvent, at_eof: bool) -> None:
        name = event.event
        data = event.data
        if event.truncated:
            self._salvage(name, data)
            return
        if name.endswith(".delta"):
            if name not in _NOT_TEXT:
                for text in string_values(_DELTA, data):
                    self._state.add_text(text)
            return
        wanted = (
            name in TERMINAL
            or name == "error"
            or not name
            or (name in _START and self._state.served_model is None)
            or (name == _ITEM_ADDED and '"name"' in data)  # a tool call: its name is generated
        )
        if not wanted:
            return
        obj = self._load(data, at_eof)
        if obj is None:
            return
        kind = name or obj.get("type")
        if not isinstance(kind, str):
            self._state.malformed = True
            return
        self._handle(kind, obj)

    def _handle(self, kind: str, obj: dict[str, object]) -> None:
        state = self._state
        if kind.endswith(".delta"):  # only for events that came without a name
            delta = obj.get("delta")
            if isinstance(delta, str) and kind not in _NOT_TEXT:
                state.add_text(delta)
        elif kind in TERMINAL:
            response = obj.get("response")
            if not isinstance(response, dict):
                state.malformed = True
                return
            state.set_model(response.get("model"))
            usage = response.get("usage")
            if isinstance(usage, dict):
                self._usage_seen = responses_usage(usage, state) or self._usage_seen
            elif usage is not None:
                state.malformed = True
            if kind == "response.failed":
                error = response.get("error")
                state.set_error(describe_error(error) if isinstance(error, dict) else "response.failed")
            state.complete = True
        elif kind in _START:
            response = obj.get("response")
            if isinstance(response, dict):
                state.set_model(response.get("model"))
        elif kind == "error":
            state.set_error(describe_error(obj))
        elif kind == _ITEM_ADDED:
            item = obj.get("item")
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                state.add_text(item["name"])

    def _salvage(self, name: str, tail: str) -> None:
        # An event over the size limit: only its tail is left, where the response's usage sits.
        if name in TERMINAL:
            usage = last_object(tail, "usage")
            if usage is not None:
                self._usage_seen = responses_usage(usage, self._state) or self._usage_seen
            self._state.complete = True

    def _usage(self) -> Usage | None:
        return self._usage_seen
